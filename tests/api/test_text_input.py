"""Text a client sends, through the real pipeline on each database.

The rule (docs/api.md, "Text"; docs/protocol.md, "Text"): every text field a client sends is
Unicode text, so a lone surrogate (``"\\ud800"``) is refused (422), and so are control
characters, except line feed, carriage return and tab in a message body or a tip's message.
Bad text is a ``422 invalid_request`` naming the field, never a 5xx.

What is accepted is stored as sent: the body the recipient is delivered, the body stored, and
the body the REST API returns are the very same string, whether the message came over REST or
MQTT (the handler's CommandProcessor), on SQLite and MariaDB (utf8mb4), up to the byte limit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from api import errors
from handler.processor import CommandProcessor, Inbound
from messenger.actions import Outbound
from messenger.constants import MAX_PAYLOAD_BYTES
from messenger.db import unit_of_work
from messenger.models import Message, Tip
from tests.api.app import ADMIN_KEY, client_maker
from tests.api.testclient import TestClient
from tests.conftest import token

MakeUser = Callable[..., str]
Sessions = sessionmaker[Session]

#: Deterministic, and modest: every example is a few round trips to the database.
ROUND_TRIP = settings(max_examples=40)  # the profile: tests/conftest.py
ADMIN = {"X-Admin-Key": ADMIN_KEY}
EMOJI = "\U0001f600"  # four bytes in UTF-8, two UTF-16 units, one character


@dataclass
class Capture:
    """The API's publisher: keeps what a committed request published."""

    published: list[Outbound] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return True

    def publish(self, out: Sequence[Outbound]) -> None:
        self.published.extend(out)

    def take(self, topic: str) -> list[dict[str, Any]]:
        """Remove and return what went to ``topic``, decoded."""
        found = [json.loads(o.payload) for o in self.published if o.topic == topic]
        self.published = [o for o in self.published if o.topic != topic]
        return found


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def client(sessions: Sessions, capture: Capture) -> Iterator[TestClient]:
    with client_maker(sessions=sessions, publisher=capture) as make:
        yield make()


def auth(user: str, role: Role = Role.MEMBER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}"}


def json_headers(user: str) -> dict[str, str]:
    """For a body written by hand (as JSON text, escapes and all)."""
    return auth(user) | {"Content-Type": "application/json"}


def send_json(client: TestClient, method: str, url: str, obj: Any, headers: dict[str, str]) -> Any:
    """``obj`` as JSON with every non-ASCII character escaped, as many clients write it: a lone
    surrogate goes as ``\\udxxx`` (httpx's ``json=`` cannot encode one)."""
    return client.request(
        method, url, content=json.dumps(obj), headers=headers | {"Content-Type": "application/json"}
    )


def refused(response: Any, field: str) -> str:
    """The message of a 422 about ``field`` (the project's error shape)."""
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["code"] == "invalid_request"
    assert answer["detail"]
    (problem,) = [e for e in answer["errors"] if e["loc"][-1] == field]
    message: str = problem["msg"]
    return message


# --- refused text ----------------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_message_is_422(client: TestClient, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    for body in ('{"to":"%s","body":"\\ud800"}', '{"to":"%s","body":"a\\udc00"}'):
        response = client.post("/v1/messages", content=body % bob, headers=json_headers(alice))
        assert "surrogate" in refused(response, "body")


def test_a_lone_surrogate_in_a_tip_is_422(client: TestClient, make_user: MakeUser) -> None:
    member, creator = make_user("member"), make_user("creator", "creator")
    body = '{"to":"C","amount":500,"currency":"USD","body":"thanks \\ud83d"}'.replace('"C"', f'"{creator}"')
    assert "surrogate" in refused(client.post("/v1/tips", content=body, headers=json_headers(member)), "body")


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f"], ids=repr)
def test_a_control_character_in_a_message_or_tip_is_422(
    client: TestClient, make_user: MakeUser, char: str
) -> None:
    member, creator = make_user("member"), make_user("creator", "creator")
    response = client.post("/v1/messages", json={"to": creator, "body": f"a{char}b"}, headers=auth(member))
    assert f"U+{ord(char):04X}" in refused(response, "body")
    tip = {"to": creator, "amount": 500, "currency": "USD", "body": f"a{char}"}
    assert f"U+{ord(char):04X}" in refused(client.post("/v1/tips", json=tip, headers=auth(member)), "body")


