"""The ``messenger`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
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
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at MESSENGER_LOG_LEVEL also for one-shot commands (token, users, db, probe)",
    )
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

    probe = commands.add_parser(
        "probe",
        help="exit 0 if a health endpoint answers 200 (the image's HEALTHCHECK)",
        description="GET the URL and exit 0 on HTTP 200, else 1. Default: /healthz on "
        "MESSENGER_INTERNAL_PORT if set, else on MESSENGER_API_PORT, on 127.0.0.1.",
    )
    probe.add_argument("url", nargs="?", help="the URL to ask (default: this role's /healthz)")
    probe.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    return parser


def _serve_settings(args: argparse.Namespace) -> object:
    from messenger.settings import ServeSettings

    overrides = {
        key: value
        for key in ("bind_host", "mqtt_port", "ws_port", "api_port", "database_url", "redis_url")
        if (value := getattr(args, key, None)) is not None
    }
    return ServeSettings(**overrides, _secrets_dir=_secrets_dir())  # type: ignore[call-arg]  # pydantic-settings' init option


#: Production roles: they refuse the published development secret unless told it is development.
PROCESS_ROLES = ("api", "handler", "worker", "bridge")


def _secrets_dir() -> Path | None:
    """Where secret files are read from, by lower-case variable name (compose and Kubernetes
    secrets: /run/secrets/messenger_jwt_secret); variables win over files."""
    path = Path(os.environ.get("MESSENGER_SECRETS_DIR", "/run/secrets"))
    return path if path.is_dir() else None


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
    return by_command.get(args.command, settings.CommonSettings)(
        _secrets_dir=_secrets_dir()  # type: ignore[call-arg]  # pydantic-settings' init option
    )


def _refuse_implicit_development(command: str, settings: CommonSettings) -> None:
    """A production role never falls back to the development secret silently."""
    from messenger.constants import DEV_SECRET
    from messenger.settings import ApiSettings

    if command not in PROCESS_ROLES:
        return
    if settings.hs256_secret() == DEV_SECRET and "environment" not in settings.model_fields_set:
        raise ConfigurationError(
            f"messenger {command} would verify tokens with the published development secret: set "
            "MESSENGER_JWT_SECRET (or MESSENGER_JWT_PUBLIC_KEY), or MESSENGER_ENVIRONMENT=development "
            "to run it on the development secret on purpose"
        )
    if not isinstance(settings, ApiSettings) or settings.environment == "development":
        return
    if settings.gateway_secret is None:
        raise ConfigurationError(
            f"MESSENGER_ENVIRONMENT={settings.environment}: messenger api needs MESSENGER_GATEWAY_SECRET "
            "(the broker's plugin sends it with every CONNECT check)"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        return probe(args.url, args.timeout)
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
    level = os.environ.get("MESSENGER_LOG_LEVEL", settings.log_level).upper()
    if args.command not in ("serve", *PROCESS_ROLES) and not args.verbose:
        level = "WARNING"  # a command a person types prints its answer, not our logs
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    fold_amqtt_timeout_logs()

    try:
        _refuse_implicit_development(args.command, settings)
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
    if args.command in PROCESS_ROLES:
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
        if args.command == "db":
            print(f"database schema up to date ({engine.url.render_as_string(hide_password=True)})")
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
    from launch import process
    from messenger.settings import ApiSettings, HandlerSettings, ServiceClientSettings

    if command == "api":
        assert isinstance(settings, ApiSettings)  # noqa: S101 - narrowing for mypy
        return process.run_api(settings)
    if command in ("handler", "worker"):
        assert isinstance(settings, HandlerSettings)  # noqa: S101 - narrowing for mypy
        return process.run_handler(settings) if command == "handler" else process.run_worker(settings)
    assert isinstance(settings, ServiceClientSettings)  # noqa: S101 - narrowing for mypy
    return process.run_bridge(settings)


def probe(url: str | None, timeout: float) -> int:
    """``messenger probe``: 0 when ``url`` (default: this role's /healthz) answers 200.

    It reads the two port variables directly rather than the settings: a health check must not
    fail on configuration that only the process itself needs.
    """
    import httpx

    if url is None:
        port = os.environ.get("MESSENGER_INTERNAL_PORT") or os.environ.get("MESSENGER_API_PORT", "8080")
        url = f"http://127.0.0.1:{port}/healthz"
    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        print(f"messenger probe: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"messenger probe: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
