"""The production path end to end: Mosquitto with the project's plugin, ``messenger api``, two
``messenger handler`` processes on a shared subscription and ``messenger bridge``, against
MariaDB and Redis (``scripts/topology.py`` starts them as separate processes).

Covers 1:1 delivery online and offline, blocks, refused CONNECTs, foreign topics, the shared
ACL vectors through the real broker, revocation kicks, two handlers splitting 5,000 messages,
a handler killed with SIGKILL mid-stream, and the gateway going away.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import func, select

from acl.principal import Role
from messenger.db import unit_of_work
from messenger.models import Message
from tests.conftest import token
from tests.e2e.deployed import Deployed, deploy
from tests.e2e.helpers import (
    HOST,
    TIMEOUT,
    Clients,
    any_message,
    api,
    message,
    not_authorized,
    stored_messages,
    wait_until,
)

ADMIN_KEY = "mosquitto-e2e-admin-" + uuid.uuid4().hex
VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent.parent / "acl" / "vectors.json").read_text(encoding="utf-8")
)
LOAD = 5_000
#: Bound on waiting for a load run to be stored and delivered (not a measurement).
LOAD_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    yield from deploy(request, {"MESSENGER_ADMIN_KEY": ADMIN_KEY})


@pytest.fixture(scope="module")
def stack(deployed: Deployed) -> Deployed:
    """The e2e ``clients`` fixture connects to ``stack``: here, the Mosquitto topology."""
    return deployed


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


# --- 1:1 messaging through Mosquitto ---


def test_online_delivery(clients: Clients) -> None:
    alice, bob = clients.connect(uid("alice")), clients.connect(uid("bob"))
    cid = alice.send(bob.user, "hello through mosquitto")
    assert alice.expect_ack(cid)["status"] == "sent"
    got = bob.inbox.expect(message(client_id=cid), what="the message").data
    assert (got["from"], got["to"], got["body"]) == (alice.user, bob.user, "hello through mosquitto")


def test_offline_delivery_on_coming_online(clients: Clients) -> None:
    alice = clients.connect(uid("alice"))
    bob_id = uid("bob")
    clients.new(bob_id, "phone").connect().close()  # provisions bob, then he is gone
    # Two handlers take turns with alice's commands, so only an ack orders two sends
    # (docs/protocol.md, "Ordering"): wait for each before the next.
    cids = []
    for n in range(3):
        cids.append(alice.send(bob_id, f"while you were away {n}"))
        alice.expect_ack(cids[-1])

    bob = clients.connect(bob_id, "phone", online=True)  # presence online: a handler pushes catch-up
    got = bob.inbox.expect_n(any_message(), 3, what="the three stored messages")
    assert [m.data["client_id"] for m in got] == cids


def test_blocked_messages_are_stored_acked_and_not_delivered(deployed: Deployed, clients: Clients) -> None:
    alice, bob = clients.connect(uid("alice")), clients.connect(uid("bob"))
    with api(deployed, bob.user) as rest:
        assert rest.put(f"/v1/blocks/{alice.user}").status_code in (200, 201)
    cid = alice.send(bob.user, "into the void")
    assert alice.expect_ack(cid)["status"] == "sent"
    bob.inbox.assert_nothing(message(client_id=cid), what="a blocked message")
    [row] = stored_messages(deployed, alice.user, cid)
    assert row.blocked


# --- refused connections and topics ---


def test_bad_token_and_foreign_client_id_are_refused(clients: Clients) -> None:
    alice_id = uid("alice")
    assert not_authorized(clients.try_connect(alice_id, "not-a-token", f"{alice_id}/x"))
    assert not_authorized(clients.try_connect(alice_id, token(alice_id), f"bob-{alice_id}/x"))
    assert not_authorized(clients.try_connect(alice_id, token(uid("mallory")), f"{alice_id}/x"))
    assert not not_authorized(clients.try_connect(alice_id, token(alice_id), f"{alice_id}/x"))


def test_a_password_that_is_no_token_locks_nobody_else_out(clients: Clients) -> None:
    # not UTF-8, not a JWT: refused by the plugin itself, and the gateway is not marked down
    mallory = uid("mallory")
    garbage = clients.new(mallory)
    garbage.paho.username_pw_set(mallory, b"\xff\xfe not a token")  # raw bytes on the wire
    with pytest.raises(AssertionError, match="refused"):
        garbage.connect()
    newcomer = uid("dave")  # uncached: needs the gateway right now
    assert not not_authorized(clients.try_connect(newcomer, token(newcomer), f"{newcomer}/x"))


def test_foreign_topics_are_refused(clients: Clients) -> None:
    alice, bob = clients.connect(uid("alice")), clients.connect(uid("bob"))
    codes = alice.subscribe(f"users/{bob.user}/messages", "#", f"inbound/{bob.user}")
    assert all(c.is_failure for c in codes), codes
    # a forged command in bob's name, and a forged delivery to bob: neither reaches anyone
    alice.publish(
        f"inbound/{bob.user}", json.dumps({"type": "message", "id": "forged", "to": alice.user, "body": "x"})
    )
    alice.publish(f"users/{bob.user}/messages", b'{"type":"message","body":"forged"}')
    bob.inbox.assert_nothing(any_message(), what="a forged delivery")
    alice.inbox.assert_nothing(any_message(), what="a message forged in bob's name")


class V5Client:
    """An MQTT 5 client: Mosquitto answers a refused publish with PUBACK reason 0x87."""

    def __init__(self, port: int, user: str, role: Role, client_id: str) -> None:
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=False
        )
        self.paho.username_pw_set(user, token(user, role))
        self.connack: ReasonCode | None = None
        self.acks: dict[int, list[ReasonCode]] = {}
        self._changed = threading.Condition()
        self.paho.on_connect = self._on_connect
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_disconnect = self._on_disconnect
        self.paho.connect(HOST, port)
        self.paho.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")

    def _wait(self, ready: Any, what: str) -> None:
        with self._changed:
            assert self._changed.wait_for(ready, TIMEOUT), f"no {what} within {TIMEOUT}s"

    def _on_connect(self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object = None) -> None:
        with self._changed:
            self.connack = reason
            self._changed.notify_all()

    def _on_disconnect(
        self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object = None
    ) -> None:
        with self._changed:
            if self.connack is None:
                self.connack = reason
            self._changed.notify_all()

    def _on_publish(self, _c: object, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        with self._changed:
            self.acks[mid] = [reason]
            self._changed.notify_all()

    def _on_subscribe(self, _c: object, _u: object, mid: int, reasons: list[ReasonCode], _p: object) -> None:
        with self._changed:
            self.acks[mid] = list(reasons)
            self._changed.notify_all()

    def allowed(self, action: str, topic: str, retain: bool) -> bool:
        if action == "publish":
            mid = self.paho.publish(topic, b"vector", qos=1, retain=retain).mid
        else:
            mid = self.paho.subscribe(topic, qos=1)[1]
        self._wait(lambda: mid in self.acks, f"{action} ack for {topic!r}")
        # 0x10 "no matching subscribers" is a success; 0x87 "not authorized" a refusal
        return not self.acks[mid][0].is_failure

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def _sendable(row: dict[str, Any]) -> bool:
    """paho refuses to send a publish to a filter or to an empty topic, and an empty
    subscription; those rows are checked against the C rules only."""
    topic = row["topic"]
    if row["action"] == "publish":
        return bool(topic) and "+" not in topic and "#" not in topic
    return row["action"] == "connect" or bool(topic)


@pytest.mark.parametrize(
    "row",
    [r for r in VECTORS if r["action"] in ("connect", "publish", "subscribe") and _sendable(r)],
    ids=lambda r: (
        f"{r['user']} {r['action']} {r['topic'] or r['client_id']!r}{' retain' if r['retain'] else ''}"
    ),
)
def test_shared_acl_vectors_through_mosquitto(deployed: Deployed, row: dict[str, Any]) -> None:
    """Each connect/publish/subscribe vector, asked of the real broker running the plugin.

    (Receive and Will rows, and rows paho will not send, are checked against the plugin's C
    rules in tests/broker/test_mosquitto_rules.py.)
    """
    client = V5Client(deployed.mqtt_port, row["user"], Role(row["role"]), row["client_id"] or "x")
    try:
        assert client.connack is not None
        if row["action"] == "connect":
            assert (not client.connack.is_failure) is row["allow"], client.connack
            return
        assert not client.connack.is_failure, client.connack
        assert client.allowed(row["action"], row["topic"], row["retain"]) is row["allow"]
    finally:
        client.close()


# --- revocation ---


def test_revocation_kicks_the_client_and_refuses_its_reconnect(deployed: Deployed, clients: Clients) -> None:
    alice_id = uid("alice")
    password = token(alice_id)
    alice = clients.connect(alice_id, password=password)
    watcher = clients.connect(uid("watcher"), subscribe=False)
    watcher.subscribe(f"presence/{alice_id}/+")
    alice.go_online()

    response = httpx.post(
        f"{deployed.api_url}/v1/admin/revocations",
        json={"user": alice_id},
        headers={"X-Admin-Key": ADMIN_KEY},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    assert alice.disconnected.wait(TIMEOUT), "the broker did not disconnect the revoked client"
    # with_will: the Last Will tells everyone the device went offline
    watcher.inbox.expect(
        lambda r: r.topic == f"presence/{alice_id}/t" and r.payload == b"offline", what="alice's Last Will"
    )
    assert not_authorized(clients.try_connect(alice_id, password, f"{alice_id}/t"))
    rest = httpx.get(f"{deployed.api_url}/v1/me", headers={"Authorization": f"Bearer {password}"})
    assert rest.status_code == 401


# --- handlers sharing the load ---


def _publish_all(client: mqtt.Client, topic: str, payloads: list[bytes]) -> None:
    infos = [client.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(LOAD_TIMEOUT)
        assert info.is_published()


def _load_clients(clients: Clients, sinks: int) -> tuple[mqtt.Client, list[Any], list[bytes], str]:
    """A sender (a raw paho client, many publishes in flight), ``sinks`` subscribed recipients,
    and LOAD commands spread over them."""
    sender_id = uid("load")
    recipients = [clients.connect(uid("sink")) for _ in range(sinks)]
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{sender_id}/bench", protocol=mqtt.MQTTv311)
    sender.username_pw_set(sender_id, token(sender_id))
    sender.max_inflight_messages_set(200)
    sender.max_queued_messages_set(0)
    sender.connect(HOST, clients.stack.mqtt_port)
    sender.loop_start()
    payloads = [
        json.dumps(
            {"type": "message", "id": f"m{n}", "to": recipients[n % sinks].user, "body": f"load {n}"}
        ).encode()
        for n in range(LOAD)
    ]
    return sender, recipients, payloads, sender_id


def _delivered(recipients: list[Any]) -> set[str]:
    return {m.data["client_id"] for r in recipients for m in r.inbox.matching(any_message())}


def _stored(deployed: Deployed, sender_id: str) -> tuple[int, int]:
    with unit_of_work(deployed.sessions) as session:
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Message.client_msg_id))).where(
                Message.sender_id == sender_id
            )
        ).one()
    return int(rows), int(distinct)


def test_two_handlers_share_5000_messages(deployed: Deployed, clients: Clients) -> None:
    topology = deployed.topology
    sender, recipients, payloads, sender_id = _load_clients(clients, sinks=5)
    try:
        _publish_all(sender, f"inbound/{sender_id}", payloads)
        wait_until(lambda: len(_delivered(recipients)) == LOAD, LOAD_TIMEOUT, "every message delivered")
    finally:
        sender.disconnect()
        sender.loop_stop()
    assert _stored(deployed, sender_id) == (LOAD, LOAD)  # each stored exactly once

    # both handlers did work: each says how many commands it handled when it stops
    for n in range(1, topology.handlers + 1):
        topology.kill(f"handler-{n}", signal.SIGTERM)
    counts = {f"handler-{n}": topology.handled(f"handler-{n}") or 0 for n in range(1, topology.handlers + 1)}
    for n in range(1, topology.handlers + 1):
        topology.start_handler(n)
    assert all(count > 0 for count in counts.values()), counts
    assert sum(counts.values()) >= LOAD, counts


def test_a_handler_killed_mid_stream_loses_nothing(deployed: Deployed, clients: Clients) -> None:
    topology = deployed.topology
    sender, recipients, payloads, sender_id = _load_clients(clients, sinks=5)
    publishing = threading.Thread(target=_publish_all, args=(sender, f"inbound/{sender_id}", payloads))
    try:
        publishing.start()
        wait_until(lambda: len(_delivered(recipients)) >= LOAD // 5, LOAD_TIMEOUT, "a fifth delivered")
        topology.kill("handler-1", signal.SIGKILL)  # no goodbye: unacked commands stay with the broker
        time.sleep(0.5)
        topology.start_handler(1)  # same name: it resumes its persistent session
        publishing.join(LOAD_TIMEOUT)
        assert not publishing.is_alive()
        wait_until(lambda: len(_delivered(recipients)) == LOAD, LOAD_TIMEOUT, "every message delivered")
    finally:
        sender.disconnect()
        sender.loop_stop()
    assert _stored(deployed, sender_id) == (LOAD, LOAD)  # redeliveries stored once


def test_after_a_broker_restart_resent_commands_are_handled_once(
    deployed: Deployed, clients: Clients
) -> None:
    """Mosquitto 2.0 does not restore shared subscriptions from its persistence file, so what
    is sent between a broker restart and the handlers' return has no subscriber. The protocol's
    answer (docs/protocol.md): resend with the same id until the ack comes; each is stored once."""
    topology = deployed.topology
    for n in range(1, topology.handlers + 1):
        topology.kill(f"handler-{n}", signal.SIGKILL)
    topology.kill("mosquitto", signal.SIGTERM)
    topology.start_mosquitto()
    alice, bob = clients.connect(uid("alice")), clients.connect(uid("bob"))
    cids = [alice.send(bob.user, f"sent while no handler ran {n}") for n in range(3)]
    for n in range(1, topology.handlers + 1):
        topology.start_handler(n)
    for n, cid in enumerate(cids):
        alice.send(bob.user, f"sent while no handler ran {n}", client_msg_id=cid)  # the resend
        alice.expect_ack(cid)
        bob.inbox.expect(message(client_id=cid), what=f"message {n}")
        assert len(stored_messages(deployed, alice.user, cid)) == 1


# --- the gateway going away ---


def test_gateway_down_refuses_new_connections_and_keeps_established_ones(
    deployed: Deployed, clients: Clients
) -> None:
    topology = deployed.topology
    alice, bob = clients.connect(uid("alice")), clients.connect(uid("bob"))
    topology.kill("api", signal.SIGTERM)
    try:
        newcomer = uid("carol")
        assert not_authorized(clients.try_connect(newcomer, token(newcomer), f"{newcomer}/x"))
        cid = alice.send(bob.user, "still here")
        alice.expect_ack(cid)
        bob.inbox.expect(message(client_id=cid), what="a message between established clients")
        assert "gateway unreachable" in topology.log("mosquitto").read_text()
    finally:
        topology.start_api()
    newcomer = uid("dave")
    wait_until(
        lambda: not not_authorized(clients.try_connect(newcomer, token(newcomer), f"{newcomer}/x")),
        what="connections accepted once the gateway is back",
    )
