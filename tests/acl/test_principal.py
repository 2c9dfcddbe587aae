from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from acl.principal import USER_ID_PATTERN, Principal, Role, is_valid_user_id


@pytest.mark.parametrize(
    "user_id",
    ["alice", "a", "A", "0", "a.b", "a_b", "a-b", "..a", "a..", "...", "messenger-service", "x" * 64],
)
def test_valid_user_ids(user_id: str) -> None:
    assert is_valid_user_id(user_id)


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        ".",
        "..",
        "x" * 65,
        "a/b",
        "a+b",
        "+",
        "#",
        "a#",
        "$SYS",
        "a b",
        "a\x00",
        "a\n",
        "alice\n",  # a `$` anchored regex would accept this
        "élodie",
        "\uff41lice",  # fullwidth a
        "٣",  # arabic-indic digit: not [0-9]
        "a:b",
        "a@b",
    ],
)
def test_invalid_user_ids(user_id: str) -> None:
    assert not is_valid_user_id(user_id)


def test_non_strings_are_not_user_ids() -> None:
    assert not is_valid_user_id(None)  # type: ignore[arg-type]
    assert not is_valid_user_id(b"alice")  # type: ignore[arg-type]


def test_pattern_is_the_spec_charset() -> None:
    assert USER_ID_PATTERN == r"[A-Za-z0-9_.-]{1,64}"


def test_roles() -> None:
    assert [r.value for r in Role] == ["member", "creator", "service"]
    assert Role("creator") is Role.CREATOR


def test_principal_defaults_and_service_flag() -> None:
    alice = Principal("alice", Role.MEMBER)
    assert alice.jti is None and alice.issued_at is None and alice.expires_at is None
    assert not alice.is_service
    assert not Principal("carol", Role.CREATOR).is_service
    assert Principal("svc", Role.SERVICE).is_service


def test_principal_is_frozen_and_hashable() -> None:
    alice = Principal("alice", Role.MEMBER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        alice.user_id = "bob"  # type: ignore[misc]
    assert alice == Principal("alice", Role.MEMBER)
    assert len({alice, Principal("alice", Role.MEMBER)}) == 1


def test_principal_coerces_role_strings() -> None:
    assert Principal("alice", "creator").role is Role.CREATOR  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Principal("alice", "admin")  # type: ignore[arg-type]


@pytest.mark.parametrize("user_id", ["", "a/b", "+", "#", "..", "x" * 65])
def test_principal_refuses_invalid_user_ids(user_id: str) -> None:
    with pytest.raises(ValueError):
        Principal(user_id, Role.MEMBER)


def test_principal_requires_aware_datetimes() -> None:
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    Principal("alice", Role.MEMBER, issued_at=aware, expires_at=aware + timedelta(hours=1))
    Principal("alice", Role.MEMBER, issued_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    with pytest.raises(ValueError):
        Principal("alice", Role.MEMBER, issued_at=datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError):
        Principal("alice", Role.MEMBER, expires_at=datetime(2026, 1, 1))  # noqa: DTZ001
