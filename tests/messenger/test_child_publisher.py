"""ChildPublisher: batches confirmed once the broker took them, a dead child replaced, and the
batches it took with it failed at once; without a broker, nothing is confirmed."""

from __future__ import annotations

import queue
import socket
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from messenger.actions import Kind, Outbound
from messenger.child_publisher import ChildPublisher
from tests.conftest import MQTT_HOST, MQTT_PORT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_batch_the_broker_never_took_is_not_confirmed() -> None:
    publisher = ChildPublisher(user="svc", token="t", name="test-child-publisher")
    publisher.start("127.0.0.1", _free_port(), wait_s=None)  # nobody listens there
    try:
        pending = publisher.publish_tracked([Outbound("users/a/messages", b"{}", Kind.MESSAGE)] * 3)
        assert len(pending) == 3
        assert pending.wait(0.5) is False
    finally:
        publisher.stop()
    # after stop, a new batch starts a new child rather than failing the caller
    publisher.start("127.0.0.1", _free_port(), wait_s=None)
    try:
        assert (
            publisher.publish_tracked([Outbound("users/a/messages", b"{}", Kind.MESSAGE)]).wait(0.2) is False
        )
    finally:
        publisher.stop()


# --- against the plain test broker (MESSENGER_TEST_MQTT, the machine's Mosquitto) ---------------


def _subscriber(topic: str) -> tuple[mqtt.Client, queue.Queue[bytes]]:
    got: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"child-pub-test-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, msg: got.put(bytes(msg.payload))
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    assert subscribed.wait(10), f"no SUBACK from the test broker at {MQTT_HOST}:{MQTT_PORT}"
    return client, got


def _batch(topic: str, *bodies: bytes) -> list[Outbound]:
    return [Outbound(topic, body, Kind.MESSAGE) for body in bodies]


def _received(got: queue.Queue[bytes], count: int) -> list[bytes]:
    return [got.get(timeout=10) for _ in range(count)]


def test_a_batch_is_confirmed_once_the_broker_took_it_and_reaches_a_subscriber() -> None:
    topic = f"users/child-{uuid.uuid4().hex[:8]}/messages"
    subscriber, got = _subscriber(topic)
    publisher = ChildPublisher(user="messenger-test", token="unused", name=f"child-{uuid.uuid4().hex[:6]}")
    publisher.start(MQTT_HOST, MQTT_PORT, wait_s=20)
    try:
        assert publisher.publish_tracked(_batch(topic, b"1", b"2", b"3")).wait(20) is True
        assert sorted(_received(got, 3)) == [b"1", b"2", b"3"]
    finally:
        publisher.stop()
        subscriber.disconnect()
        subscriber.loop_stop()


def test_after_the_child_dies_the_next_batch_gets_a_new_child_and_is_confirmed() -> None:
    topic = f"users/child-{uuid.uuid4().hex[:8]}/messages"
    subscriber, got = _subscriber(topic)
    publisher = ChildPublisher(user="messenger-test", token="unused", name=f"child-{uuid.uuid4().hex[:6]}")
    publisher.start(MQTT_HOST, MQTT_PORT, wait_s=20)
    try:
        first = publisher._process
        assert first is not None
        first.kill()
        first.join(10)
        # the new child must not fail the batch that made it start
        assert publisher.publish_tracked(_batch(topic, b"after")).wait(30) is True
        assert publisher._process is not first
        assert _received(got, 1) == [b"after"]
    finally:
        publisher.stop()
        subscriber.disconnect()
        subscriber.loop_stop()


def test_batches_a_dead_child_took_with_it_are_failed_when_it_dies_not_at_their_timeout() -> None:
    publisher = ChildPublisher(user="svc", token="t", name="test-child-publisher")
    publisher.start("127.0.0.1", _free_port(), wait_s=None)  # nobody listens: the batch stays pending
    try:
        pending = publisher.publish_tracked(_batch("users/a/messages", b"x"))
        child, reader = publisher._process, publisher._reader
        assert child is not None and reader is not None
        child.kill()
        child.join(10)
        reader.join(10)  # it saw the end of the child's pipe
        # settled by the reader as it ended: the result is there before anyone waits for it
        assert publisher._results.get(pending._batch) is False
        assert pending.wait(30) is False
    finally:
        publisher.stop()


def test_a_stopped_publisher_starts_no_new_child() -> None:
    publisher = ChildPublisher(user="svc", token="t", name="test-child-publisher")
    publisher.start("127.0.0.1", _free_port(), wait_s=None)
    publisher.stop()
    assert publisher.publish_tracked(_batch("users/a/messages", b"late")).wait(1) is False
    assert publisher._process is None
