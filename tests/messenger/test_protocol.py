"""The MQTT protocol v1 (SPEC section 4): command parsing, presence payloads, published payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from messenger import protocol
from messenger.constants import MAX_PAYLOAD_BYTES
from messenger.exceptions import InvalidCommand
from messenger.models import Message
from messenger.protocol import MarkRead, SendMessage, Sync, Tip, Typing


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def rejected(payload: bytes) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as info:
        protocol.parse_command(payload)
    assert info.value.code in protocol.ERROR_CODES
    assert info.value.detail
    return info.value


# --- every command type ---


def test_message_to_a_user() -> None:
    command = protocol.parse_command(
        raw({"type": "message", "id": "5f0c1e9e-2b1d", "to": "bob", "body": "hi"})
    )
    assert command == SendMessage(type="message", id="5f0c1e9e-2b1d", to="bob", body="hi")
    assert isinstance(command, SendMessage)
    assert (command.list, command.tip) == (None, None)


def test_message_with_a_tip() -> None:
    command = protocol.parse_command(
        raw(
            {
                "type": "message",
                "id": "t1",
                "to": "creator1",
                "body": "thanks!",
                "tip": {"amount": 500, "currency": "USD"},
            }
        )
    )
    assert isinstance(command, SendMessage)
    assert command.tip == Tip(amount=500, currency="USD")


def test_message_to_a_list() -> None:
    command = protocol.parse_command(
        raw({"type": "message", "id": "l1", "list": "list-42", "body": "new post"})
    )
    assert isinstance(command, SendMessage)
    assert (command.to, command.list, command.body) == (None, "list-42", "new post")


def test_message_with_explicit_nulls() -> None:
    command = protocol.parse_command(
        raw({"type": "message", "id": "n1", "to": "bob", "list": None, "tip": None, "body": ""})
    )
    assert isinstance(command, SendMessage)
    assert (command.to, command.list, command.tip, command.body) == ("bob", None, None, "")


def test_message_body_keeps_unicode() -> None:
    command = protocol.parse_command(
        json.dumps(
            {"type": "message", "id": "u", "to": "bob", "body": "héllo 👋"}, ensure_ascii=False
        ).encode()
    )
    assert isinstance(command, SendMessage)
    assert command.body == "héllo 👋"


def test_read() -> None:
    assert protocol.parse_command(raw({"type": "read", "up_to": 12345})) == MarkRead(type="read", up_to=12345)
    scoped = protocol.parse_command(raw({"type": "read", "up_to": 7, "with": "bob"}))
    assert isinstance(scoped, MarkRead)
    assert (scoped.up_to, scoped.peer) == (7, "bob")
    zero = protocol.parse_command(raw({"type": "read", "up_to": 0}))
    assert isinstance(zero, MarkRead)
    assert (zero.up_to, zero.peer) == (0, None)


def test_typing() -> None:
    assert protocol.parse_command(raw({"type": "typing", "to": "bob"})) == Typing(type="typing", to="bob")


def test_sync() -> None:
    assert protocol.parse_command(raw({"type": "sync"})) == Sync(type="sync", after=None)
    assert protocol.parse_command(raw({"type": "sync", "after": 12000})) == Sync(type="sync", after=12000)
    assert protocol.parse_command(raw({"type": "sync", "after": None})) == Sync(type="sync", after=None)
    assert protocol.parse_command(raw({"type": "sync", "id": "s-1"})) == Sync(type="sync", id="s-1")
    assert protocol.parse_command(raw({"type": "read", "up_to": 3, "id": "r-1"})).id == "r-1"  # type: ignore[union-attr]
    for bad in ("", "x" * 65, "with space", 7):
        with pytest.raises(InvalidCommand):
            protocol.parse_command(raw({"type": "sync", "id": bad}))


def test_commands_are_frozen() -> None:
    command = protocol.parse_command(raw({"type": "sync", "after": 1}))
    with pytest.raises(ValueError, match="frozen"):
        command.after = 2  # type: ignore[misc]


# --- size ---


def _padded(size: int) -> bytes:
    template = raw({"type": "message", "id": "big", "to": "bob", "body": ""})
    payload = raw({"type": "message", "id": "big", "to": "bob", "body": "x" * (size - len(template))})
    assert len(payload) == size
    return payload


def test_payload_at_the_limit_is_accepted() -> None:
    command = protocol.parse_command(_padded(MAX_PAYLOAD_BYTES))
    assert isinstance(command, SendMessage)
    assert MAX_PAYLOAD_BYTES == 64 * 1024
    assert len(command.body) > 65_000


def test_payload_one_byte_over_the_limit() -> None:
    error = rejected(_padded(MAX_PAYLOAD_BYTES + 1))
    assert error.code == "payload_too_large"
    assert str(MAX_PAYLOAD_BYTES) in error.detail


def test_oversized_garbage_is_too_large_before_anything_else() -> None:
    assert rejected(b"\xff" * (MAX_PAYLOAD_BYTES + 1)).code == "payload_too_large"


# --- invalid_json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\x00",
        b'{"type": "message", "body": "\xc3\x28"}',  # invalid UTF-8 inside a JSON string
        b"hello",
        b"",
        b"{",
        b"{'type': 'sync'}",
        b'{"type": "sync"} trailing',
    ],
    ids=["bad-utf8", "bad-utf8-in-string", "text", "empty", "truncated", "single-quotes", "trailing"],
)
def test_invalid_json(payload: bytes) -> None:
    assert rejected(payload).code == "invalid_json"


# --- invalid_payload -------------------------------------------------------------------------------

MESSAGE: dict[str, Any] = {"type": "message", "id": "m1", "to": "bob", "body": "hi"}


@pytest.mark.parametrize(
    "obj",
    [
        [MESSAGE],
        "sync",
        42,
        None,
        MESSAGE | {"extra": 1},
        {"type": "sync", "after": 1, "extra": True},
        {"type": "typing", "to": "bob", "body": "x"},
        {"type": "read", "up_to": 1, "peer_id": "bob"},
        MESSAGE | {"tip": {"amount": 5, "currency": "USD", "note": "x"}},
        MESSAGE | {"to": "bob/x"},
        MESSAGE | {"to": ""},
        MESSAGE | {"to": "a" * 65},
        MESSAGE | {"to": "bob smith"},
        MESSAGE | {"to": "bøb"},
        MESSAGE | {"to": "+"},
        MESSAGE | {"to": 7},
        {"type": "typing", "to": "#"},
        {"type": "read", "up_to": 1, "with": "x/y"},
        MESSAGE | {"list": "list-1"},
        {"type": "message", "id": "m1", "body": "hi"},
        {"type": "message", "id": "m1", "to": None, "list": None, "body": "hi"},
        MESSAGE | {"tip": {"amount": 0, "currency": "USD"}},
        MESSAGE | {"tip": {"amount": -5, "currency": "USD"}},
        MESSAGE | {"tip": {"amount": 5, "currency": "usd"}},
        MESSAGE | {"tip": {"amount": 5}},
        MESSAGE | {"id": ""},
        MESSAGE | {"id": "x" * 65},
        MESSAGE | {"id": "has space"},
        MESSAGE | {"id": 17},
        {"type": "message", "to": "bob", "body": "no id"},
        {"type": "message", "id": "m1", "to": "bob"},
        MESSAGE | {"body": None},
        MESSAGE | {"body": ["hi"]},
        {"type": "read"},
        {"type": "read", "up_to": -1},
        {"type": "read", "up_to": 1.5},
        {"type": "sync", "after": -1},
        {"type": "typing"},
    ],
)
def test_invalid_payload(obj: Any) -> None:
    assert rejected(raw(obj)).code == "invalid_payload"


def test_invalid_payload_detail_names_the_field() -> None:
    error = rejected(raw(MESSAGE | {"to": "bob/x"}))
    assert "to" in error.detail
    assert (
        "exactly one of 'to' or 'list'" in rejected(raw({"type": "message", "id": "m", "body": "b"})).detail
    )


# --- unknown_type ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "delete", "id": "m1"},
        {"type": "MESSAGE", "id": "m1", "to": "bob", "body": "hi"},
        {"id": "m1", "to": "bob", "body": "no type"},
        {},
        {"type": None},
        {"type": 1},
        {"type": ["message"]},
        {"type": {"message": True}},
    ],
    ids=["delete", "upper-case", "missing", "empty-object", "null", "number", "list", "object"],
)
def test_unknown_type(obj: Any) -> None:
    assert rejected(raw(obj)).code == "unknown_type"


# --- client_id_of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (raw({"type": "message", "id": "abc", "to": "bad/id", "body": "x"}), "abc"),
        (raw({"type": "nope", "id": "xyz"}), "xyz"),
        (raw({"id": "y" * 100}), "y" * 64),
        (raw({"id": 17}), None),
        (raw({"type": "sync"}), None),
        (raw(["abc"]), None),
        (b"not json", None),
        (b"\xff\xfe", None),
        (b"", None),
        (b'{"id": "cut-' + b"x" * MAX_PAYLOAD_BYTES + b'"}', None),
    ],
    ids=[
        "bad-recipient",
        "unknown-type",
        "truncated",
        "number",
        "none",
        "array",
        "text",
        "bad-utf8",
        "empty",
        "oversized",
    ],
)
def test_client_id_of(payload: bytes, expected: str | None) -> None:
    assert protocol.client_id_of(payload) == expected


def _oversized(head: bytes, tail: bytes = b'"}') -> bytes:
    """``head`` then a body string that takes the payload over the limit."""
    return head + b"x" * (MAX_PAYLOAD_BYTES + 1) + tail


_PAST_THE_SCAN = b"y" * protocol.CLIENT_ID_SCAN_BYTES


def _id_ending_at(end: int) -> bytes:
    """An oversized command whose ``"id":"c-123"`` member ends (closing quote included) at byte ``end``."""
    member = b'"id":"c-123"'
    head = b'{"pad":"'
    pad = b"y" * (end - len(head) - len(b'",') - len(member))
    payload = _oversized(head + pad + b'",' + member + b',"body":"')
    assert payload.index(member) + len(member) == end
    return payload


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (raw({"type": "message", "id": "c-123", "to": "bob", "body": "x" * MAX_PAYLOAD_BYTES}), "c-123"),
        (_oversized(b'{"id":"c-123","type":"message","to":"bob","body":"'), "c-123"),
        (_oversized(b'{\n  "type" : "message",\n  "id" : "c-123" ,\t"body": "'), "c-123"),
        (_oversized(b'{"type":"message","tip":{"amount":5,"currency":"USD"},"id":"t-1","body":"'), "t-1"),
        (_oversized(b'{"type":"message","id":"c\\u002d1","body":"'), "c-1"),
        (_oversized(b'{"type":"message","id":"' + b"z" * 64 + b'","body":"'), "z" * 64),
        (_oversized(b'{"type":"message","to":"bob","body":"'), None),
        (_oversized(b'{"type":"message","body":"', b'","id":"c-123"}'), None),
        (_oversized(b'{"type":"message","pad":"' + _PAST_THE_SCAN + b'","id":"c-123","body":"'), None),
        (_id_ending_at(protocol.CLIENT_ID_SCAN_BYTES), "c-123"),
        (_id_ending_at(protocol.CLIENT_ID_SCAN_BYTES + 1), None),
        (_oversized(b'{"type":"message","id":"' + b"z" * 65 + b'","body":"'), None),
        (_oversized(b'{"type":"message","id":"has space","body":"'), None),
        (_oversized(b'{"type":"message","id":"","body":"'), None),
        (_oversized(b'{"type":"message","id":"caf\xc3\xa9","body":"'), None),
        (_oversized(b'{"type":"message","id":"tab\\there","body":"'), None),
        (_oversized(b'{"type":"message","id":123,"body":"'), None),
        (_oversized(b'{"type":"message","tip":{"id":"nested"},"body":"'), None),
        (_oversized(b'{"x\\"id":"sneaky","body":"'), None),
        (_oversized(b'{"type":"message","body":"a \\",\\"id\\":\\"sneaky\\" '), None),
        (_oversized(b'["id","c-123","'), None),
        (_oversized(b'{"type":"message"}{"id":"c-123","body":"'), None),
        (_oversized(b'{"to":"id","id":"c-7","body":"'), "c-7"),
        (_oversized(b'"id":"c-123","'), None),
        (_oversized(b'{"type":"message" "id":"c-123","body":"'), None),
        (b"\xff" * (MAX_PAYLOAD_BYTES + 1), None),
        (b'{"type": "message", "id": "c-9", "to": "bob", "body": "unterminated', "c-9"),
    ],
    ids=[
        "dumped",
        "id-first",
        "whitespace",
        "after-a-tip",
        "escaped",
        "64-chars",
        "no-id",
        "id-after-the-body",
        "id-past-the-scan",
        "id-ending-at-the-scan-edge",
        "id-across-the-scan-edge",
        "65-chars",
        "space",
        "empty",
        "non-ascii",
        "control-escape",
        "number",
        "nested",
        "key-with-a-quote",
        "inside-a-string",
        "array",
        "after-the-object",
        "id-as-a-value-first",
        "not-an-object",
        "missing-comma",
        "garbage",
        "invalid-json-in-the-limit",
    ],
)
def test_client_id_of_a_command_too_large_or_broken_to_parse(payload: bytes, expected: str | None) -> None:
    """An oversized or broken command's top-level ``id`` is read from the first
    :data:`~messenger.protocol.CLIENT_ID_SCAN_BYTES` bytes only, and only when it is a valid client id."""
    assert protocol.client_id_of(payload) == expected


# --- parse_presence --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"online", True),
        (b"offline", False),
        (b" Online\n", True),
        (b"OFFLINE", False),
        (b'{"status": "online"}', True),
        (b'{"status": "offline", "device": "phone"}', False),
        (b'{"status": " ONLINE "}', True),
        (b"", False),
        (b"  \n", False),
        (b"away", None),
        (b"onlinee", None),
        (b'{"status": "away"}', None),
        (b'{"status": 1}', None),
        (b'{"status": ["online"]}', None),
        (b"{}", None),
        (b'{"state": "online"}', None),
        (b"{not json", None),
        (b'["online"]', None),
        (b"\xff\xfe", None),
        (b'"online"', None),
    ],
)
def test_parse_presence(payload: bytes, expected: bool | None) -> None:
    assert protocol.parse_presence(payload) is expected


# --- what the handler publishes ---


def _message(**overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "id": 12346,
        "sender_id": "alice",
        "recipient_id": "bob",
        "client_msg_id": "5f0c1e9e",
        "body": "hi",
        "sent_at": datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC),
        "read_at": None,
        "tip_amount": None,
        "tip_currency": None,
        "tip_status": None,
        "list_id": None,
        "blocked": False,
    }
    return Message(**(fields | overrides))


def test_message_payload_matches_the_spec() -> None:
    payload = protocol.message_payload(_message())
    assert payload == {
        "type": "message",
        "id": 12346,
        "client_id": "5f0c1e9e",
        "from": "alice",
        "to": "bob",
        "body": "hi",
        "sent_at": "2026-11-23T10:00:00.000000Z",
        "read_at": None,
        "tip": None,
        "list": None,
    }
    # and it survives the wire
    assert json.loads(protocol.encode(payload)) == payload


def test_message_payload_with_tip_list_and_read_at() -> None:
    payload = protocol.message_payload(
        _message(
            tip_amount=500,
            tip_currency="USD",
            tip_status="charged",
            list_id="list-1",
            sent_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            read_at=datetime(2026, 1, 2, 3, 4, 6, 123456, tzinfo=UTC),
        )
    )
    assert payload["tip"] == {"amount": 500, "currency": "USD", "status": "charged"}
    assert payload["list"] == "list-1"
    assert payload["sent_at"] == "2026-01-02T03:04:05.000006Z"
    assert payload["read_at"] == "2026-01-02T03:04:06.123456Z"


@pytest.mark.parametrize(
    "body",
    ["hi", 'quotes " and \\ and "id":0, "to":"\\u0000"', "\x00", "émoji 🎉 and \n newline", ""],
)
def test_copy_payloads_are_the_stored_copies_payloads(body: str) -> None:
    sent_at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    copies = [(7, "bob"), (123456789012, 'b"ob\x00é'), (8, "\x00")]
    built = protocol.copy_payloads("alice", '"id":0,', body, sent_at, "list-1", copies)
    assert [to for to, _ in built] == [to for _, to in copies]
    for (message_id, to), (_, payload) in zip(copies, built, strict=True):
        stored = _message(
            id=message_id,
            recipient_id=to,
            client_msg_id='"id":0,',
            body=body,
            sent_at=sent_at,
            list_id="list-1",
        )
        assert payload == protocol.encode(protocol.message_payload(stored))


def test_events() -> None:
    stored = _message()
    assert protocol.ack_event(stored, duplicate=True) == {
        "type": "ack",
        "client_id": "5f0c1e9e",
        "id": 12346,
        "status": "sent",
        "duplicate": True,
        "sent_at": "2026-11-23T10:00:00.000000Z",
    }
    assert protocol.error_event("invalid_json", "nope", "c1") == {
        "type": "error",
        "client_id": "c1",
        "code": "invalid_json",
        "detail": "nope",
    }
    assert protocol.error_event("invalid_json", "nope")["client_id"] is None
    assert protocol.read_event("bob", 12) == {"type": "read", "by": "bob", "up_to": 12}
    assert protocol.typing_event("alice") == {"type": "typing", "from": "alice"}
    nothing = {"type": "synced", "last_id": None, "more": False, "client_id": None}
    assert protocol.synced_event(None, False) == nothing
    assert protocol.synced_event(9, True, "s-1") == nothing | {"last_id": 9, "more": True, "client_id": "s-1"}


def test_encode_is_compact_utf8() -> None:
    assert protocol.encode({"body": "héllo", "n": 1}) == '{"body":"héllo","n":1}'.encode()
