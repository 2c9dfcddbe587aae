"""paho-based test clients for end-to-end runs through the real broker.

* :class:`ChatClient`: one device of one user (username = user id, password = bearer token,
  client id ``{uid}/{device}``, clean session, a Last Will of ``offline`` on its own presence
  topic). :meth:`ChatClient.subscribe` waits for the SUBACK and returns its reason codes.
* :class:`Inbox`: everything a client received, with :meth:`Inbox.expect` (wait for a matching
  message) and :meth:`Inbox.assert_nothing` (no matching message within a wait).
* :func:`try_connect`: the CONNACK reason code of a connection the broker may refuse.
* :class:`Clients`: connects clients for one test and closes them all at the end.

Test clients never reconnect on their own, so a connection the broker drops stays dropped and
a test can see it (``disconnected`` / ``is_connected``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import unit_of_work
from messenger.models import Message
from messenger.repositories import users
from tests.conftest import token

HOST = "127.0.0.1"
#: How long a test waits for something that should happen (generous: CI machines are slow).
TIMEOUT = 15.0
#: How long a test watches for something that should NOT happen.
QUIET = 1.0
WS_PATH = "/mqtt"

Transport = Literal["tcp", "websockets"]


@dataclass(frozen=True, slots=True)
class Received:
    """One PUBLISH a test client got."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def data(self) -> Any:
        """The payload as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def __repr__(self) -> str:
        body = self.payload[:200].decode("utf-8", "replace")
        return f"<{self.topic} retain={self.retain} {body!r}>"


Predicate = Callable[[Received], bool]


def on_topic(topic: str) -> Predicate:
    return lambda r: r.topic == topic


def event(kind: str, **fields: Any) -> Predicate:
    """An event on ``users/*/events`` of type ``kind`` whose payload has all of ``fields``."""
    return _json_on("/events", {"type": kind, **fields})


def message(**fields: Any) -> Predicate:
    """A message on ``users/*/messages`` whose payload has all of ``fields`` (``from_`` for ``from``)."""
    if "from_" in fields:
        fields["from"] = fields.pop("from_")
    return _json_on("/messages", {"type": "message", **fields})


def any_message() -> Predicate:
    return lambda r: r.topic.endswith("/messages")


def _json_on(suffix: str, wanted: dict[str, Any]) -> Predicate:
    def match(r: Received) -> bool:
        if not r.topic.startswith("users/") or not r.topic.endswith(suffix):
            return False
        data = r.data
        return isinstance(data, dict) and all(k in data and data[k] == v for k, v in wanted.items())

    return match


class Inbox:
    """Thread-safe record of received messages. ``expect`` consumes what it returns."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[Received] = []
        self.history: list[Received] = []

    def put(self, item: Received) -> None:
        with self._cond:
            self._pending.append(item)
            self.history.append(item)
            self._cond.notify_all()

    def expect(self, predicate: Predicate, timeout: float = TIMEOUT, what: str = "") -> Received:
        """The first not-yet-consumed message matching ``predicate``, waiting up to ``timeout``."""
        return self.expect_n(predicate, 1, timeout, what)[0]

    def expect_n(
        self, predicate: Predicate, n: int, timeout: float = TIMEOUT, what: str = ""
    ) -> list[Received]:
        """The first ``n`` not-yet-consumed matching messages, in arrival order."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self._pending if predicate(r)]
                if len(found) >= n:
                    taken = found[:n]
                    taken_ids = {id(r) for r in taken}
                    self._pending = [r for r in self._pending if id(r) not in taken_ids]
                    return taken
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} x {what or 'matching message'} within {timeout}s, got {len(found)}; "
                        f"received so far: {self.history[-20:]}"
                    )
                self._cond.wait(remaining)

    def assert_nothing(self, predicate: Predicate, wait: float = QUIET, what: str = "") -> None:
        """Fail if a matching message is pending now or arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                found = [r for r in self._pending if predicate(r)]
                if found:
                    raise AssertionError(f"unexpected {what or 'message'}: {found}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def matching(self, predicate: Predicate) -> list[Received]:
        """Everything ever received that matches (consumed or not)."""
        with self._cond:
            return [r for r in self.history if predicate(r)]


def _new_paho(client_id: str, transport: Transport, clean_session: bool) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        transport=transport,
        reconnect_on_failure=False,
    )
    if transport == "websockets":
        client.ws_set_options(path=WS_PATH)
    return client


