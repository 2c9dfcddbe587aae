"""paho-mqtt clients for the service account (the handler and the bridge)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

if TYPE_CHECKING:
    from messenger.actions import Outbound

logger = logging.getLogger(__name__)


def service_client(
    *,
    user: str,
    token: str,
    name: str,
    clean_session: bool = True,
    manual_ack: bool = False,
    max_inflight: int = 1000,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    reconnect: bool = True,
) -> mqtt.Client:
    """A paho client logged in as the service account, with client id ``{user}/{name}``.

    Many QoS 1 messages may be in flight at once, and nothing is dropped while the broker is
    away: paho queues publishes until it reconnects. ``reconnect=False``: once the connection
    is lost it stays lost (a client that borrowed another's session must not take it back).
    """
    client_id = f"{user}/{name}" if name else f"{user}/{uuid.uuid4().hex[:12]}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session if protocol != MQTTProtocolVersion.MQTTv5 else None,
        protocol=protocol,
        manual_ack=manual_ack,
        reconnect_on_failure=reconnect,
    )
    client.username_pw_set(user, token)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.on_socket_open = no_delay
    return client


def no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """paho ``on_socket_open``: TCP_NODELAY. paho leaves Nagle on, and then a small publish sent
    while an earlier one is unacknowledged waits for the broker's delayed ACK (40 ms on Linux)."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ServiceSubscriber:
    """A service client subscribed to a few filters, with worker threads of its own.

    :meth:`start` connects, subscribes and waits for the SUBACK; it re-subscribes after every
    reconnect. :meth:`stop` lets the workers finish, then disconnects. Subclasses handle
    ``_on_message`` (on paho's network thread: keep it short) and add their threads with
    :meth:`_add_thread`.

    Over MQTT 5, ``session_expiry_s`` asks for a persistent session (clean start false): the
    broker keeps the subscriptions and queues QoS 1 messages while the client is away, and
    redelivers those it never acked. ``receive_maximum`` bounds the unacked messages the broker
    sends at once.

    ``leave=True`` resumes a session to empty it: on connect it unsubscribes from
    ``subscriptions`` instead of subscribing, so the broker sends what the session holds and
    nothing new; it is ready once the broker confirmed. ``stop(end_session=True)`` then ends the
    session (MQTT 5: Session Expiry Interval 0 on DISCONNECT).
    """

    role = "service client"

    def __init__(
        self,
        client: mqtt.Client,
        subscriptions: Sequence[str],
        *,
        session_expiry_s: int | None = None,
        receive_maximum: int | None = None,
        leave: bool = False,
    ) -> None:
        self._client = client
        self._subscriptions = list(subscriptions)
        self._leave = leave
        #: set when the connection is lost while not stopping
        self.lost = threading.Event()
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        #: Counts successful connections: a message id is only valid on the connection it came on.
        self.connection = 0
        self._unsubscribed = threading.Event()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._threads: list[threading.Thread] = []
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_unsubscribe = self._on_unsubscribe
        client.on_connect_fail = self._on_connect_fail
        self._where = ""
        self._waiting_logged = False

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    @property
    def ready(self) -> bool:
        """Connected and, for a subscriber, subscribed (what a readiness probe asks)."""
        return self._client.is_connected() and self._subscribed.is_set()

    def _add_thread(self, target: Callable[[], None], name: str) -> None:
        self._threads.append(threading.Thread(target=target, name=name, daemon=True))

    def start(self, host: str, port: int, *, wait_s: float | None = 10.0) -> None:
        """Connect and subscribe; raises TimeoutError if the broker has not granted it in ``wait_s``.

        With ``wait_s=None`` it returns at once and paho keeps trying in the background (a
        process that starts before its broker, or before the gateway the broker asks).
        """
        self._where = f"{host}:{port}"
        if self._client.protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self._session_expiry_s:
                properties.SessionExpiryInterval = self._session_expiry_s
            if self._receive_maximum:
                properties.ReceiveMaximum = self._receive_maximum
            self._client.connect_async(
                host, port, keepalive=30, clean_start=not self._session_expiry_s, properties=properties
            )
        else:
            self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()
        for thread in self._threads:
            thread.start()
        if wait_s is None:
            return
        if not self._subscribed.wait(wait_s):
            self.stop()
            raise TimeoutError(f"{self.role} could not subscribe on {host}:{port} within {wait_s}s")

    def stop(self, join_timeout: float = 30.0, *, end_session: bool = False) -> bool:
        """Let the workers finish, then disconnect. ``end_session``: and end the session (MQTT 5)
        if :meth:`_may_end_session` agrees once they finished; returns whether it was ended."""
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=join_timeout)
        ended = (
            end_session
            and self._client.protocol == MQTTProtocolVersion.MQTTv5
            and self._client.is_connected()
            and self._may_end_session()
        )
        if ended:
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
            self._client.disconnect(properties=properties)
        else:
            self._client.disconnect()
        self._client.loop_stop()
        # paho closes the socket pair of loop_start() only when collected; close it now
        self._client.reinitialise()
        return ended

    def _may_end_session(self) -> bool:
        """Whether nothing the session holds is still needed (a subclass that acks knows)."""
        return True

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: object = None,
    ) -> None:
        if reason.is_failure:
            logger.error("%s refused by the broker: %s", self.role, reason)
            return
        self._waiting_logged = False
        self.connection += 1
        if not self._subscriptions:  # a publisher: connected is ready
            logger.info("%s connected", self.role)
            self._subscribed.set()
            return
        if self._leave:
            client.unsubscribe(self._subscriptions)
            logger.info("%s connected; leaving %s", self.role, ", ".join(self._subscriptions))
            return
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        logger.info("%s connected; subscribing to %s", self.role, ", ".join(self._subscriptions))

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        # paho retries with backoff (reconnect_delay_set); say once what we wait for, not every try
        if not self._waiting_logged and not self._stopping.is_set():
            logger.warning("%s is waiting for the broker at %s (retrying)", self.role, self._where)
            self._waiting_logged = True

    def unsubscribe(self, wait_s: float = 5.0) -> bool:
        """Leave the subscriptions (a shared group stops sending here); True once the broker confirmed."""
        if not self._subscriptions or not self._client.is_connected():
            return False
        self._unsubscribed.clear()
        self._client.unsubscribe(self._subscriptions)
        return self._unsubscribed.wait(wait_s)

    def _on_unsubscribe(self, *_args: object) -> None:
        self._unsubscribed.set()
        if self._leave:
            self._subscribed.set()  # ready: what it holds comes, nothing new

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _props: object = None,
    ) -> None:
        if any(r.is_failure for r in reasons):
            logger.error("broker refused a subscription of the %s: %s", self.role, reasons)
            return
        if not self._subscribed.is_set():
            logger.info("%s ready: subscribed", self.role)
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
            self.lost.set()
            if self._leave:  # its client does not reconnect (service_client(reconnect=False))
                logger.info("%s disconnected (%s)", self.role, reason)
            else:
                logger.warning("%s lost the broker (%s); reconnecting", self.role, reason)

    def _on_message(self, client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        raise NotImplementedError


class Pending(Protocol):
    """Publishes handed over without waiting (:class:`Confirmation`, or a batch given to
    :class:`~messenger.child_publisher.ChildPublisher`)."""

    def __len__(self) -> int: ...

    def wait(self, timeout_s: float = 30.0) -> bool:
        """True once the broker acknowledged every publish; False after ``timeout_s``."""
        ...


class Confirmation:
    """QoS 1 publishes handed to paho; :meth:`wait` says whether the broker took them all."""

    def __init__(self, infos: list[mqtt.MQTTMessageInfo]) -> None:
        self._infos = infos

    def __len__(self) -> int:
        return len(self._infos)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """True once the broker acknowledged every publish; False after ``timeout_s``, or when
        paho refused one (queue full) or is not connected."""
        deadline = time.monotonic() + timeout_s
        for info in self._infos:
            remaining = deadline - time.monotonic()
            try:
                info.wait_for_publish(timeout=max(remaining, 0.001))
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True


class Publisher(Protocol):
    """Where the API sends what a committed request produced (messages, events, control)."""

    @property
    def connected(self) -> bool: ...

    def publish(self, out: Sequence[Outbound]) -> None: ...


class MqttPublisher(ServiceSubscriber):
    """Publishes :class:`~messenger.actions.Outbound` messages at QoS 1 as the service account.

    A :class:`ServiceSubscriber` with nothing to subscribe to: :meth:`start` returns once it is
    connected. Never blocks a request: paho sends in its own thread, and queues (up to
    ``max_queued``) while the broker is away. What cannot be queued is dropped with a warning:
    stored messages still reach their recipients through catch-up, only live events are lost.
    """

    role = "publisher"

    def __init__(self, client: mqtt.Client, *, max_queued: int = 10_000) -> None:
        super().__init__(client, subscriptions=())
        client.max_queued_messages_set(max_queued)

    def publish(self, out: Sequence[Outbound]) -> None:
        dropped = 0
        for o in out:
            info = self._client.publish(o.topic, o.payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                dropped += 1
        if dropped:
            logger.warning(
                "dropped %d of %d publishes: the broker is away and the queue is full", dropped, len(out)
            )

    def publish_tracked(self, out: Sequence[Outbound]) -> Confirmation:
        """Publish without waiting; the returned :class:`Confirmation` waits for the broker.

        A caller that publishes a lot (a fan-out) waits for one batch before handing over the
        next, so that what others publish meanwhile never queues behind more than one batch,
        and prepares the next batch while the broker takes this one.
        """
        return Confirmation([self._client.publish(o.topic, o.payload, qos=1) for o in out])

    def publish_confirmed(self, out: Sequence[Outbound], timeout_s: float = 30.0) -> bool:
        """Publish and wait until the broker has taken every message (PUBACK); False on timeout."""
        return self.publish_tracked(out).wait(timeout_s)

    def _on_message(self, _client: mqtt.Client, _userdata: object, _msg: mqtt.MQTTMessage) -> None:
        pass  # subscribes to nothing
