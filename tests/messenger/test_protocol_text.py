"""Text a client sends over MQTT (SPEC section 4): bad input is an ``error`` event, never a crash.

The rule (docs/protocol.md, "Text"): every text field is Unicode text, so a lone surrogate
(``"\\ud800"``, which has no UTF-8 form) is refused; control characters are refused too, except
line feed, carriage return and tab in a message body. Examples first, then Hypothesis: arbitrary
bytes, arbitrary JSON and command-shaped JSON with arbitrary Unicode never make the decoder raise
anything but :class:`InvalidCommand` with a known code, and whatever it accepts or answers can be
encoded as UTF-8 JSON (the handler publishes both).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messenger import protocol
from messenger.constants import MAX_PAYLOAD_BYTES
from messenger.exceptions import InvalidCommand
from messenger.protocol import SendMessage

#: Deterministic and quick enough for every run of the suite (CI included).
PROPERTY = settings(max_examples=200)  # the profile: tests/conftest.py

MESSAGE = {"type": "message", "id": "m1", "to": "bob", "body": "hi"}
#: Every control character the body refuses: C0 but tab, line feed and carriage return; DEL; C1.
BODY_CONTROLS = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if chr(c) not in "\t\n\r"]


def raw(obj: Any) -> bytes:
    """JSON as a client library writes it: non-ASCII escaped, lone surrogates included."""
    return json.dumps(obj).encode()


def rejected(payload: bytes) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as info:
        protocol.parse_command(payload)
    assert info.value.code in protocol.ERROR_CODES
    protocol.encode(protocol.error_event(info.value.code, info.value.detail, protocol.client_id_of(payload)))
    return info.value


# --- lone surrogates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        MESSAGE | {"body": "\ud800"},
        MESSAGE | {"body": "a\udfffb"},
        MESSAGE | {"body": "\udc00\ud800"},  # a pair in the wrong order is two lone surrogates
        MESSAGE | {"id": "\ud800"},
        MESSAGE | {"to": "\ud800"},
        {"type": "message", "id": "m1", "list": "\ud800", "body": "hi"},
        MESSAGE | {"tip": {"amount": 1, "currency": "\ud800"}},
        MESSAGE | {"tip": {"\ud800": 1}},
        MESSAGE | {"\ud800": 1},
        {"type": "read", "up_to": 1, "with": "\ud800"},
        {"type": "typing", "to": "b\ud800"},
        {"type": "sync", "\ud800": [{"\udbff": "\udfff"}]},
    ],
)
def test_a_lone_surrogate_anywhere_is_invalid_payload(obj: dict[str, Any]) -> None:
    error = rejected(raw(obj))
    assert error.code == "invalid_payload"
    assert "surrogate" in error.detail


def test_the_surrogate_error_names_the_field() -> None:
    assert rejected(raw(MESSAGE | {"body": "\ud800"})).detail.startswith("body:")
    assert rejected(raw(MESSAGE | {"tip": {"amount": 1, "currency": "\ud800"}})).detail.startswith(
        "tip.currency:"
    )


def test_a_lone_surrogate_id_is_not_echoed() -> None:
    """The id of a refused command is echoed only when it is a valid client id."""
    assert protocol.client_id_of(raw(MESSAGE | {"id": "\ud800"})) is None
    assert protocol.client_id_of(raw(MESSAGE | {"id": "a b"})) is None
    assert protocol.client_id_of(raw(MESSAGE | {"id": "x" * 65})) == "x" * 64  # cut, as before
    assert protocol.client_id_of(raw(MESSAGE | {"id": "x" * 63 + "\ud800"})) is None
    assert protocol.client_id_of(raw(MESSAGE | {"id": "ok-1", "body": "\ud800"})) == "ok-1"


def test_a_surrogate_pair_is_one_character() -> None:
    """``"\\ud83d\\udc4b"`` is the escaped form of 👋: accepted, decoded to one character."""
    command = protocol.parse_command(raw(MESSAGE | {"body": "\U0001f44b"}))
    assert b"\\ud83d\\udc4b" in raw(MESSAGE | {"body": "\U0001f44b"})
    assert isinstance(command, SendMessage)
    assert command.body == "\U0001f44b"


def test_invalid_utf8_bytes_are_invalid_json() -> None:
    for payload in (b'{"type":"message","id":"m1","to":"bob","body":"\xff"}', b"\xed\xa0\x80", b"\xc0\xaf"):
        assert rejected(payload).code == "invalid_json"


# --- control characters ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", BODY_CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_control_character_in_the_body_is_invalid_payload(char: str) -> None:
    error = rejected(raw(MESSAGE | {"body": f"a{char}b"}))
    assert error.code == "invalid_payload"
    assert error.detail.startswith("body:")
    assert f"U+{ord(char):04X}" in error.detail


def test_line_feed_carriage_return_and_tab_are_body_text() -> None:
    command = protocol.parse_command(raw(MESSAGE | {"body": "one\r\ntwo\tthree\nfour\r"}))
    assert isinstance(command, SendMessage)
    assert command.body == "one\r\ntwo\tthree\nfour\r"


@pytest.mark.parametrize("char", ["\x00", "\n", "\t", "\x7f", "\x85"], ids=repr)
def test_a_list_id_is_printable_ascii(char: str) -> None:
    error = rejected(raw({"type": "message", "id": "m1", "list": f"l{char}", "body": "hi"}))
    assert error.code == "invalid_payload"
    assert error.detail.startswith("list:")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\U0001f44b\U0001f3fd",  # astral plane, with a skin-tone modifier
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # ZWJ sequence (U+200D is a format character)
        "e\u0301\u0327",  # combining marks
        "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f",  # RTL, with a right-to-left mark
        "\ufeff\ufffe\uffff\U0010ffff",  # BOM and noncharacters are Unicode text
        "\u2028\u2029",  # line and paragraph separators
    ],
)
def test_unicode_text_is_kept_as_sent(body: str) -> None:
    for payload in (
        raw(MESSAGE | {"body": body}),
        json.dumps(MESSAGE | {"body": body}, ensure_ascii=False).encode(),
    ):
        command = protocol.parse_command(payload)
        assert isinstance(command, SendMessage)
        assert command.body == body


def test_text_problem() -> None:
    assert protocol.text_problem("a\nb\tc\r", multiline=True) is None
    assert protocol.text_problem("one line") is None
    assert protocol.text_problem("a\nb") == "control character U+000A at character 1 is not allowed"
    problem = protocol.text_problem("ab\x00", multiline=True)
    assert problem is not None
    assert "U+0000 at character 2" in problem
    assert "line feed, carriage return and tab" in problem
    assert protocol.text_problem("\ud800") == "a lone surrogate (U+D800) at character 0 is not Unicode text"


# --- properties ------------------------------------------------------------------------------------

#: Any code point, lone surrogates and control characters included, and often one of those.
ANY_CHAR = st.characters(codec=None, exclude_categories=()) | st.sampled_from(
    ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\x1b", "\x7f", "\x85", "\n", "\r", "\t", "\U0001f600"]
)
ANY_TEXT = st.lists(ANY_CHAR, max_size=40).map("".join)  # st.text() would merge the two alphabets
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=20,
)
COMMAND_KEYS = st.sampled_from(["type", "id", "to", "list", "body", "tip", "up_to", "with", "after"])
#: JSON shaped like commands, so that validation gets past the type and into every field.
COMMANDS = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(protocol.COMMAND_TYPES))},
    optional={
        "id": st.sampled_from(["m1", "x" * 64]) | ANY_TEXT,
        "to": st.sampled_from(["bob", "creator1"]) | ANY_TEXT,
        "body": ANY_TEXT,
        "tip": st.fixed_dictionaries(
            {"amount": st.integers(), "currency": st.sampled_from(["USD"]) | ANY_TEXT}
        )
        | JSON_VALUES,
        "list": ANY_TEXT,
        "up_to": st.integers(),
        "with": ANY_TEXT,
        "after": st.integers() | st.none(),
    },
).flatmap(
    lambda command: st.dictionaries(COMMAND_KEYS | ANY_TEXT, JSON_VALUES, max_size=2).map(command.__or__)
)


def check_decoder(payload: bytes) -> None:
    """What the handler does with one payload: parse it, or answer the error event; either way
    nothing raises but InvalidCommand, and what would be published encodes."""
    client_id = protocol.client_id_of(payload)
    assert client_id is None or protocol.text_problem(client_id) is None
    try:
        command = protocol.parse_command(payload)
    except InvalidCommand as exc:
        assert exc.code in protocol.ERROR_CODES
        json.loads(protocol.encode(protocol.error_event(exc.code, exc.detail, client_id)))
        return
    if isinstance(command, SendMessage):
        assert protocol.text_problem(command.body, multiline=True) is None
        assert len(command.body.encode()) <= MAX_PAYLOAD_BYTES
    json.loads(protocol.encode(command.model_dump(by_alias=True)))


@PROPERTY
@given(st.binary(max_size=200))
def test_any_bytes(payload: bytes) -> None:
    check_decoder(payload)


@PROPERTY
@given(JSON_VALUES, st.booleans())
def test_any_json(value: Any, ascii_only: bool) -> None:
    try:
        payload = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    except ValueError:  # a float json cannot write
        return
    check_decoder(payload)


@PROPERTY
@given(COMMANDS, st.booleans())
def test_any_command(value: dict[str, Any], ascii_only: bool) -> None:
    check_decoder(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@PROPERTY
@given(ANY_TEXT)
def test_a_body_is_accepted_exactly_when_it_is_text(body: str) -> None:
    payload = raw(MESSAGE | {"body": body})
    problem = protocol.text_problem(body, multiline=True)
    if problem is None:
        command = protocol.parse_command(payload)
        assert isinstance(command, SendMessage)
        assert command.body == body
    else:
        error = rejected(payload)
        assert error.code == "invalid_payload"
        if any("\ud800" <= char <= "\udfff" for char in body):  # the first surrogate is named
            assert error.detail.startswith("body: a lone surrogate")
        else:
            assert error.detail == f"body: {problem}"