@pytest.mark.parametrize("char", ["\x00", "\n", "\r", "\t", "\x7f", "\x85", "\ud800"], ids=repr)
def test_names_and_reasons_are_one_line_of_text(
    client: TestClient, make_user: MakeUser, make_uid: Callable[[str], str], char: str
) -> None:
    creator = make_user("creator", "creator")
    lists = send_json(client, "POST", "/v1/lists", {"name": f"fans{char}"}, auth(creator, Role.CREATOR))
    refused(lists, "name")
    user = make_uid("named")
    named = send_json(
        client, "PUT", f"/v1/admin/users/{user}", {"role": "member", "display_name": f"A{char}"}, ADMIN
    )
    refused(named, "display_name")
    revocation = send_json(
        client, "POST", "/v1/admin/revocations", {"user": creator, "reason": f"r{char}"}, ADMIN
    )
    refused(revocation, "reason")
    refused(send_json(client, "POST", "/v1/admin/revocations", {"jti": f"j{char}"}, ADMIN), "jti")


def test_a_validation_error_about_a_made_up_key_is_still_utf8() -> None:
    """The error answer names what was wrong; a name holding a lone surrogate is escaped."""
    app = FastAPI()
    errors.install(app)

    @app.get("/bad")
    def bad() -> None:
        raise RequestValidationError([{"loc": ("body", "k\ud800", 0), "msg": "m\udfff", "type": "x"}])

    with TestClient(app) as test_client:
        response = test_client.get("/bad")
    assert response.status_code == 422
    assert response.json()["errors"] == [{"loc": ["body", "k\\ud800", 0], "msg": "m\\udfff"}]