@dataclass
class ChatClient:
    """One connected device of one user."""

    port: int
    user: str
    device: str = "t"
    password: str | None = None
    client_id: str | None = None
    transport: Transport = "tcp"
    clean_session: bool = True
    will: bool = True
    keepalive: int = 60
    inbox: Inbox = field(default_factory=Inbox)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.password is None:
            self.password = token(self.user)
        if self.client_id is None:
            self.client_id = f"{self.user}/{self.device}"
        self._connack: ReasonCode | None = None
        self._connected = threading.Event()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._suback_cond = threading.Condition()
        self.paho = _new_paho(self.client_id, self.transport, self.clean_session)
        self.paho.username_pw_set(self.user, self.password)
        if self.will:
            self.paho.will_set(self.presence_topic, b"offline", qos=1, retain=True)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message
        self._closed = False

    # topics

    @property
    def presence_topic(self) -> str:
        return f"presence/{self.user}/{self.device}"

    @property
    def inbound_topic(self) -> str:
        return f"inbound/{self.user}"

    @property
    def own_topics(self) -> list[str]:
        return [f"users/{self.user}/messages", f"users/{self.user}/events"]

    # lifecycle

    def connect(self, timeout: float = TIMEOUT) -> ChatClient:
        """Connect and wait for a successful CONNACK (AssertionError otherwise)."""
        self.paho.connect(HOST, self.port, keepalive=self.keepalive)
        self.paho.loop_start()
        if not self._connected.wait(timeout):
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s")
        assert self._connack is not None and not self._connack.is_failure, (
            f"{self.client_id}: connection refused: {self._connack}"
        )
        return self

    def is_connected(self) -> bool:
        return self.paho.is_connected() and not self.disconnected.is_set()

    def close(self) -> None:
        """Disconnect cleanly (a DISCONNECT packet: no Last Will)."""
        if self._closed:
            return
        self._closed = True
        with suppress(Exception):
            if self.paho.is_connected():
                self.paho.disconnect()
        self.paho.loop_stop()
        self.paho._reset_sockets()

    def kill(self) -> None:
        """Drop the connection without a DISCONNECT packet, so the broker fires the Last Will.

        The network thread is stopped first so that paho neither notices nor reconnects; then
        the socket (or the WebSocket's socket) is closed under it.
        """
        if self._closed:
            return
        self._closed = True
        self.paho.loop_stop()
        self.paho._reset_sockets()

    # MQTT operations

    def subscribe(self, *filters: str, timeout: float = TIMEOUT) -> list[ReasonCode]:
        """Subscribe (QoS 1) and return the SUBACK reason codes, one per filter."""
        result, mid = self.paho.subscribe([(f, 1) for f in filters])
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed to send: {result}"
        deadline = time.monotonic() + timeout
        with self._suback_cond:
            while mid not in self._subacks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.client_id}: no SUBACK for {filters} within {timeout}s")
                self._suback_cond.wait(remaining)
            return self._subacks.pop(mid)

    def subscribe_own(self) -> None:
        """Subscribe to this user's messages and events; both must be granted."""
        codes = self.subscribe(*self.own_topics)
        assert not any(c.is_failure for c in codes), f"own topics refused: {codes}"

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = TIMEOUT,
    ) -> None:
        """Publish and wait until the broker took it (PUBACK for QoS 1)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"{self.client_id}: publish on {topic} not acknowledged"

    def command(self, command: dict[str, Any], **kwargs: Any) -> None:
        self.publish(self.inbound_topic, json.dumps(command), **kwargs)

    def send(self, to: str, body: str, client_msg_id: str | None = None) -> str:
        """Send a 1:1 message; returns its client message id."""
        client_msg_id = client_msg_id or uuid.uuid4().hex
        self.command({"type": "message", "id": client_msg_id, "to": to, "body": body})
        return client_msg_id

    def go_online(self) -> None:
        self.publish(self.presence_topic, b"online", retain=True)

    def expect_ack(self, client_msg_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        data: dict[str, Any] = self.inbox.expect(
            event("ack", client_id=client_msg_id), timeout, f"ack of {client_msg_id}"
        ).data
        return data

    # paho callbacks (network thread)

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object = None
    ) -> None:
        self._connack = reason
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, _r: object, _p: object = None) -> None:
        self.disconnected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode], _p: object = None
    ) -> None:
        with self._suback_cond:
            self._subacks[mid] = list(codes)
            self._suback_cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))


def try_connect(
    port: int,
    *,
    username: str,
    password: str,
    client_id: str,
    will_topic: str | None = None,
    clean_session: bool = True,
    transport: Transport = "tcp",
    timeout: float = TIMEOUT,
) -> ReasonCode | None:
    """Connect once and return the CONNACK reason code, or None if the broker closed the
    connection without one. A successful connection is closed cleanly again."""
    client = _new_paho(client_id, transport, clean_session)
    client.username_pw_set(username, password)
    if will_topic is not None:
        client.will_set(will_topic, b"offline", qos=1, retain=True)
    outcome: list[ReasonCode | None] = []

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object = None) -> None:
        outcome.append(reason)

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _r: object, _p: object = None) -> None:
        outcome.append(None)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(HOST, port, keepalive=60)
        deadline = time.monotonic() + timeout
        while not outcome and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS and not outcome:
                outcome.append(None)  # the connection dropped before any CONNACK
        if not outcome:
            raise AssertionError(f"{client_id}: neither CONNACK nor disconnect within {timeout}s")
        if outcome[0] is not None and not outcome[0].is_failure:
            client.disconnect()
            client.loop(timeout=0.1)
    finally:
        client._reset_sockets()
    return outcome[0]


def not_authorized(code: ReasonCode | None) -> bool:
    """A CONNACK refusal (MQTT 3.1.1 code 5, which paho reports as 135 "Not authorized"), or a
    connection closed without any CONNACK: either way the client is not connected."""
    return code is None or code.is_failure


class Target(Protocol):
    """Where the clients connect: a ``messenger serve`` stack, or the Mosquitto topology."""

    @property
    def mqtt_port(self) -> int: ...
    @property
    def ws_port(self) -> int: ...
    @property
    def api_url(self) -> str: ...
    @property
    def sessions(self) -> sessionmaker[Session]: ...


class Clients:
    """Connects test clients to one stack and closes them all when the test ends."""

    def __init__(self, stack: Target) -> None:
        self.stack = stack
        self._clients: list[ChatClient] = []

    def uid(self, name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:10]}"

    def ensure_user(self, user_id: str, role: str = "member") -> str:
        """Create a user in the database without connecting it."""
        with unit_of_work(self.stack.sessions) as session:
            users.ensure(session, user_id, role)
        return user_id

    def new(self, user: str, device: str = "t", **kwargs: Any) -> ChatClient:
        """A client that is not connected yet (for tests that control each step)."""
        transport = kwargs.get("transport", "tcp")
        port = self.stack.ws_port if transport == "websockets" else self.stack.mqtt_port
        client = ChatClient(port, user, device, **kwargs)
        self._clients.append(client)
        return client

    def connect(
        self, user: str, device: str = "t", *, subscribe: bool = True, online: bool = False, **kwargs: Any
    ) -> ChatClient:
        """Connect, subscribe to the user's own topics (SUBACK waited) and optionally go online."""
        client = self.new(user, device, **kwargs).connect()
        if subscribe:
            client.subscribe_own()
        if online:
            client.go_online()
        return client

    def try_connect(self, username: str, password: str, client_id: str, **kwargs: Any) -> ReasonCode | None:
        return try_connect(
            self.stack.mqtt_port, username=username, password=password, client_id=client_id, **kwargs
        )

    def close_all(self) -> None:
        for client in self._clients:
            client.close()


def api(stack: Target, user: str) -> httpx.Client:
    """A REST client authenticated as ``user``."""
    headers = {"Authorization": f"Bearer {token(user)}"}
    return httpx.Client(base_url=stack.api_url, headers=headers, timeout=TIMEOUT)


def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        time.sleep(0.05)


def unsigned_token(user_id: str, *, ttl_s: int = 3600) -> str:
    """A JWT with ``alg: none`` and no signature."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "sub": user_id,
        "role": "member",
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def stored_messages(stack: Target, sender: str, client_msg_id: str) -> list[Message]:
    """The rows the handler stored for one client message id of ``sender``."""
    with unit_of_work(stack.sessions) as session:
        return list(
            session.scalars(
                select(Message).where(Message.sender_id == sender, Message.client_msg_id == client_msg_id)
            )
        )
