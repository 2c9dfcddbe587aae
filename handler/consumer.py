"""The handler's MQTT side: consume inbound commands, publish results, ack after the commit.

paho's network thread only queues what arrives. A worker thread takes up to ``batch_size``
messages at a time, has the processor commit them in one transaction and publishes the results
with many QoS 1 messages in flight; an acker thread waits for the broker to take them and only
then acks the inbound messages, while the worker goes on with the next batch.

A handler that dies before its ack leaves the message with a broker that redelivers (a
persistent session on Mosquitto), and the processor's idempotency turns the redelivery into the
same result. The embedded amqtt broker lives in the same process, so there it dies too. A dead
handler that is not started again has its session emptied by another (``leave=True``, driven
by :mod:`handler.takeover`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from acl.topics import INBOUND_FILTER, PRESENCE_FILTER
from handler.processor import CommandProcessor, Inbound, Work
from messenger.actions import Outbound
from messenger.exceptions import StoreUnavailable
from messenger.metrics import Metrics
from messenger.mqtt import ServiceSubscriber

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
MAX_OUTSTANDING = 20_000
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class _Received:
    item: Inbound
    mid: int
    qos: int
    connection: int  # the ack is only meaningful on the connection the message came on


class HandlerConsumer(ServiceSubscriber):
    """Runs a :class:`CommandProcessor` behind a paho client (``manual_ack=True``)."""

    role = "handler"

    def __init__(
        self,
        client: mqtt.Client,
        processor: CommandProcessor,
        *,
        batch_size: int = 500,
        batch_wait_s: float = 0.002,
        subscriptions: Sequence[str] = (INBOUND_FILTER, PRESENCE_FILTER),
        metrics: Metrics | None = None,
        session_expiry_s: int | None = None,
        receive_maximum: int | None = None,
        leave: bool = False,
    ) -> None:
        super().__init__(
            client,
            subscriptions,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
            leave=leave,
        )
        self._processor = processor
        self._metrics = metrics
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._queue: queue.Queue[_Received] = queue.Queue()
        self._acks: queue.Queue[tuple[list[mqtt.MQTTMessageInfo], list[_Received]]] = queue.Queue()
        # publishes handed to paho and not yet confirmed: bounded, so a burst of catch-ups
        # cannot exhaust paho's 65,535 message ids or its memory
        self._outstanding = 0
        self._outstanding_changed = threading.Condition()
        self._add_thread(self._run, "handler-worker")
        self._add_thread(self._run_acker, "handler-acker")
        self.processed = 0
        # commands received and not yet settled (acked, or given up and left to the broker)
        self._count_lock = threading.Lock()
        self._unsettled = 0
        self.given_up = 0
        self._last_received = time.monotonic()
        if metrics is not None and not leave:  # the gauges describe the handler's own session
            metrics.handler_queue.set_function(lambda: float(self._queue.qsize()))
            metrics.handler_unconfirmed.set_function(lambda: float(self._outstanding))

    def stop(self, join_timeout: float = 30.0, *, end_session: bool = False) -> bool:
        """Leave the subscriptions first, so that the other handlers of a shared group take the
        stream and the queue drains; then finish and ack what is in hand, and disconnect.

        ``end_session``: and end the session if every command received was acked (none left
        unacked for redelivery); returns whether it was ended."""
        if self.unsubscribe():
            logger.info("handler unsubscribed; finishing the %d commands in hand", self._queue.qsize())
        return super().stop(join_timeout, end_session=end_session)

    def _may_end_session(self) -> bool:
        with self._count_lock:
            return self._unsettled == 0 and self.given_up == 0

    # paho's network thread: keep it short

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        item = Inbound(msg.topic, bytes(msg.payload), bool(msg.retain))
        with self._count_lock:
            self._unsettled += 1
            self._last_received = time.monotonic()
        self._queue.put(_Received(item, msg.mid, msg.qos, self.connection))
        if self._metrics is not None:
            self._metrics.commands_received.inc()

    # worker thread

    def _run(self) -> None:
        # On stop, drain what paho already took from the broker before leaving.
        while not (self._stopping.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self._handle(batch)
            except Exception:
                # never let one batch end the worker; unacked, the broker may redeliver it
                self._count_error("batch")
                logger.exception("handler failed on a batch of %d; leaving it unacked", len(batch))
                self._settle(len(batch), given_up=True)

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
        started = time.perf_counter()
        outputs = self._process_until_stored([r.item for r in batch])
        if outputs is None:
            # stopping with the database down: leave the batch unacked for redelivery
            self._settle(len(batch), given_up=True)
            return
        if self._metrics is not None:
            self._metrics.handler_batch_size.observe(len(batch))
            self._metrics.handler_batch_seconds.observe(time.perf_counter() - started)
        self._reserve(len(outputs))
        infos = [self._client.publish(o.topic, o.payload, qos=1) for o in outputs]
        if self._metrics is not None:
            self._metrics.mqtt_published.labels("handler").inc(len(infos))
        refused = [info for info in infos if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE]
        if refused:
            self._count_error("publish_refused")
            logger.error(
                "paho refused %d publishes (its queue is full); the batch stays unacked", len(refused)
            )
            self._release(len(outputs))
            self._settle(len(batch), given_up=True)
            return
        # The acker waits for the broker to take the publishes, then acks; meanwhile this
        # thread goes on with the next batch (bounded by MAX_OUTSTANDING publishes).
        self._acks.put((infos, batch))

    def _reserve(self, count: int) -> None:
        """Wait until ``count`` more publishes fit under MAX_OUTSTANDING (one batch always fits)."""
        with self._outstanding_changed:
            self._outstanding_changed.wait_for(
                lambda: self._outstanding == 0 or self._outstanding + count <= MAX_OUTSTANDING
            )
            self._outstanding += count

    def _release(self, count: int) -> None:
        with self._outstanding_changed:
            self._outstanding -= count
            self._outstanding_changed.notify_all()

    def _process_until_stored(self, items: list[Inbound]) -> list[Outbound] | None:
        backoff = 0.1
        work: Work | None = None
        while True:
            try:
                if work is None:  # parsed and rate-limited once, however often it is retried
                    work = self._processor.prepare(items)
                return self._processor.commit(work)
            except StoreUnavailable as exc:
                if self._stopping.is_set():
                    return None
                self._count_error("database")
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
                if self._stopping.is_set() and not self._threads[0].is_alive():
                    return
                continue
            published = self._wait_published(infos)
            self._release(len(infos))
            if not published:
                # outputs not taken by the broker: no ack, so a broker with a persistent session
                # redelivers the commands and the idempotent processor publishes them again
                self._count_error("publish_unconfirmed")
                logger.warning("publishes of a batch of %d not confirmed; leaving it unacked", len(batch))
                self._settle(len(batch), given_up=True)
                continue
            for received in batch:
                # after a reconnect the broker redelivers what was not acked, under new ids;
                # an old id could ack an unrelated message, so it is dropped instead
                if received.qos > 0 and received.connection == self.connection:
                    self._client.ack(received.mid, received.qos)
            self._settle(len(batch))
            self.processed += len(batch)
            if self._metrics is not None:
                self._metrics.commands_acked.inc(len(batch))

    def _settle(self, count: int, *, given_up: bool = False) -> None:
        with self._count_lock:
            self._unsettled -= count
            if given_up:
                self.given_up += count

    def settled(self, idle_s: float) -> bool:
        """Every command received is acked or given up, and none came for ``idle_s`` seconds:
        for a session being emptied (``leave=True``), what the broker held has all come."""
        with self._count_lock:
            return self._unsettled == 0 and time.monotonic() - self._last_received >= idle_s

    def _count_error(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.errors.labels("handler", kind).inc()

    def _wait_published(self, infos: list[mqtt.MQTTMessageInfo]) -> bool:
        """True when the broker took every publish within the timeout."""
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        for info in infos:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                info.wait_for_publish(timeout=remaining)
            except (RuntimeError, ValueError):
                # not connected (paho sends it once it reconnects) or refused by paho
                return False
            if not info.is_published():
                return False
        return True
