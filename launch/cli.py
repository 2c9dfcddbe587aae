"""The ``messenger`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from acl.principal import Role, is_valid_user_id
from acl.tokens import issue_token
from broker.exceptions import BrokerStartError
from broker.server import fold_amqtt_timeout_logs
from messenger import __version__
from messenger.exceptions import ConfigurationError

if TYPE_CHECKING:
    from messenger.settings import CommonSettings

_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d``, ``2w``."""
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 1h, 7d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def user_id(text: str) -> str:
    if not is_valid_user_id(text):
        raise argparse.ArgumentTypeError(f"not a user id: {text!r} (letters, digits, _ . -, at most 64)")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="messenger", description="Messenger: chat over MQTT.")
    parser.add_argument("--version", action="version", version=f"messenger {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run broker, handler, presence bridge and REST API in one process"
    )
    serve.add_argument(
        "--host", dest="bind_host", help="address to listen on (MESSENGER_BIND_HOST, 127.0.0.1)"
    )
    serve.add_argument("--mqtt-port", type=int, help="MQTT/TCP port (MESSENGER_MQTT_PORT, 1884)")
    serve.add_argument("--ws-port", type=int, help="MQTT-over-WebSocket port (MESSENGER_WS_PORT, 8083)")
    serve.add_argument("--api-port", type=int, help="REST API port (MESSENGER_API_PORT, 8080)")
    serve.add_argument(
        "--database-url", help="SQLAlchemy URL (MESSENGER_DATABASE_URL, sqlite:///var/messenger.db)"
    )
    serve.add_argument("--redis-url", help="keep presence in Redis (MESSENGER_REDIS_URL; default in-process)")

    commands.add_parser(
        "api", help="run the REST API and the broker gateway endpoints (production; MESSENGER_* settings)"
    )
    commands.add_parser(
        "handler",
        help="run one handler on Mosquitto's shared subscription (production; MESSENGER_* settings)",
    )
    commands.add_parser(
        "worker",
        help="run mass-message fan-out and tip settlement only, beside handlers started with "
        "MESSENGER_BACKGROUND_WORK=false (production; MESSENGER_* settings)",
    )
    commands.add_parser(
        "bridge", help="mirror one broker node's presence into Redis (production; MESSENGER_* settings)"
    )

    token = commands.add_parser("token", help="development tokens").add_subparsers(
        dest="token_command", required=True
    )
    issue = token.add_parser("issue", help="print a token signed with the dev HS256 secret")
    issue.add_argument("user", type=user_id)
    issue.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    issue.add_argument("--ttl", type=parse_duration, default=timedelta(hours=1), help="lifetime (default 1h)")

    users_cmd = commands.add_parser("users", help="provision users").add_subparsers(
        dest="users_command", required=True
    )
    add = users_cmd.add_parser("add", help="create a user or change its role")
    add.add_argument("user", type=user_id)
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER.value)
    add.add_argument("--display-name")

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply the migrations (serve does this on start)")
    return parser


def _serve_settings(args: argparse.Namespace) -> object:
    from messenger.settings import ServeSettings

    overrides = {
        key: value
        for key in ("bind_host", "mqtt_port", "ws_port", "api_port", "database_url", "redis_url")
        if (value := getattr(args, key, None)) is not None
    }
    return ServeSettings(**overrides)


def _settings(args: argparse.Namespace) -> object:
    from messenger import settings

    if args.command == "serve":
        return _serve_settings(args)
    by_command: dict[str, type[settings.CommonSettings]] = {
        "api": settings.ApiSettings,
        "handler": settings.HandlerSettings,
        "worker": settings.HandlerSettings,
        "bridge": settings.ServiceClientSettings,
    }
    return by_command.get(args.command, settings.CommonSettings)()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from messenger.settings import CommonSettings

    try:
        settings = _settings(args)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            setting = f"MESSENGER_{where.upper()}: " if where else ""
            print(
                f"messenger: invalid configuration: {setting}{error['msg'].removeprefix('Value error, ')}",
                file=sys.stderr,
            )
        return 2
    assert isinstance(settings, CommonSettings)  # noqa: S101 - narrowing for mypy
    logging.basicConfig(
        level=os.environ.get("MESSENGER_LOG_LEVEL", settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    fold_amqtt_timeout_logs()

    try:
        return _run(args, settings)
    except (BrokerStartError, ConfigurationError) as exc:
        print(f"messenger: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: CommonSettings) -> int:
    if args.command == "serve":
        from launch.serve import run
        from messenger.settings import ServeSettings

        assert isinstance(settings, ServeSettings)  # noqa: S101 - narrowing for mypy
        asyncio.run(run(settings))
        return 0
    if args.command in ("api", "handler", "worker", "bridge"):
        return _run_process(args.command, settings)
    if args.command == "token":
        secret = settings.hs256_secret()
        if secret is None:
            print(
                "messenger: tokens are verified with a public key; the login service issues them",
                file=sys.stderr,
            )
            return 1
        try:
            token = issue_token(
                secret,
                args.user,
                role=Role(args.role),
                ttl=args.ttl,
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        print(token)
        return 0

    from messenger.db import create_db_engine, migrate, session_factory, unit_of_work

    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        if args.command == "users":
            from messenger.repositories import users

            with unit_of_work(session_factory(engine)) as session:
                user = users.upsert(session, args.user, args.role, args.display_name)
                print(f"user {user.id} ({user.role})")
        return 0
    finally:
        engine.dispose()


def _run_process(command: str, settings: CommonSettings) -> int:
    """One production process; each reads only its ``MESSENGER_*`` settings."""
    from messenger.settings import ApiSettings, HandlerSettings, ServiceClientSettings

    if command == "api":
        from api.main import run as run_api

        assert isinstance(settings, ApiSettings)  # noqa: S101 - narrowing for mypy
        return run_api(settings)
    if command in ("handler", "worker"):
        from handler.main import run as run_handler
        from handler.main import run_worker

        assert isinstance(settings, HandlerSettings)  # noqa: S101 - narrowing for mypy
        return run_handler(settings) if command == "handler" else run_worker(settings)
    from bridge.main import run as run_bridge

    assert isinstance(settings, ServiceClientSettings)  # noqa: S101 - narrowing for mypy
    return run_bridge(settings)


if __name__ == "__main__":
    raise SystemExit(main())
