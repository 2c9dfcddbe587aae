"""Mirror retained presence (and Last Wills) from the broker into the presence store.

Devices publish ``online`` to ``presence/{uid}/{device}`` (retained) and leave a Last Will of
``offline`` on the same topic, so the broker tells the bridge when a device vanishes. The
bridge records each device's state with this broker node's id and the time it changed.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from acl.topics import PRESENCE_FILTER, parse_presence_topic
from messenger.exceptions import StoreUnavailable
from messenger.metrics import Metrics
from messenger.mqtt import ServiceSubscriber
from messenger.presence import PresenceStore
from messenger.protocol import parse_presence

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class PresenceChange:
    user_id: str
    device: str
    online: bool
    at: datetime


def presence_change(topic: str, payload: bytes, at: datetime) -> PresenceChange | None:
    """The change a presence message carries, or None for anything else."""
    parsed = parse_presence_topic(topic)
    online = parse_presence(payload)
    if parsed is None or online is None:
        return None
    return PresenceChange(parsed[0], parsed[1], online, at)


class PresenceBridge(ServiceSubscriber):
    """Subscribes to ``presence/+/+`` and writes every change to a :class:`PresenceStore`, in order."""

    role = "presence bridge"

    def __init__(
        self,
        client: mqtt.Client,
        store: PresenceStore,
        *,
        node_id: str,
        subscription: str = PRESENCE_FILTER,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(client, [subscription])
        self._store = store
        self._metrics = metrics
        self._node_id = node_id
        self._queue: queue.Queue[tuple[PresenceChange, int, int]] = queue.Queue()
        self._add_thread(self._run, "presence-bridge")
        self.applied = 0

    def start(self, host: str, port: int, *, wait_s: float | None = 10.0) -> None:
        """Forget what this node recorded before (no Will fires for a restarted broker), then subscribe."""
        try:
            reset = self._store.reset_node(self._node_id, datetime.now(UTC))
        except StoreUnavailable as exc:
            logger.warning("could not reset the presence of node %s: %s", self._node_id, exc)
        else:
            if reset:
                logger.info(
                    "marked %d devices of node %s offline until they announce again", reset, self._node_id
                )
        super().start(host, port, wait_s=wait_s)

    def _on_message(self, client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            change = presence_change(msg.topic, bytes(msg.payload), datetime.now(UTC))
        except Exception:  # paho would re-raise it and end its network thread
            logger.exception("could not read a presence message on %s", msg.topic)
            change = None
        if change is None:
            logger.info("ignoring a malformed presence message on %s", msg.topic)
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            return
        self._queue.put((change, msg.mid, msg.qos))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                change, mid, qos = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if self._apply(change) and qos:
                self._client.ack(mid, qos)

    def _apply(self, change: PresenceChange) -> bool:
        backoff = 0.1
        while True:
            try:
                self._store.set_device(
                    change.user_id, change.device, online=change.online, node=self._node_id, at=change.at
                )
                self.applied += 1
                if self._metrics is not None:
                    self._metrics.presence_applied.inc()
                return True
            except StoreUnavailable as exc:
                if self._stopping.is_set():
                    return False
                if self._metrics is not None:
                    self._metrics.errors.labels("bridge", "presence_store").inc()
                logger.warning("presence store unavailable (%s); retrying in %.1fs", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
