"""Runs the shared ACL vectors (``vectors.json``) through :mod:`acl`.

The same table drives the broker integrations' tests (the Mosquitto plugin, the gateway
endpoints), so a rule changed here without changing the table fails everywhere at once.

Row: ``user``, ``role``, ``action`` (``connect``: ``client_id`` is checked; ``will``: ``topic``
and ``retain`` are the Last Will; ``publish``/``subscribe``/``receive``: ``topic``/``retain``),
``allow`` (the expected answer) and a free-text ``note``. Rows that are not about connecting
carry a valid ``client_id`` so a harness can connect with it before trying the action.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from acl import topics
from acl.principal import Principal, Role, is_valid_user_id
from acl.topics import Action

VECTORS_PATH = Path(__file__).with_name("vectors.json")
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
ACTIONS = {"connect", "will", *(a.value for a in Action)}
KEYS = {"user", "role", "action", "topic", "retain", "client_id", "allow", "note"}


def decide(row: dict[str, Any]) -> bool:
    principal = Principal(row["user"], Role(row["role"]))
    action = row["action"]
    if action == "connect":
        return topics.client_id_allowed(principal, row["client_id"])
    if action == "will":
        return topics.can_set_will(principal, row["topic"], retain=row["retain"])
    return topics.check(principal, Action(action), row["topic"], retain=row["retain"])


def _row_id(row: dict[str, Any]) -> str:
    subject = row["client_id"] if row["action"] == "connect" else row["topic"]
    retained = " retain" if row["retain"] else ""
    verdict = "allow" if row["allow"] else "deny"
    return f"{row['user']} {row['action']} {subject!r}{retained} -> {verdict}"


@pytest.mark.parametrize("row", VECTORS, ids=[_row_id(r) for r in VECTORS])
def test_vector(row: dict[str, Any]) -> None:
    assert decide(row) is row["allow"], row["note"]


def test_vectors_are_well_formed() -> None:
    assert len(VECTORS) >= 80
    for row in VECTORS:
        assert set(row) == KEYS, row
        assert row["action"] in ACTIONS, row
        assert Role(row["role"])
        assert isinstance(row["retain"], bool) and isinstance(row["allow"], bool), row
        assert isinstance(row["topic"], str) and isinstance(row["client_id"], str), row
        assert is_valid_user_id(row["user"]), row
        if row["action"] != "connect":
            assert row["topic"], row
            assert topics.client_id_allowed(Principal(row["user"], Role(row["role"])), row["client_id"]), row
    ids = [_row_id(r) for r in VECTORS]
    assert len(ids) == len(set(ids)), "duplicate vectors"


def test_vectors_cover_every_rule() -> None:
    """Each action has allowed and denied rows, for users and for the service."""
    seen = Counter((row["action"], row["role"] == "service", row["allow"]) for row in VECTORS)
    for action in ACTIONS:
        for is_service in (False, True):
            assert seen[(action, is_service, False)], (action, is_service)
            # The service may never leave a Will: that cell has only denials.
            if not (action == "will" and is_service):
                assert seen[(action, is_service, True)], (action, is_service)
    roles = {row["role"] for row in VECTORS}
    assert roles == {r.value for r in Role}
    subjects = " ".join(row["topic"] for row in VECTORS)
    for needle in ("$SYS", "$share", "#", "+"):
        assert needle in subjects
    assert any(row["retain"] and row["allow"] for row in VECTORS)
    assert any(row["retain"] and not row["allow"] for row in VECTORS)
