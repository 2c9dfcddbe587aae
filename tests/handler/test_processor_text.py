"""CommandProcessor and text that is not acceptable: an ``error`` event for the command that
carries it, and the rest of its batch goes through (on each database)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from handler.processor import CommandProcessor, Inbound
from messenger.db import unit_of_work
from messenger.repositories import messages

MakeUser = Callable[..., str]
Sessions = sessionmaker[Session]


@pytest.fixture
def processor(sessions: Sessions) -> CommandProcessor:
    return CommandProcessor(sessions)


def command(sender: str, payload: bytes) -> Inbound:
    return Inbound(f"inbound/{sender}", payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"message","id":"\\ud800","to":"%(to)s","body":"x"}',
        b'{"type":"message","id":"m-1","to":"%(to)s","body":"\\udfff"}',
        b'{"type":"message","id":"m-1","to":"%(to)s","body":"a\\u0000b"}',
        b'{"type":"message","id":"m-1","to":"%(to)s","body":"a\\u001bb"}',
        b'{"type":"message","id":"m-1","to":"%(to)s","body":"\xed\xa0\x80"}',
        b'{"type":"message","id":"m-1","list":"\\u0000","body":"x"}',
        b'{"type":"message","id":"m-1","to":"%(to)s","body":"x","tip":{"\\ud800":1}}',
        b'{"type":"\\ud800","id":"\\ud800"}',
    ],
    ids=[
        "surrogate-id",
        "surrogate-body",
        "nul-body",
        "escape-body",
        "encoded-surrogate",
        "nul-list",
        "surrogate-key",
        "surrogate-type",
    ],
)
def test_bad_text_is_refused_alone(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser, payload: bytes
) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    good = [
        json.dumps({"type": "message", "id": f"good-{i}", "to": bob, "body": "fine"}).encode() for i in (1, 2)
    ]
    out = processor.process(
        [command(alice, good[0]), command(carol, payload % {b"to": bob.encode()}), command(alice, good[1])]
    )
    events = [(o.topic, json.loads(o.payload)) for o in out]
    (error,) = [e for t, e in events if t == f"users/{carol}/events"]
    assert error["type"] == "error"
    assert error["code"] in ("invalid_payload", "invalid_json", "unknown_type")
    assert error["client_id"] in (None, "m-1")
    assert [e["body"] for t, e in events if t == f"users/{bob}/messages"] == ["fine", "fine"]
    with unit_of_work(sessions) as session:
        assert messages.conversation(session, carol, bob) == []
        assert [m.body for m in messages.conversation(session, alice, bob)] == ["fine", "fine"]
