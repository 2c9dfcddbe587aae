"""The presence bridge: parsing presence messages, and applying them to a store in order.

A whole bridge against a real broker is covered by the end-to-end tests. Here the bridge gets a
real paho client that never reaches a broker (its port is closed): messages are handed to it
through the callbacks it installed on the client, as paho's network loop would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from bridge.bridge import PresenceBridge, PresenceChange, presence_change
from messenger.constants import DEV_SECRET
from messenger.mqtt import service_client
from messenger.presence import PresenceStore, RedisPresenceStore

MakeUid = Callable[[str], str]
AT = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


# --- presence_change ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b"", False),
        (b'{"status": "online"}', True),
        (b" Offline \n", False),
    ],
)
def test_presence_change_valid(payload: bytes, online: bool) -> None:
    assert presence_change("presence/alice/phone-1", payload, AT) == PresenceChange(
        "alice", "phone-1", online, AT
    )


@pytest.mark.parametrize(
    "topic",
    [
        "presence/alice",
        "presence/alice/phone/extra",
        "presence/+/phone",
        "presence/alice/#",
        "presence//phone",
        "presence/alice/",
        "presence/al ice/phone",
        "presence/alice/ph/one",
        "presence/ålice/phone",
        "Presence/alice/phone",
        "inbound/alice",
        "users/alice/events",
        "$SYS/presence/alice/phone",
        "",
    ],
)
def test_presence_change_bad_topic(topic: str) -> None:
    assert presence_change(topic, b"online", AT) is None


@pytest.mark.parametrize(
    "payload", [b"away", b"1", b'{"status": "busy"}', b"{broken", b'["online"]', b"\xff\xfe"]
)
def test_presence_change_bad_payload(payload: bytes) -> None:
    assert presence_change("presence/alice/phone", payload, AT) is None


# --- the bridge writes changes in order ---


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _subscribed(client: mqtt.Client) -> None:
    """What paho does when the broker grants the subscription (the bridge then counts as started)."""
    client.on_subscribe(client, None, 1, [ReasonCode(PacketTypes.SUBACK, identifier=1)], None)


def _deliver(client: mqtt.Client, topic: str, payload: bytes, mid: int) -> None:
    message = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    message.payload = payload
    message.qos = 1
    client.on_message(client, None, message)


def _wait_for(predicate: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(600):
        if predicate():
            return
        done.wait(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
def client() -> Iterator[mqtt.Client]:
    client = service_client(user="svc-bridge-test", token=DEV_SECRET, name="bridge-test", manual_ack=True)
    yield client
    # paho keeps the socket pair of loop_start() open after loop_stop() until the client is
    # garbage-collected, and the client and the bridge form a cycle: the sockets could then be
    # finalized first (a ResourceWarning, an error here). reinitialise() closes them now.
    client.reinitialise()


@pytest.fixture
def bridge(client: mqtt.Client, presence_store: PresenceStore) -> Iterator[PresenceBridge]:
    bridge = PresenceBridge(client, presence_store, node_id="node-test")
    _subscribed(client)
    bridge.start("127.0.0.1", _closed_port(), wait_s=5)
    yield bridge
    bridge.stop()


def test_changes_are_applied_in_arrival_order(
    bridge: PresenceBridge, client: mqtt.Client, presence_store: PresenceStore, make_uid: MakeUid
) -> None:
    users = [make_uid("ord") for _ in range(3)]
    devices = ["phone", "laptop"]
    mid = 0
    # many flips per device; whatever the last state of each device is must be what the store holds
    for round_ in range(40):
        for uid in users:
            for device in devices:
                mid += 1
                _deliver(
                    client, f"presence/{uid}/{device}", b"online" if round_ % 2 == 0 else b"offline", mid
                )
    # the last word: phone online, laptop offline, for every user
    before_last = datetime.now(UTC)
    for uid in users:
        mid += 1
        _deliver(client, f"presence/{uid}/phone", b"online", mid)
        mid += 1
        _deliver(client, f"presence/{uid}/laptop", b"offline", mid)
    after_last = datetime.now(UTC)

    _wait_for(lambda: bridge.applied == mid)
    for uid in users:
        info = presence_store.get(uid)
        assert [(d.device, d.node) for d in info.devices] == [("phone", "node-test")]
        # the final online/offline pair was applied last, not overtaken by an older change
        assert info.since is not None and before_last <= info.since <= after_last
        assert info.last_seen is not None and before_last <= info.last_seen <= after_last


def test_malformed_messages_are_skipped(
    bridge: PresenceBridge, client: mqtt.Client, presence_store: PresenceStore, make_uid: MakeUid
) -> None:
    uid = make_uid("skip")
    _deliver(client, f"presence/{uid}/phone", b"maybe", 1)
    _deliver(client, f"presence/{uid}", b"online", 2)
    _deliver(client, f"presence/{uid}/tablet", b"online", 3)
    _wait_for(lambda: bridge.applied == 1)
    assert [d.device for d in presence_store.get(uid).devices] == ["tablet"]
    assert bridge.applied == 1


def test_stop_while_the_store_is_down_does_not_hang(client: mqtt.Client, make_uid: MakeUid) -> None:
    store = RedisPresenceStore(f"redis://127.0.0.1:{_closed_port()}/0")
    bridge = PresenceBridge(client, store, node_id="node-test")
    _subscribed(client)
    bridge.start("127.0.0.1", _closed_port(), wait_s=5)
    try:
        _deliver(client, f"presence/{make_uid('down')}/phone", b"online", 1)
    finally:
        bridge.stop()
        store.close()
    assert bridge.applied == 0


def test_start_times_out_without_a_broker(client: mqtt.Client) -> None:
    from messenger.presence import MemoryPresenceStore

    bridge = PresenceBridge(client, MemoryPresenceStore(), node_id="node-test")
    with pytest.raises(TimeoutError, match="could not subscribe"):
        bridge.start("127.0.0.1", _closed_port(), wait_s=0.5)


def test_start_forgets_what_this_node_recorded_before(
    client: mqtt.Client, presence_store: PresenceStore, make_uid: MakeUid
) -> None:
    """A restarted broker fires no Last Will: the bridge resets its node, retained presence refills it."""
    uid = make_uid("stale")
    presence_store.set_device(uid, "phone", online=True, node="node-test", at=AT)
    presence_store.set_device(uid, "laptop", online=True, node="another-node", at=AT)
    bridge = PresenceBridge(client, presence_store, node_id="node-test")
    _subscribed(client)
    bridge.start("127.0.0.1", _closed_port(), wait_s=5)
    try:
        assert [d.device for d in presence_store.get(uid).devices] == ["laptop"]
        assert presence_store.get(uid).last_seen is not None
    finally:
        bridge.stop()
