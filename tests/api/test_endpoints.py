"""The REST endpoints end to end: the real ASGI app, the real databases, the real MQTT broker.

Each test builds the app with :func:`api.app.create_app` around real clients (SQLite and MariaDB
through the ``engine`` fixture, the machine's Mosquitto through ``publisher``) and talks to it
with FastAPI's TestClient. Sends go through ``POST /v1/messages`` rather than straight into the
tables, so that conversations, blocks and the outbox behave as in production. What the API
publishes is watched with a plain paho client subscribed on the same broker.

Tests isolate themselves with fresh user ids (``make_user`` / ``make_uid``) and never wipe
shared tables. Presence runs on both stores only where presence matters (presence, readiness).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier
from acl.topics import CONTROL_TOPIC
from messenger.actions import Outbound
from messenger.constants import DEV_SECRET, MAX_PAYLOAD_BYTES
from messenger.models import Message
from messenger.mqtt import MqttPublisher, service_client
from messenger.presence import PresenceStore
from messenger.ratelimit import Action, Limit, MemoryRateLimiter
from tests.api.app import ADMIN_KEY, LOGIN_URL, MakeClient, client_maker
from tests.api.testclient import TestClient
from tests.conftest import MQTT_HOST, MQTT_PORT, token

MakeUser = Callable[..., str]
MakeUid = Callable[[str], str]
Sessions = sessionmaker[Session]

#: How long to wait for something on the broker (a bound, never a measurement).
WAIT_S = 10.0


# --- the app ---


@pytest.fixture
def make_client(sessions: Sessions, publisher: MqttPublisher) -> Iterator[MakeClient]:
    """Build a TestClient around real deps; keyword arguments replace fields of ApiDeps."""
    with client_maker(sessions=sessions, publisher=publisher) as make:
        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def auth(user: str, role: Role = Role.MEMBER, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role, **claims)}"}


def bearer(raw_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_token}"}


def send(
    client: TestClient,
    sender: str,
    to: str,
    body: str = "hi",
    *,
    status: int = 201,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """POST /v1/messages as ``sender``; asserts the status and returns the JSON answer."""
    response = client.post(
        "/v1/messages", json={"to": to, "body": body, **fields}, headers=auth(sender) | (headers or {})
    )
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def get_json(client: TestClient, url: str, user: str, **params: Any) -> Any:
    response = client.get(url, headers=auth(user), params=params)
    assert response.status_code == 200, response.text
    return response.json()


def read(client: TestClient, user: str, payload: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post("/v1/messages/read", json=payload, headers=auth(user))
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def history_ids(client: TestClient, user: str, peer: str) -> list[int]:
    return [m["id"] for m in get_json(client, "/v1/messages", user, **{"with": peer})["messages"]]


def unread_ids(client: TestClient, user: str, **params: Any) -> list[int]:
    return [m["id"] for m in get_json(client, "/v1/messages/unread", user, **params)["messages"]]


def conversations(client: TestClient, user: str, **params: Any) -> list[dict[str, Any]]:
    page = get_json(client, "/v1/conversations", user, **params)
    assert page["next_before"] is None, "the whole list was expected on one page"
    rows: list[dict[str, Any]] = page["conversations"]
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(peer, last message id, unread) per conversation row."""
    return [(r["peer"], r["last_message"]["id"], r["unread"]) for r in rows]


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["code"]
    return code


def stored(sessions: Sessions, sender: str, recipient: str) -> list[Message]:
    with sessions() as session:
        query = select(Message).where(Message.sender_id == sender, Message.recipient_id == recipient)
        return list(session.scalars(query.order_by(Message.id)))


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- watching the broker ---


