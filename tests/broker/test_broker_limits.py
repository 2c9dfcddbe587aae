"""The limits of :mod:`acl.limits` through real connections, on both brokers with the same tests.

``embedded``: a ``messenger serve`` stack (amqtt). ``mosquitto``: Mosquitto with the built plugin
on free ports, configured from ``mosquitto.test.conf``, and ``messenger api`` (on SQLite) as its
gateway, started by ``scripts/topology.py`` without handlers or bridge. Each test checks what a
client sees: what is relayed, what a later subscriber gets retained, CONNACK and SUBACK codes.

Ordering, not waiting, tells that something did not happen: a marker published after the
refused publish arrives after it would have; a marker published after a SUBSCRIBE arrives after
that subscription's retained messages (Mosquitto sends them before the SUBACK, amqtt before it
reads the client's next packet).
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from acl.limits import (
    MAX_CONNECTIONS_PER_USER,
    MAX_RETAINED_BYTES,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    PAYLOAD_LIMITS,
    TopicClass,
)
from acl.principal import Role
from scripts.topology import Topology, build_plugin
from tests.conftest import REDIS_URL, running_stack, stack_settings, token
from tests.e2e.helpers import TIMEOUT, ChatClient, not_authorized, on_topic, try_connect, wait_until

SUBACK_FAILURE = 0x80


@dataclass(frozen=True)
class Broker:
    name: str
    port: int


def _mosquitto(tmp: Path) -> Iterator[Broker]:
    build_plugin()
    topology = Topology(
        database_url=f"sqlite:///{tmp / 'gateway.db'}", redis_url=REDIS_URL, handlers=0, workdir=tmp
    )
    try:
        topology.migrate()
        topology.start_api()
        topology.start_mosquitto()
        yield Broker("mosquitto", topology.mqtt_port)
    finally:
        topology.stop()


@pytest.fixture(scope="module", params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp = tmp_path_factory.mktemp(f"limits-{request.param}")
    if request.param == "mosquitto":
        yield from _mosquitto(tmp)
        return
    with running_stack(stack_settings(f"sqlite:///{tmp / 'messenger.db'}", None)) as stack:
        yield Broker("embedded", stack.mqtt_port)


@pytest.fixture
def clients(broker: Broker) -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def connect(broker: Broker, opened: ExitStack, user: str, device: str = "t", **kwargs: Any) -> ChatClient:
    client = ChatClient(broker.port, user, device, will=False, **kwargs)
    opened.callback(client.close)
    return client.connect()


def refused(broker: Broker, user: str, device: str, role: Role = Role.MEMBER) -> bool:
    code = try_connect(broker.port, username=user, password=token(user, role), client_id=f"{user}/{device}")
    return not_authorized(code)


def test_oversized_presence_is_neither_relayed_nor_retained(broker: Broker, clients: ExitStack) -> None:
    alice = connect(broker, clients, uid("alice"), "phone")
    watcher = connect(broker, clients, uid("bob"))
    assert not any(c.is_failure for c in watcher.subscribe(f"presence/{alice.user}/+"))

    too_large = b"x" * (MAX_RETAINED_BYTES + 1)
    alice.publish(f"presence/{alice.user}/phone", too_large, retain=True)
    alice.publish(f"presence/{alice.user}/phone", too_large)  # not retained: still over the presence limit
    at_limit = b"o" * PAYLOAD_LIMITS[TopicClass.PRESENCE]
    alice.publish(f"presence/{alice.user}/tablet", at_limit, retain=True)
    watcher.inbox.expect(on_topic(f"presence/{alice.user}/tablet"), what="the presence at the limit")
    assert watcher.inbox.matching(on_topic(f"presence/{alice.user}/phone")) == []

    # a later subscriber gets what was retained: the state at the limit, not the oversized one
    late = connect(broker, clients, uid("carol"))
    marker = f"presence/{late.user}/sync"
    assert not any(c.is_failure for c in late.subscribe(f"presence/{alice.user}/+", marker))
    late.publish(marker, b"online")
    late.inbox.expect(on_topic(marker), what="the marker")
    assert [(r.topic, r.payload) for r in late.inbox.history if r.topic != marker] == [
        (f"presence/{alice.user}/tablet", at_limit)
    ]


def test_an_oversized_command_is_dropped_and_one_at_the_limit_relayed(
    broker: Broker, clients: ExitStack
) -> None:
    svc = uid("svc")
    service = connect(broker, clients, svc, password=token(svc, Role.SERVICE))
    alice = connect(broker, clients, uid("alice"))
    inbound = f"inbound/{alice.user}"
    assert not any(c.is_failure for c in service.subscribe(inbound))

    limit = PAYLOAD_LIMITS[TopicClass.INBOUND]
    alice.publish(inbound, b"a" * (limit + 1))
    alice.publish(inbound, b"b" * limit)
    alice.publish(inbound, b"marker")
    service.inbox.expect(lambda r: r.payload == b"marker", what="the marker")
    assert [len(r.payload) for r in service.inbox.history] == [limit, len(b"marker")]
    assert alice.is_connected()


def test_connections_per_user(broker: Broker, clients: ExitStack) -> None:
    dave = uid("dave")
    devices = [connect(broker, clients, dave, f"d{n}") for n in range(MAX_CONNECTIONS_PER_USER)]
    assert refused(broker, dave, "one-too-many")
    # another user is not affected
    connect(broker, clients, uid("erin"))
    # the client id of a live connection takes that connection over: not one more device
    assert not refused(broker, dave, "d3")
    # once a device has gone, another may come
    devices[0].close()
    wait_until(lambda: not refused(broker, dave, "newcomer"), what="a connection after one closed")


def test_the_service_account_has_no_connection_limit(broker: Broker, clients: ExitStack) -> None:
    svc = uid("svc")
    for n in range(MAX_CONNECTIONS_PER_USER + 1):
        connect(broker, clients, svc, f"p{n}", password=token(svc, Role.SERVICE))


def test_subscriptions_per_client(broker: Broker, clients: ExitStack) -> None:
    frank = connect(broker, clients, uid("frank"))
    filters = [f"presence/u{n}/+" for n in range(MAX_SUBSCRIPTIONS_PER_CLIENT - 2)] + frank.own_topics
    codes = frank.subscribe(*filters)
    assert not any(c.is_failure for c in codes)

    assert [c.value for c in frank.subscribe("presence/one-more/+")] == [SUBACK_FAILURE]
    # subscribing again to a held filter replaces it: allowed, and not counted twice
    assert not any(c.is_failure for c in frank.subscribe(filters[0], frank.own_topics[0]))
    # an unsubscribe makes room (the broker handles a client's packets in order)
    frank.paho.unsubscribe(filters[1])
    assert not any(c.is_failure for c in frank.subscribe("presence/one-more/+"))
    assert [c.value for c in frank.subscribe("presence/two-more/+")] == [SUBACK_FAILURE]

    # the count is per client: another client of the same user starts from nothing
    other = connect(broker, clients, frank.user, "other")
    assert not any(c.is_failure for c in other.subscribe("presence/two-more/+"))


def test_a_persistent_session_keeps_its_subscriptions_count(broker: Broker, clients: ExitStack) -> None:
    grace = uid("grace")
    first = connect(broker, clients, grace, "phone", clean_session=False)
    filters = [f"presence/u{n}/+" for n in range(MAX_SUBSCRIPTIONS_PER_CLIENT)]
    assert not any(c.is_failure for c in first.subscribe(*filters))
    first.close()

    # the broker kept the session and its subscriptions: a resumed session cannot add more
    resumed = connect(broker, clients, grace, "phone", clean_session=False)
    assert [c.value for c in resumed.subscribe("presence/one-more/+")] == [SUBACK_FAILURE]
    resumed.close()

    # a clean session drops them, and the count with them
    fresh = connect(broker, clients, grace, "phone")
    assert not any(c.is_failure for c in fresh.subscribe("presence/one-more/+"))


class Mqtt5:
    """A paho MQTT 5 client (amqtt speaks 3.1.1 only): no session expiry interval, so the broker
    ends its session when it disconnects, whatever clean_start said."""

    def __init__(self, port: int, user: str, device: str) -> None:
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}/{device}", protocol=mqtt.MQTTv5
        )
        self.paho.username_pw_set(user, token(user))
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.paho.on_connect = lambda _c, _u, _f, reason, _p: self._events.put(("connack", reason))
        self.paho.on_subscribe = lambda _c, _u, _m, codes, _p: self._events.put(("suback", codes))
        self.paho.connect("127.0.0.1", port, clean_start=False)
        self.paho.loop_start()
        assert not self._next("connack").is_failure

    def _next(self, kind: str) -> Any:
        got, value = self._events.get(timeout=TIMEOUT)
        assert got == kind, (got, value)
        return value

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        self.paho.subscribe([(f, 1) for f in filters])
        codes: list[ReasonCode] = self._next("suback")
        return codes

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)
def test_a_session_the_broker_did_not_keep_takes_no_count_along(broker: Broker) -> None:
    # MQTT 5 without a session expiry: the session ends at the disconnect, even though the
    # reconnect asks to resume it (clean_start false), and its subscriptions with it
    user = uid("heidi")
    first = Mqtt5(broker.port, user, "phone")
    try:
        filters = [f"presence/u{n}/+" for n in range(MAX_SUBSCRIPTIONS_PER_CLIENT)]
        assert not any(c.is_failure for c in first.subscribe(*filters))
    finally:
        first.close()
    again = Mqtt5(broker.port, user, "phone")
    try:
        assert not any(c.is_failure for c in again.subscribe("presence/one-more/+"))
    finally:
        again.close()
