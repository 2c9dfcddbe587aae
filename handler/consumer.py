"""The handler's MQTT side: consume inbound commands, publish results, ack after the commit.

paho's network thread only queues what arrives. A worker thread takes up to ``batch_size``
messages at a time, has the processor commit them in one transaction and publishes the results
with many QoS 1 messages in flight; an acker thread waits for the broker to take them and only
then acks the inbound messages, while the worker goes on with the next batch.

A handler that dies before its ack leaves the message with a broker that redelivers (a
persistent session on Mosquitto), and the processor's idempotency turns the redelivery into the
same result. The embedded amqtt broker lives in the same process, so there it dies too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from acl.topics import INBOUND_FILTER, PRESENCE_FILTER
from handler.processor import CommandProcessor, Inbound, Outbound
from messenger.exceptions import StoreUnavailable

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class _Received:
    item: Inbound
    mid: int
    qos: int


class HandlerConsumer:
    """Runs a :class:`CommandProcessor` behind a paho client (``manual_ack=True``)."""

    def __init__(
        self,
        client: mqtt.Client,
        processor: CommandProcessor,
        *,
        batch_size: int = 500,
        batch_wait_s: float = 0.002,
        subscriptions: Sequence[str] = (INBOUND_FILTER, PRESENCE_FILTER),
    ) -> None:
        self._client = client
        self._processor = processor
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._subscriptions = list(subscriptions)
        self._queue: queue.Queue[_Received] = queue.Queue()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._worker = threading.Thread(target=self._run, name="handler-worker", daemon=True)
        self._acks: queue.Queue[tuple[list[mqtt.MQTTMessageInfo], list[_Received]]] = queue.Queue(maxsize=8)
        self._acker = threading.Thread(target=self._run_acker, name="handler-acker", daemon=True)
        self.processed = 0
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect

    def start(self, host: str, port: int, *, wait_s: float = 10.0) -> None:
        """Connect, subscribe and start working; raises TimeoutError if not subscribed in ``wait_s``."""
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()
        self._worker.start()
        self._acker.start()
        if not self._subscribed.wait(wait_s):
            self.stop()
            raise TimeoutError(f"handler could not subscribe on {host}:{port} within {wait_s}s")

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect. Unacked messages will be redelivered."""
        self._stopping.set()
        for thread in (self._worker, self._acker):
            if thread.is_alive():
                thread.join(timeout=PUBLISH_TIMEOUT_S)
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes the socket pair of loop_start() only when collected; close it now
        self._client.reinitialise()

    # paho callbacks (network thread): keep them short

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object = None,
    ) -> None:
        if reason.is_failure:
            logger.error("handler connection refused by the broker: %s", reason)
            return
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        logger.info("handler connected; subscribing to %s", ", ".join(self._subscriptions))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _props: object = None,
    ) -> None:
        if any(r.is_failure for r in reasons):
            logger.error("broker refused a handler subscription: %s", reasons)
            return
        self._subscribed.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object = None,
    ) -> None:
        if not self._stopping.is_set():
            logger.warning("handler lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Received(Inbound(msg.topic, bytes(msg.payload), bool(msg.retain)), msg.mid, msg.qos))

    # worker thread

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch:
                self._handle(batch)

    def _next_batch(self) -> list[_Received]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._batch_wait_s
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        return batch

    def _handle(self, batch: list[_Received]) -> None:
        outputs = self._process_until_stored([r.item for r in batch])
        if outputs is None:
            return  # stopping with the database down: leave the batch unacked for redelivery
        infos = [self._client.publish(o.topic, o.payload, qos=1) for o in outputs]
        # The acker waits for the broker to take the publishes, then acks; meanwhile this
        # thread goes on with the next batch (bounded by the acker queue's size).
        self._acks.put((infos, batch))

    def _process_until_stored(self, items: list[Inbound]) -> list[Outbound] | None:
        backoff = 0.1
        while True:
            try:
                return self._processor.process(items)
            except StoreUnavailable as exc:
                if self._stopping.is_set():
                    return None
                logger.warning(
                    "database unavailable (%s); retrying a batch of %d in %.1fs", exc, len(items), backoff
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _run_acker(self) -> None:
        while True:
            try:
                infos, batch = self._acks.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set() and not self._worker.is_alive():
                    return
                continue
            self._wait_published(infos)
            for received in batch:
                if received.qos > 0:
                    self._client.ack(received.mid, received.qos)
            self.processed += len(batch)

    def _wait_published(self, infos: list[mqtt.MQTTMessageInfo]) -> None:
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        for info in infos:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(timeout=remaining)
            except RuntimeError:
                # not connected: paho keeps the publish queued and sends it once it reconnects
                break