class Watcher:
    """A plain paho client on the test broker that keeps every JSON payload it receives."""

    def __init__(self, *topics: str) -> None:
        self._topics = topics
        self._received: list[tuple[str, bytes]] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:12]}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> Watcher:
        self._client.connect(MQTT_HOST, MQTT_PORT, keepalive=30)
        self._client.loop_start()
        assert self._subscribed.wait(WAIT_S), f"could not subscribe to {self._topics}"
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client.reinitialise()  # closes loop_start()'s socket pair now (a ResourceWarning otherwise)

    def received(self, topic: str) -> list[dict[str, Any]]:
        with self._changed:
            raw = [payload for t, payload in self._received if t == topic]
        return [json.loads(payload) for payload in raw]

    def expect(self, topic: str, **fields: Any) -> dict[str, Any]:
        """The first payload on ``topic`` with all of ``fields``, waiting for it up to WAIT_S."""

        def match() -> dict[str, Any] | None:
            for t, payload in self._received:
                data = json.loads(payload) if t == topic else None
                if isinstance(data, dict) and all(data.get(k) == v for k, v in fields.items()):
                    return data
            return None

        with self._changed:
            found = self._changed.wait_for(match, timeout=WAIT_S)
        assert found, f"nothing on {topic} with {fields} within {WAIT_S}s; got {self.received(topic)}"
        return found

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object) -> None:
        if not any(r.is_failure for r in reasons):
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self._received.append((message.topic, bytes(message.payload)))
            self._changed.notify_all()


@pytest.fixture
def watch() -> Iterator[Callable[..., Watcher]]:
    """``watch(*topics)``: a started Watcher, stopped after the test."""
    watchers: list[Watcher] = []

    def start(*topics: str) -> Watcher:
        watcher = Watcher(*topics)
        watchers.append(watcher)
        return watcher.start()

    yield start
    for watcher in watchers:
        watcher.stop()


def messages_of(user: str) -> str:
    return f"users/{user}/messages"


def events_of(user: str) -> str:
    return f"users/{user}/events"


class RecordingPublisher:
    """The real publisher, also remembering what it was given.

    Mosquitto 2.0 hands every ``$CONTROL/...`` publish to its own control plugins and never
    routes it to subscribers, so the revocation control message cannot be watched on the
    broker like the user topics; it still goes to the broker through the real publisher.
    """

    def __init__(self, inner: MqttPublisher) -> None:
        self.inner = inner
        self.sent: list[Outbound] = []

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def publish(self, out: Sequence[Outbound]) -> None:
        self.sent.extend(out)
        self.inner.publish(out)


# --- sending ---