def test_nothing_refused_is_stored_or_delivered(
    client: TestClient, capture: Capture, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    response = client.post("/v1/messages", json={"to": bob, "body": "cut\x00here"}, headers=auth(alice))
    assert response.status_code == 422
    assert capture.take(f"users/{bob}/messages") == []
    with unit_of_work(sessions) as session:
        assert session.query(Message).filter_by(sender_id=alice).count() == 0


# --- limits count the same on both databases --------------------------------------------------------


def test_a_body_at_the_byte_limit_is_stored_whole(
    client: TestClient, capture: Capture, sessions: Sessions, make_user: MakeUser
) -> None:
    """64 KiB of UTF-8: 16,384 four-byte characters are accepted and kept; one byte more is 413."""
    alice, bob = make_user("alice"), make_user("bob")
    body = EMOJI * (MAX_PAYLOAD_BYTES // 4)
    assert len(body.encode()) == MAX_PAYLOAD_BYTES
    sent = client.post("/v1/messages", json={"to": bob, "body": body}, headers=auth(alice))
    assert sent.status_code == 201, sent.text
    assert same_everywhere(client, capture, sessions, alice, bob, sent.json()["id"]) == body
    over = client.post("/v1/messages", json={"to": bob, "body": body + "x"}, headers=auth(alice))
    assert (over.status_code, over.json()["code"]) == (413, "payload_too_large")


def test_names_count_characters(
    client: TestClient, make_user: MakeUser, make_uid: Callable[[str], str]
) -> None:
    """128 characters, whatever their UTF-8 size: MariaDB's VARCHAR(128) in utf8mb4 holds them."""
    creator = make_user("creator", "creator")
    name = EMOJI * 127 + "\u05d0"
    made = client.post("/v1/lists", json={"name": name}, headers=auth(creator, Role.CREATOR))
    assert made.status_code == 201, made.text
    got = client.get(f"/v1/lists/{made.json()['id']}", headers=auth(creator, Role.CREATOR))
    assert got.json()["name"] == name
    assert (
        client.post("/v1/lists", json={"name": name + "x"}, headers=auth(creator, Role.CREATOR)).status_code
        == 422
    )
    user = make_uid("named")
    put = client.put(f"/v1/admin/users/{user}", json={"role": "member", "display_name": name}, headers=ADMIN)
    assert put.status_code == 200, put.text
    assert client.get("/v1/me", headers=auth(user)).json()["display_name"] == name


# --- stored == delivered == returned ---------------------------------------------------------------

#: Text a body may hold: any character but surrogates and control characters, and the three
#: controls it keeps; plus pieces that stress encodings and collations.
TEXT_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\n\r\t")
PIECES = st.sampled_from(
    [
        "\U0001f44b\U0001f3fd",  # astral plane with a skin-tone modifier
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # ZWJ sequence
        "e\u0301\u0327",  # combining marks
        "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u200f",  # RTL with a right-to-left mark
        "\ufeff\ufffd\uffff\U0010ffff",  # BOM, replacement character, noncharacters
        "\u2028\u2029",
        ' "quoted" \\ back\\slash ',
        "trailing spaces   ",
        "\r\n",
        "\U0001d54f\U00020000",  # mathematical double-struck X, a CJK extension B ideograph
    ]
)
BODIES = st.lists(st.text(TEXT_CHARS, max_size=12) | PIECES, max_size=6).map("".join)
#: Whether to pad the body to the largest that fits: 64 KiB of body (REST), 64 KiB of command (MQTT).
TO_THE_LIMIT = st.sampled_from([False, False, False, True])


def padded(body: str, room: int) -> str:
    """``body`` followed by four-byte characters and ASCII filling ``room`` more bytes exactly."""
    return body + EMOJI * (room // 4) + "x" * (room % 4)


def same_everywhere(
    client: TestClient, capture: Capture, sessions: Sessions, sender: str, to: str, message_id: int
) -> str:
    """The body of the message ``message_id`` as delivered, stored and returned; all the same."""
    (delivered,) = capture.take(f"users/{to}/messages")
    assert delivered["id"] == message_id
    with unit_of_work(sessions) as session:
        row = session.get(Message, message_id)
        assert row is not None
        stored = row.body
    page = client.get("/v1/messages", params={"with": to, "limit": 1}, headers=auth(sender)).json()
    (returned,) = page["messages"]
    assert returned["id"] == message_id
    unread = client.get("/v1/messages/unread", params={"after": message_id - 1, "limit": 1}, headers=auth(to))
    assert unread.json()["messages"][0]["id"] == message_id
    bodies = {delivered["body"], stored, returned["body"], unread.json()["messages"][0]["body"]}
    assert len(bodies) == 1, [ascii(b)[:200] for b in bodies]
    body: str = delivered["body"]
    return body


@ROUND_TRIP
@given(body=BODIES, to_the_limit=TO_THE_LIMIT)
def test_rest_messages_are_stored_as_delivered(
    client: TestClient,
    capture: Capture,
    sessions: Sessions,
    make_user: MakeUser,
    body: str,
    to_the_limit: bool,
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    if to_the_limit:
        body = padded(body, MAX_PAYLOAD_BYTES - len(body.encode()))
    sent = client.post("/v1/messages", json={"to": bob, "body": body}, headers=auth(alice))
    assert sent.status_code == 201, sent.text[:300]
    assert sent.json()["body"] == body
    assert same_everywhere(client, capture, sessions, alice, bob, sent.json()["id"]) == body


@ROUND_TRIP
@given(body=BODIES, to_the_limit=TO_THE_LIMIT, ascii_only=st.booleans())
def test_mqtt_messages_are_stored_as_delivered(
    client: TestClient,
    capture: Capture,
    sessions: Sessions,
    make_user: MakeUser,
    body: str,
    to_the_limit: bool,
    ascii_only: bool,
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    command = {"type": "message", "id": uuid.uuid4().hex, "to": bob, "body": body}
    if to_the_limit:  # the whole command at 64 KiB, as the client encodes it
        room = MAX_PAYLOAD_BYTES - len(json.dumps(command, ensure_ascii=ascii_only).encode())
        escaped = 12 if ascii_only else 4  # "\\ud83d\\ude00" or four bytes of UTF-8
        body = command["body"] = body + EMOJI * (room // escaped) + "x" * (room % escaped)
    payload = json.dumps(command, ensure_ascii=ascii_only).encode()
    assert len(payload) == MAX_PAYLOAD_BYTES if to_the_limit else len(payload) <= MAX_PAYLOAD_BYTES
    capture.publish(CommandProcessor(sessions).process([Inbound(f"inbound/{alice}", payload)]))
    (ack,) = capture.take(f"users/{alice}/events")
    assert ack["type"] == "ack", ack
    assert same_everywhere(client, capture, sessions, alice, bob, ack["id"]) == body


@ROUND_TRIP
@given(body=BODIES)
def test_tip_messages_are_stored_as_delivered(
    client: TestClient, capture: Capture, sessions: Sessions, make_user: MakeUser, body: str
) -> None:
    member, creator = make_user("member"), make_user("creator", "creator")
    funded = client.post(
        f"/v1/admin/balances/{member}", json={"amount": 100, "currency": "USD"}, headers=ADMIN
    )
    assert funded.status_code == 200, funded.text
    tip = {"to": creator, "amount": 100, "currency": "USD", "body": body}
    sent = client.post("/v1/tips", json=tip, headers=auth(member))
    assert sent.status_code == 201, sent.text[:300]
    assert sent.json()["body"] == body
    assert same_everywhere(client, capture, sessions, member, creator, sent.json()["message_id"]) == body
    with unit_of_work(sessions) as session:
        row = session.get(Tip, sent.json()["id"])
        assert row is not None
        assert row.body == body
    (listed,) = client.get("/v1/tips/sent", params={"limit": 1}, headers=auth(member)).json()["tips"]
    assert listed["body"] == body
