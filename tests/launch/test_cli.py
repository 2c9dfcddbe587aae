"""Settings validation and the ``messenger`` command (token issue, users add, db upgrade)."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr, ValidationError
from sqlalchemy import inspect

from acl.exceptions import InvalidToken
from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier
from launch import cli
from messenger import __version__
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine, session_factory, unit_of_work
from messenger.repositories import users
from messenger.settings import CommonSettings, HandlerSettings, ServeSettings

OTHER_SECRET = "a-login-service-secret-of-at-least-32-bytes!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MESSENGER_* variable from the outside world changes what these tests see."""
    for name in list(os.environ):
        if name.startswith("MESSENGER_"):
            monkeypatch.delenv(name)


def dev_verifier() -> TokenVerifier:
    return TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))


# --- settings ---


def test_development_uses_the_dev_secret() -> None:
    settings = CommonSettings()
    assert settings.environment == "development"
    assert settings.hs256_secret() == DEV_SECRET
    assert settings.token_config() == TokenConfig(hs256_secret=DEV_SECRET)


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize("settings_class", [CommonSettings, HandlerSettings, ServeSettings])
def test_outside_development_the_dev_secret_is_refused(
    settings_class: type[CommonSettings], environment: str
) -> None:
    with pytest.raises(ValidationError, match="does not accept the development token secret"):
        settings_class(environment=environment)  # type: ignore[arg-type]


def test_production_refuses_the_dev_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="MESSENGER_JWT_SECRET"):
        CommonSettings()


def test_production_refuses_the_dev_secret_passed_explicitly() -> None:
    with pytest.raises(ValidationError):
        CommonSettings(environment="production", dev_secret=SecretStr(DEV_SECRET))


def test_production_refuses_the_dev_secret_as_the_login_service_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESSENGER_ENVIRONMENT", "production")
    monkeypatch.setenv("MESSENGER_JWT_SECRET", DEV_SECRET)
    with pytest.raises(ValidationError, match="published development secret"):
        CommonSettings()


def test_production_with_the_login_service_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESSENGER_ENVIRONMENT", "production")
    monkeypatch.setenv("MESSENGER_JWT_SECRET", OTHER_SECRET)
    settings = CommonSettings()
    assert settings.hs256_secret() == OTHER_SECRET
    assert DEV_SECRET not in repr(settings)
    assert OTHER_SECRET not in repr(settings)


def test_production_with_a_public_key_only() -> None:
    pem = _public_key_pem()
    settings = CommonSettings(environment="production", jwt_public_key=SecretStr(pem))
    assert settings.hs256_secret() is None
    assert settings.token_config().public_key_pem == pem
    with pytest.raises(ValueError, match="MESSENGER_SERVICE_TOKEN"):
        HandlerSettings(environment="production", jwt_public_key=SecretStr(pem)).resolve_service_token()


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(ValidationError):
        CommonSettings(environment="qa")  # type: ignore[arg-type]


def test_service_token_is_minted_as_service() -> None:
    settings = HandlerSettings(service_user="svc-test")
    principal = dev_verifier().verify(settings.resolve_service_token())
    assert (principal.user_id, principal.role) == ("svc-test", Role.SERVICE)


def _public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# --- messenger token issue ---


def test_token_issue_prints_a_token_the_verifier_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "issue", "alice", "--role", "creator", "--ttl", "2h"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    token = out.strip()
    assert token.count(".") == 2
    principal = dev_verifier().verify(token)
    assert principal.user_id == "alice"
    assert principal.role == Role.CREATOR
    assert principal.issued_at is not None
    assert principal.expires_at is not None
    assert principal.expires_at - principal.issued_at == timedelta(hours=2)
    assert principal.jti


def test_token_issue_defaults_to_member_for_one_hour(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "issue", "bob.b-1_x"]) == 0
    principal = dev_verifier().verify(capsys.readouterr().out.strip())
    assert (principal.user_id, principal.role) == ("bob.b-1_x", Role.MEMBER)
    assert principal.expires_at is not None and principal.issued_at is not None
    assert principal.expires_at - principal.issued_at == timedelta(hours=1)


def test_token_issue_uses_the_configured_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESSENGER_JWT_SECRET", OTHER_SECRET)
    monkeypatch.setenv("MESSENGER_JWT_AUDIENCE", "messenger")
    assert cli.main(["token", "issue", "carol"]) == 0
    token = capsys.readouterr().out.strip()
    with pytest.raises(InvalidToken):
        dev_verifier().verify(token)
    principal = TokenVerifier(TokenConfig(hs256_secret=OTHER_SECRET, audience="messenger")).verify(token)
    assert principal.user_id == "carol"


def test_token_issue_with_a_public_key_only_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESSENGER_JWT_PUBLIC_KEY", _public_key_pem())
    assert cli.main(["token", "issue", "carol"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "public key" in captured.err


def test_token_issue_in_production_with_the_dev_secret_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESSENGER_ENVIRONMENT", "production")
    assert cli.main(["token", "issue", "alice"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid configuration" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "issue", "alice", "--ttl", "0"], "not a duration"),
        (["token", "issue", "alice", "--ttl", "2y"], "not a duration"),
        (["token", "issue", "alice", "--ttl=-1h"], "not a duration"),
        (["token", "issue", "alice", "--ttl", "1.5h"], "not a duration"),
        (["token", "issue", "bob/x"], "not a user id"),
        (["token", "issue", "a" * 65], "not a user id"),
        (["token", "issue", "bøb"], "not a user id"),
        (["token", "issue", ".."], "not a user id"),
        (["token", "issue", "alice", "--role", "admin"], "invalid choice"),
        (["users", "add", "bob#1"], "not a user id"),
    ],
)
def test_bad_arguments_are_argparse_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.startswith("usage: messenger")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"messenger {__version__}"


# --- messenger users add / db upgrade --------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'sub' / 'cli.db'}"
    monkeypatch.setenv("MESSENGER_DATABASE_URL", url)
    return url


def _read_user(url: str, user_id: str) -> tuple[str, str | None] | None:
    engine = create_db_engine(url)
    try:
        with unit_of_work(session_factory(engine)) as session:
            user = users.get(session, user_id)
            return None if user is None else (user.role, user.display_name)
    finally:
        engine.dispose()


def test_users_add_creates_then_updates_the_user(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["users", "add", "carol", "--role", "creator", "--display-name", "Carol C."]) == 0
    assert capsys.readouterr().out.strip() == "user carol (creator)"
    assert _read_user(sqlite_url, "carol") == ("creator", "Carol C.")

    assert cli.main(["users", "add", "carol"]) == 0
    assert capsys.readouterr().out.strip() == "user carol (member)"
    assert _read_user(sqlite_url, "carol") == ("member", "Carol C.")
    assert _read_user(sqlite_url, "dave") is None


def test_db_upgrade_creates_the_schema(sqlite_url: str) -> None:
    assert cli.main(["db", "upgrade"]) == 0
    engine = create_db_engine(sqlite_url)
    try:
        assert {"users", "messages", "blocked_users", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
    # running it again is harmless
    assert cli.main(["db", "upgrade"]) == 0


# --- parse_duration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2H", timedelta(hours=2)),
        (" 7d ", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1 h", timedelta(hours=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert cli.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0", "0h", "h", "-1h", "1.5h", "1y", "1hh", "one hour", "1h30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        cli.parse_duration(text)


def test_user_id_argument() -> None:
    assert cli.user_id("alice.b-1_x") == "alice.b-1_x"
    with pytest.raises(argparse.ArgumentTypeError):
        cli.user_id("alice/x")