def test_send_stores_returns_and_delivers_the_message(
    client: TestClient, sessions: Sessions, make_user: MakeUser, watch: Callable[..., Watcher]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    watcher = watch(messages_of(bob), events_of(alice))

    sent = send(client, alice, bob, "héllo 👋", headers={"Idempotency-Key": "key-1"})

    assert isinstance(sent["id"], int)
    assert (sent["client_id"], sent["from"], sent["to"], sent["body"]) == ("key-1", alice, bob, "héllo 👋")
    assert sent["read_at"] is None
    assert abs(datetime.now(UTC) - when(sent["sent_at"])) < timedelta(days=1)
    (row,) = stored(sessions, alice, bob)
    assert (row.id, row.client_msg_id, row.body, row.blocked) == (sent["id"], "key-1", "héllo 👋", False)

    delivered = watcher.expect(messages_of(bob), id=sent["id"])
    assert delivered["type"] == "message"
    assert (delivered["client_id"], delivered["from"], delivered["to"]) == ("key-1", alice, bob)
    assert delivered["body"] == "héllo 👋"
    assert when(delivered["sent_at"]) == when(sent["sent_at"])
    ack = watcher.expect(events_of(alice), type="ack", id=sent["id"])
    assert (ack["client_id"], ack["status"], ack["duplicate"]) == ("key-1", "sent", False)

    # a retry is acked again, marked as a duplicate
    assert send(client, alice, bob, "héllo 👋", status=200, headers={"Idempotency-Key": "key-1"}) == sent
    watcher.expect(events_of(alice), type="ack", id=sent["id"], duplicate=True)


def test_send_is_idempotent(client: TestClient, sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")

    by_header = send(client, alice, bob, "one", headers={"Idempotency-Key": "h-1"})
    assert send(client, alice, bob, "one", status=200, headers={"Idempotency-Key": "h-1"}) == by_header
    by_body = send(client, alice, bob, "two", client_id="b-1")
    assert by_body["client_id"] == "b-1"
    assert send(client, alice, bob, "two", status=200, client_id="b-1") == by_body
    # the same key in the header and the body is one key
    both = send(client, alice, bob, "two", status=200, client_id="b-1", headers={"Idempotency-Key": "b-1"})
    assert both["id"] == by_body["id"]
    # keys are case-sensitive (a binary collation on MariaDB)
    upper = send(client, alice, bob, "three", headers={"Idempotency-Key": "H-1"})
    assert upper["id"] not in (by_header["id"], by_body["id"])
    # without any key each send is a new message
    assert send(client, alice, bob, "same")["id"] != send(client, alice, bob, "same")["id"]

    assert [m.client_msg_id for m in stored(sessions, alice, bob)][:3] == ["h-1", "b-1", "H-1"]
    assert len(stored(sessions, alice, bob)) == 5


def test_send_idempotency_conflicts(client: TestClient, sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    original = send(client, alice, bob, "original", headers={"Idempotency-Key": "k-1"})

    conflict = client.post(
        "/v1/messages",
        json={"to": bob, "body": "something else"},
        headers=auth(alice) | {"Idempotency-Key": "k-1"},
    )
    assert error_code(conflict, 409) == "idempotency_conflict"
    differing = client.post(
        "/v1/messages",
        json={"to": bob, "body": "original", "client_id": "k-2"},
        headers=auth(alice) | {"Idempotency-Key": "k-1"},
    )
    assert error_code(differing, 422) == "invalid_request"

    (row,) = stored(sessions, alice, bob)
    assert (row.id, row.body) == (original["id"], "original")


def test_reusing_an_idempotency_key_for_another_recipient_is_a_conflict(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    """SPEC 4 identifies a send by sender + client id: the key names one message.

    The key is looked up per recipient (the table's unique key, there for mass messages), so
    the same key sent to someone else stores a second message instead of answering 409.
    """
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    send(client, alice, bob, "hi", headers={"Idempotency-Key": "k-1"})

    reused = client.post(
        "/v1/messages", json={"to": carol, "body": "hi"}, headers=auth(alice) | {"Idempotency-Key": "k-1"}
    )

    assert (reused.status_code, reused.json().get("code")) == (409, "idempotency_conflict"), reused.text
    assert stored(sessions, alice, carol) == []


def test_send_refusals(
    client: TestClient, sessions: Sessions, make_user: MakeUser, make_uid: MakeUid
) -> None:
    alice, bob = make_user("alice"), make_user("bob")

    def post(json_body: dict[str, Any], user: str = alice, role: Role = Role.MEMBER) -> Any:
        return client.post("/v1/messages", json=json_body, headers=auth(user, role))

    assert error_code(post({"to": alice, "body": "me"}), 400) == "invalid_recipient"
    assert error_code(post({"to": make_uid("ghost"), "body": "anyone?"}), 404) == "unknown_recipient"
    # 40,000 'é' are 80,000 bytes of UTF-8: over 64 KiB though only 40,000 characters
    too_long = post({"to": bob, "body": "é" * 40_000})
    assert error_code(too_long, 413) == "payload_too_large"
    assert error_code(post({"to": bob, "body": "a" * (600 * 1024)}), 413) == "payload_too_large"
    assert error_code(post({"to": bob, "body": "hi"}, make_user("svc", "service"), Role.SERVICE), 403) == (
        "forbidden"
    )
    assert error_code(post({"to": bob, "body": "hi", "tip": 5}), 422) == "invalid_request"
    assert error_code(post({"to": bob}), 422) == "invalid_request"
    assert error_code(post({"to": "bad/id", "body": "hi"}), 422) == "invalid_request"
    assert stored(sessions, alice, bob) == []

    # exactly 64 KiB once encoded is still fine
    at_limit = send(client, alice, bob, "é" * (MAX_PAYLOAD_BYTES // 2))
    assert len(at_limit["body"].encode()) == MAX_PAYLOAD_BYTES
    assert [m.id for m in stored(sessions, alice, bob)] == [at_limit["id"]]


def test_a_streamed_request_body_over_512_kib_is_413(client: TestClient, make_user: MakeUser) -> None:
    """Without a Content-Length (chunked), the body cap must still answer 413, not a parse error."""
    alice, bob = make_user("alice"), make_user("bob")

    def chunks() -> Iterator[bytes]:
        yield json.dumps({"to": bob, "body": ""})[:-2].encode()
        for _ in range(600):
            yield b"a" * 1024
        yield b'"}'

    response = client.post(
        "/v1/messages", content=chunks(), headers=auth(alice) | {"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large"), response.text


def test_a_blocked_sender_is_answered_as_usual_but_nothing_is_delivered(
    client: TestClient, make_user: MakeUser, watch: Callable[..., Watcher]
) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    assert client.put(f"/v1/blocks/{alice}", headers=auth(bob)).status_code == 200
    watcher = watch(messages_of(bob), events_of(alice))

    void = send(client, alice, bob, "into the void")
    ack = watcher.expect(events_of(alice), type="ack", id=void["id"])
    assert (ack["status"], ack["duplicate"]) == ("sent", False)
    # carol's message goes out after alice's on the same connection: once it is in, alice's
    # would have been too (MQTT keeps the order of one publisher's messages)
    sentinel = send(client, carol, bob, "sentinel")
    watcher.expect(messages_of(bob), id=sentinel["id"])
    assert [m["id"] for m in watcher.received(messages_of(bob))] == [sentinel["id"]]

    assert void["id"] not in history_ids(client, bob, alice)
    assert history_ids(client, alice, bob) == [void["id"]]
    assert unread_ids(client, bob) == [sentinel["id"]]
    # marking everything read says nothing to alice about her blocked message
    assert read(client, bob, {"up_to": sentinel["id"]}) == {
        "read": [{"from": carol, "up_to": sentinel["id"]}]
    }


# --- rate limit ---


def test_rate_limit(make_client: MakeClient, sessions: Sessions, make_user: MakeUser) -> None:
    client = make_client(limiter=MemoryRateLimiter({Action.SEND: Limit(rate=0.01, burst=2)}))
    alice, bob, dave = make_user("alice"), make_user("bob"), make_user("dave")
    send(client, alice, bob, "1")
    send(client, alice, bob, "2")

    refused = client.post("/v1/messages", json={"to": bob, "body": "3"}, headers=auth(alice))
    assert error_code(refused, 429) == "rate_limited"
    assert refused.json()["retry_after"] > 0
    assert int(refused.headers["Retry-After"]) >= 1
    assert [m.body for m in stored(sessions, alice, bob)] == ["1", "2"]
    # buckets are per user
    send(client, dave, bob, "dave is fine")

    metrics = client.get("/metrics").text
    assert sample(metrics, "messenger_messages_rejected_total", code="rate_limited", via="http") == 1
    assert sample(metrics, "messenger_messages_stored_total", via="http") == 3


# --- unread and read marks ---


def test_unread(client: TestClient, make_user: MakeUser) -> None:
    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    assert client.put(f"/v1/blocks/{dave}", headers=auth(alice)).status_code == 200

    first = send(client, bob, alice, "1")["id"]
    second = send(client, carol, alice, "2")["id"]
    send(client, alice, bob, "alice's own")
    send(client, bob, carol, "not for alice")
    send(client, dave, alice, "blocked")
    third = send(client, bob, alice, "3")["id"]
    fourth = send(client, carol, alice, "4")["id"]
    read(client, alice, {"ids": [second]})

    page = get_json(client, "/v1/messages/unread", alice)
    assert [m["id"] for m in page["messages"]] == [first, third, fourth]
    assert {m["to"] for m in page["messages"]} == {alice}
    assert all(m["read_at"] is None for m in page["messages"])
    assert (page["next_before"], page["next_after"]) == (None, None)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"after": cursor} if cursor is not None else {})
        page = get_json(client, "/v1/messages/unread", alice, **params)
        seen += [m["id"] for m in page["messages"]]
        pages += 1
        cursor = page["next_after"]
        if cursor is None:
            break
        assert cursor == seen[-1]
    assert (seen, pages) == ([first, third, fourth], 2)


def test_mark_read(client: TestClient, make_user: MakeUser, watch: Callable[..., Watcher]) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    watcher = watch(events_of(bob), events_of(carol))
    send(client, bob, alice, "b1")
    c1 = send(client, carol, alice, "c1")["id"]
    b2 = send(client, bob, alice, "b2")["id"]
    c2 = send(client, carol, alice, "c2")["id"]
    b3 = send(client, bob, alice, "b3")["id"]

    assert read(client, alice, {"up_to": b2, "with": bob}) == {"read": [{"from": bob, "up_to": b2}]}
    assert unread_ids(client, alice) == [c1, c2, b3]
    assert watcher.expect(events_of(bob), type="read", up_to=b2) == {"type": "read", "by": alice, "up_to": b2}

    assert read(client, alice, {"ids": [c2]}) == {"read": [{"from": carol, "up_to": c2}]}
    assert unread_ids(client, alice) == [c1, b3]
    watcher.expect(events_of(carol), type="read", by=alice, up_to=c2)

    marks = read(client, alice, {"up_to": b3})["read"]
    assert sorted(marks, key=lambda m: m["from"]) == sorted(
        [{"from": bob, "up_to": b3}, {"from": carol, "up_to": c1}], key=lambda m: m["from"]
    )
    assert unread_ids(client, alice) == []
    watcher.expect(events_of(bob), type="read", by=alice, up_to=b3)
    watcher.expect(events_of(carol), type="read", by=alice, up_to=c1)
    assert read(client, alice, {"up_to": b3}) == {"read": []}

    for invalid in ({"up_to": b3, "ids": [b3]}, {}, {"with": bob}, {"up_to": -1}, {"ids": []}):
        response = client.post("/v1/messages/read", json=invalid, headers=auth(alice))
        assert error_code(response, 422) == "invalid_request", invalid


def test_nobody_marks_someone_elses_messages(client: TestClient, make_user: MakeUser) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    mid = send(client, alice, bob, "for bob only")["id"]

    assert read(client, carol, {"ids": [mid]}) == {"read": []}
    assert read(client, carol, {"up_to": mid, "with": alice}) == {"read": []}
    assert read(client, carol, {"up_to": mid}) == {"read": []}
    # the sender cannot mark their own message read either
    assert read(client, alice, {"ids": [mid]}) == {"read": []}
    assert unread_ids(client, bob) == [mid]


# --- conversations ---


def test_conversations(client: TestClient, make_user: MakeUser) -> None:
    alice, bob, carol, dave, erin = (make_user(n) for n in ("alice", "bob", "carol", "dave", "erin"))
    send(client, alice, bob, "hi bob")
    m2 = send(client, carol, alice, "from carol")["id"]
    m3 = send(client, dave, alice, "from dave")["id"]
    m4 = send(client, bob, alice, "bob answers")["id"]
    send(client, erin, alice, "erin 1")
    m6 = send(client, erin, alice, "erin 2")["id"]

    rows = conversations(client, alice)
    assert summary(rows) == [(erin, m6, 2), (bob, m4, 1), (dave, m3, 1), (carol, m2, 1)]
    bob_row = rows[1]["last_message"]
    assert (bob_row["from"], bob_row["to"], bob_row["body"]) == (bob, alice, "bob answers")
    assert summary(conversations(client, bob)) == [(alice, m4, 1)]

    for limit in (1, 2, 3, 4):
        assert walk_conversations(client, alice, limit) == [r["peer"] for r in rows]

    # alice writing to carol moves carol to the top; reading drops the counts
    m7 = send(client, alice, carol, "hello again")["id"]
    read(client, alice, {"up_to": m6, "with": erin})
    read(client, alice, {"ids": [m2]})
    assert summary(conversations(client, alice)) == [
        (carol, m7, 0),
        (erin, m6, 0),
        (bob, m4, 1),
        (dave, m3, 1),
    ]


def walk_conversations(client: TestClient, user: str, limit: int) -> list[str]:
    """Every peer through ``limit``-sized pages; checks the cursor on the way."""
    peers: list[str] = []
    before: int | None = None
    while True:
        params = {"limit": limit} | ({"before": before} if before is not None else {})
        page = get_json(client, "/v1/conversations", user, **params)
        assert len(page["conversations"]) <= limit
        peers += [r["peer"] for r in page["conversations"]]
        before = page["next_before"]
        if before is None:
            break
        assert before == page["conversations"][-1]["last_message"]["id"]
    assert len(peers) == len(set(peers)), f"duplicates with limit={limit}: {peers}"
    return peers


def test_a_blocked_peer_does_not_touch_the_blockers_conversations(
    client: TestClient, make_user: MakeUser
) -> None:
    alice, bob, dave, frank = (make_user(n) for n in ("alice", "bob", "dave", "frank"))
    from_dave = send(client, dave, alice, "before the block")["id"]
    from_bob = send(client, bob, alice, "bob")["id"]
    for blocked in (dave, frank):
        assert client.put(f"/v1/blocks/{blocked}", headers=auth(alice)).status_code == 200

    blocked_dave = send(client, dave, alice, "after the block")["id"]
    blocked_frank = send(client, frank, alice, "never seen")["id"]

    # no new row for frank, dave not moved up, and his blocked message is not counted
    assert summary(conversations(client, alice)) == [(bob, from_bob, 1), (dave, from_dave, 1)]
    # the blocked senders see their own conversations as if nothing happened
    assert summary(conversations(client, dave)) == [(alice, blocked_dave, 0)]
    assert summary(conversations(client, frank)) == [(alice, blocked_frank, 0)]


# --- authorization ---


def test_callers_only_ever_see_their_own_data(client: TestClient, make_user: MakeUser) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    to_bob = send(client, alice, bob, "private")["id"]
    to_alice = send(client, bob, alice, "private reply")["id"]
    assert client.put(f"/v1/blocks/{bob}", headers=auth(alice)).status_code == 200
    assert client.put(f"/v1/blocks/{carol}", headers=auth(bob)).status_code == 200
    to_carol = send(client, bob, carol, "for carol")["id"]  # bob blocked carol, not the other way

    assert history_ids(client, carol, alice) == []
    assert history_ids(client, carol, bob) == [to_carol]
    assert summary(conversations(client, carol)) == [(bob, to_carol, 1)]
    assert unread_ids(client, carol) == [to_carol]
    assert get_json(client, "/v1/blocks", carol) == {"blocks": [], "next_after": None}
    assert client.get(f"/v1/blocks/{bob}", headers=auth(carol)).status_code == 404

    assert [b["user"] for b in get_json(client, "/v1/blocks", alice)["blocks"]] == [bob]
    assert unread_ids(client, alice) == [to_alice]
    assert unread_ids(client, bob) == [to_bob]
    for row in conversations(client, alice):
        assert alice in (row["last_message"]["from"], row["last_message"]["to"])


# --- blocks ---


def test_blocks(client: TestClient, make_user: MakeUser, make_uid: MakeUid) -> None:
    alice, bob = make_user("alice"), make_user("bob")

    first = client.put(f"/v1/blocks/{bob}", headers=auth(alice))
    assert first.status_code == 200, first.text
    again = client.put(f"/v1/blocks/{bob}", headers=auth(alice))
    assert again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["user"] == bob
    assert when(again.json()["created_at"]) == when(first.json()["created_at"])
    assert get_json(client, "/v1/blocks", alice)["blocks"] == [first.json()]

    assert error_code(client.put(f"/v1/blocks/{alice}", headers=auth(alice)), 400) == "invalid_block"
    assert (
        error_code(client.put(f"/v1/blocks/{make_uid('ghost')}", headers=auth(alice)), 404) == "unknown_user"
    )

    for _ in range(2):
        deleted = client.delete(f"/v1/blocks/{bob}", headers=auth(alice))
        assert (deleted.status_code, deleted.content) == (204, b"")
    assert error_code(client.get(f"/v1/blocks/{bob}", headers=auth(alice)), 404) == "not_blocked"
    assert get_json(client, "/v1/blocks", alice)["blocks"] == []


# --- presence ---


def test_presence_query(
    make_client: MakeClient, presence_store: PresenceStore, make_user: MakeUser, make_uid: MakeUid
) -> None:
    client = make_client(presence=presence_store)
    alice, bob, carol, ghost = make_user("alice"), make_uid("bob"), make_uid("carol"), make_uid("ghost")
    t0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    presence_store.set_device(bob, "phone", online=True, node="node-1", at=t0)
    presence_store.set_device(carol, "laptop", online=True, node="node-2", at=t0)
    presence_store.set_device(carol, "laptop", online=False, node="node-2", at=t0 + timedelta(minutes=1))

    def query(users: list[str]) -> Any:
        return client.post("/v1/presence/query", json={"users": users}, headers=auth(alice))

    response = query([carol, bob, ghost, bob, carol])
    assert response.status_code == 200, response.text
    answers = response.json()["presence"]
    assert [(p["user"], p["online"]) for p in answers] == [(carol, False), (bob, True), (ghost, False)]
    assert [(d["device"], d["node"], when(d["since"])) for d in answers[1]["devices"]] == [
        ("phone", "node-1", t0)
    ]
    assert when(answers[1]["since"]) == t0
    assert answers[0]["devices"] == []
    assert when(answers[0]["last_seen"]) == t0 + timedelta(minutes=1)
    assert (answers[2]["devices"], answers[2]["since"], answers[2]["last_seen"]) == ([], None, None)

    many = [make_uid("p") for _ in range(99)] + [bob]
    response = query(many)
    assert response.status_code == 200, response.text
    assert [p["user"] for p in response.json()["presence"]] == many
    assert response.json()["presence"][-1]["online"] is True

    assert error_code(query([*many, ghost]), 422) == "invalid_request"
    assert error_code(query([]), 422) == "invalid_request"
    assert error_code(query(["bad id"]), 422) == "invalid_request"


# --- the caller ---


def test_me(client: TestClient, make_user: MakeUser, make_uid: MakeUid) -> None:
    alice, newcomer = make_user("alice"), make_uid("new")
    issued = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

    me = get_json_with(client, "/v1/me", token(alice, jti=f"jti-{alice}", now=issued))
    assert (me["user"], me["role"], me["display_name"]) == (alice, "member", None)
    assert abs(datetime.now(UTC) - when(me["created_at"])) < timedelta(days=1)
    assert me["token"]["jti"] == f"jti-{alice}"
    assert when(me["token"]["issued_at"]) == issued
    assert when(me["token"]["expires_at"]) == issued + timedelta(hours=1)

    unprovisioned = get_json_with(client, "/v1/me", token(newcomer, Role.CREATOR))
    assert (unprovisioned["user"], unprovisioned["role"]) == (newcomer, "creator")
    assert (unprovisioned["display_name"], unprovisioned["created_at"]) == (None, None)


def get_json_with(client: TestClient, url: str, raw_token: str) -> Any:
    response = client.get(url, headers=bearer(raw_token))
    assert response.status_code == 200, response.text
    return response.json()


# --- admin ---


def test_admin_provisions_users(client: TestClient, make_user: MakeUser, make_uid: MakeUid) -> None:
    target, svc, member = make_uid("target"), make_uid("svc"), make_user("member")
    body = {"role": "creator", "display_name": "X"}

    response = client.put(f"/v1/admin/users/{target}", json=body, headers=auth(svc, Role.SERVICE))
    assert response.status_code == 200, response.text
    created = response.json()
    assert (created["user"], created["role"], created["display_name"]) == (target, "creator", "X")
    me = get_json(client, "/v1/me", target)
    assert (me["role"], me["display_name"]) == ("creator", "X")
    assert when(me["created_at"]) == when(created["created_at"])

    forbidden = client.put(f"/v1/admin/users/{target}", json=body, headers=auth(member))
    assert error_code(forbidden, 403) == "forbidden"
    by_key = client.put(
        f"/v1/admin/users/{target}",
        json={"role": "member", "display_name": "Y"},
        headers={"X-Admin-Key": ADMIN_KEY},
    )
    assert by_key.status_code == 200, by_key.text
    assert (by_key.json()["role"], by_key.json()["display_name"]) == ("member", "Y")
    assert when(by_key.json()["created_at"]) == when(created["created_at"])
    assert get_json(client, "/v1/me", target)["display_name"] == "Y"

    wrong_key = client.put(f"/v1/admin/users/{target}", json=body, headers={"X-Admin-Key": "wrong"})
    assert error_code(wrong_key, 401) == "unauthorized"
    assert error_code(client.put(f"/v1/admin/users/{target}", json=body), 401) == "unauthorized"
    bad_role = client.put(
        f"/v1/admin/users/{target}", json={"role": "king"}, headers={"X-Admin-Key": ADMIN_KEY}
    )
    assert error_code(bad_role, 422) == "invalid_request"


def test_admin_revokes_tokens(make_client: MakeClient, publisher: MqttPublisher, make_user: MakeUser) -> None:
    recorder = RecordingPublisher(publisher)
    # a little leeway, so that a token issued a few seconds from now is already valid
    lenient = TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET, leeway_seconds=30))
    client = make_client(publisher=recorder, verifier=lenient)
    alice, bob, svc = make_user("alice"), make_user("bob"), make_user("svc", "service")
    admin = auth(svc, Role.SERVICE)
    phone, laptop, bobs = token(alice, jti=f"phone-{alice}"), token(alice), token(bob)

    response = client.post("/v1/admin/revocations", json={"jti": f"phone-{alice}"}, headers=admin)
    assert response.status_code == 201, response.text
    assert (response.json()["jti"], response.json()["user"], response.json()["issued_before"]) == (
        f"phone-{alice}",
        None,
        None,
    )
    refused = client.get("/v1/me", headers=bearer(phone))
    assert error_code(refused, 401) == "unauthorized"
    assert "revoked" in refused.json()["detail"]
    assert get_json_with(client, "/v1/me", laptop)["user"] == alice
    assert control_messages(recorder) == [
        {"command": "revoke", "jti": f"phone-{alice}", "user": None, "issued_before": None}
    ]

    response = client.post("/v1/admin/revocations", json={"user": alice}, headers={"X-Admin-Key": ADMIN_KEY})
    assert response.status_code == 201, response.text
    cutoff = when(response.json()["issued_before"])
    assert abs(datetime.now(UTC) - cutoff) < timedelta(minutes=1)
    assert "revoked" in client.get("/v1/me", headers=bearer(laptop)).json()["detail"]
    later = token(alice, now=datetime.now(UTC) + timedelta(seconds=5))
    assert get_json_with(client, "/v1/me", later)["user"] == alice
    assert get_json_with(client, "/v1/me", bobs)["user"] == bob
    control = control_messages(recorder)[-1]
    assert (control["command"], control["jti"], control["user"]) == ("revoke", None, alice)
    assert control["issued_before"] == pytest.approx(cutoff.timestamp(), abs=0.001)

    for invalid in ({"jti": "x", "user": alice}, {}, {"user": alice, "before": "2026-01-01T00:00:00"}):
        bad = client.post("/v1/admin/revocations", json=invalid, headers=admin)
        assert error_code(bad, 422) == "invalid_request", invalid
    member = client.post("/v1/admin/revocations", json={"user": bob}, headers=auth(bob))
    assert error_code(member, 403) == "forbidden"
    assert len(control_messages(recorder)) == 2


def control_messages(recorder: RecordingPublisher) -> list[dict[str, Any]]:
    return [json.loads(o.payload) for o in recorder.sent if o.topic == CONTROL_TOPIC]


# --- operations ---


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when it is not there."""
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_health_and_readiness(make_client: MakeClient, presence_store: PresenceStore) -> None:
    client = make_client(presence=presence_store)
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok", "presence": "ok"}}

    # a real publisher that was never started is not connected
    idle = MqttPublisher(
        service_client(user="messenger-test", token="unused", name=f"idle-{uuid.uuid4().hex[:8]}")
    )
    unready = make_client(presence=presence_store, publisher=idle).get("/readyz")
    assert unready.status_code == 503
    assert unready.json()["status"] == "unavailable"
    assert unready.json()["checks"] == {"database": "ok", "broker": "error: not connected", "presence": "ok"}


def test_metrics(client: TestClient, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    send(client, alice, bob)
    send(client, alice, alice, status=400)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "messenger_messages_stored_total", via="http") == 1
    assert sample(text, "messenger_messages_rejected_total", code="invalid_recipient", via="http") == 1
    assert sample(text, "messenger_messages_delivered_total") == 1
    posted = {"method": "POST", "route": "/v1/messages"}
    assert sample(text, "messenger_http_request_seconds_count", status="2xx", **posted) == 1
    assert sample(text, "messenger_http_request_seconds_count", status="4xx", **posted) == 1


def test_a_send_refused_as_too_large_is_counted(client: TestClient, make_user: MakeUser) -> None:
    """Over MQTT an oversized command counts as rejected with payload_too_large; over HTTP too."""
    alice, bob = make_user("alice"), make_user("bob")
    send(client, alice, bob, "é" * 40_000, status=413)

    metrics = client.get("/metrics").text

    assert sample(metrics, "messenger_messages_rejected_total", code="payload_too_large", via="http") == 1


# --- logging in ---


def test_a_browser_without_a_token_is_sent_to_log_in(client: TestClient) -> None:
    page = client.get(
        "/v1/conversations?limit=5",
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        follow_redirects=False,
    )
    assert page.status_code == 303
    location = urlsplit(page.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "login.example", "/login")
    assert parse_qs(location.query) == {
        "app": ["messenger"],
        "next": ["/v1/conversations?limit=5"],  # no MESSENGER_PUBLIC_URL: a path (test_login_redirect.py)
    }

    api_call = client.get("/v1/conversations", follow_redirects=False)
    assert api_call.status_code == 401
    assert api_call.json()["code"] == "unauthorized"
    assert api_call.json()["login_url"] == LOGIN_URL
    json_first = client.get("/v1/conversations", headers={"Accept": "application/json, text/html"})
    assert error_code(json_first, 401) == "unauthorized"
