"""The embedded amqtt broker with the Messenger plugin, and the holes of amqtt 0.12 closed."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from acl.limits import MAX_RETAINED_BYTES, PAYLOAD_LIMITS, payload_allowed, topic_class
from acl.principal import Principal
from acl.revocation import Revocation
from acl.tokens import TokenVerifier
from acl.topics import CONTROL_TOPIC, parse_presence_topic
from broker.exceptions import BrokerStartError
from broker.limits import ClientSubscriptions, UserConnections
from broker.plugins import MessengerAclPlugin

logger = logging.getLogger(__name__)

#: A refused SUBSCRIBE filter's return code in the SUBACK.
SUBACK_FAILURE = 0x80
#: How long the broker keeps the session of a persistent client that went away.
SESSION_EXPIRY_S = 24 * 3600
#: How long a new connection may take to send its whole CONNECT (MESSENGER_MQTT_CONNECT_TIMEOUT_S).
CONNECT_TIMEOUT_S = 10.0

PLUGIN_PATH = f"{MessengerAclPlugin.__module__}.{MessengerAclPlugin.__qualname__}"


class MessengerBroker(Broker):
    """amqtt's Broker with two fixes the SPEC requires.

    * Authentication runs before the broker touches any session: amqtt 0.12 deletes a clean
      session and takes over a connected client with the same client id *before* it looks at
      the credentials, so a client with a bad token could kick a user off.
    * Nothing but presence is retained: amqtt replays retained messages without a read check,
      so a retained message anywhere else could leak.
    * Retained messages are replayed at CONNECT only for the client's own subscriptions.

    It also consumes :data:`acl.topics.CONTROL_TOPIC`: a revocation published there by the
    service disconnects every client whose token it covers.

    It enforces the limits of :mod:`acl.limits`: the payload per topic class and of a retained
    message (beyond: dropped), the distinct filters per client id (beyond: a SUBACK failure) and
    the live connections per user (beyond: CONNECT refused, as for a bad token).

    amqtt waits without end for a new connection's CONNECT, and its listeners' own
    ``max_connections`` makes the sockets over the limit wait, open, for a free place. Here a
    connection that has not sent its CONNECT within ``connect_timeout_s`` is closed, and beyond
    ``max_connections`` (TCP and WebSocket together) a new socket is closed at once.
    """

    _acl: MessengerAclPlugin | None = None

    def __init__(
        self,
        config: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(config, loop=loop)
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._open = 0
        self._refusing = False
        self._user_connections: UserConnections[WriterAdapter] = UserConnections()
        self._filters = ClientSubscriptions()

    def _plugin(self) -> MessengerAclPlugin | None:
        if self._acl is None:
            plugin = self.plugins_manager.get_plugin(MessengerAclPlugin.__name__)
            if isinstance(plugin, MessengerAclPlugin):
                self._acl = plugin
        return self._acl

    def connected_count(self) -> int:
        """How many clients are connected now."""
        return sum(1 for session, _ in self._sessions.values() if session.transitions.is_connected())

    async def kick(self, revocation: Revocation) -> int:
        """Disconnect every connected client whose token ``revocation`` covers; returns how many.

        The connection is closed without a DISCONNECT, so the client's Last Will (presence
        offline) goes out; its reconnect is refused because the token is revoked.
        """
        acl = self._plugin()
        if acl is None:
            return 0
        kicked = 0
        for client_id, (session, handler) in list(self._sessions.items()):
            principal = acl.principal(client_id)
            if (
                principal is None
                or not session.transitions.is_connected()
                or not revocation.covers(principal)
            ):
                continue
            logger.info("disconnecting %s: its token was revoked", client_id)
            if handler.writer is not None:
                await handler.writer.close()
            kicked += 1
        return kicked

    async def _handle_control(self, session: Session, data: bytes | bytearray | None) -> None:
        if not await self._topic_filtering(session, CONTROL_TOPIC, Action.PUBLISH):
            logger.warning("%s may not publish on %s; ignored", session.client_id, CONTROL_TOPIC)
            return
        try:
            revocation = Revocation.from_control(bytes(data or b""))
        except ValueError as exc:
            logger.warning("ignored a control message from %s: %s", session.client_id, exc)
            return
        await self.kick(revocation)

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        if self._max_connections is not None and self._open >= self._max_connections:
            if not self._refusing:  # once per spell of refusals, not once per socket
                logger.warning("%d connections open: closing new ones until some end", self._open)
                self._refusing = True
            await writer.close()
            return
        self._open += 1
        self._refusing = False
        try:
            await super()._client_connected(listener_name, reader, writer)
        finally:
            self._open -= 1
            self._user_connections.release(writer)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt's own version, with a deadline on the CONNECT and authentication moved before the
        # session lookup.
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                handler, incoming = await BrokerProtocolHandler.init_from_connect(
                    reader, writer, self.plugins_manager
                )
        except TimeoutError as exc:
            await writer.close()
            raise AMQTTError(f"no CONNECT from {remote_address} within {self._connect_timeout_s:g}s") from exc
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc

        if not await super()._authenticate(incoming, None):  # type: ignore[arg-type]
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"client {incoming.client_id!r} from {remote_address} not authorized")
        if not self._admit(incoming, writer):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"client {incoming.client_id!r} from {remote_address}: too many connections")

        session = incoming
        if incoming.clean_session:
            await self._delete_session(str(incoming.client_id))
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            # a persistent session: the new CONNECT brings new credentials and a new Will
            session, _ = self._sessions[incoming.client_id]
            for attribute in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "will_retain",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(session, attribute, getattr(incoming, attribute))
            session.parent = 1
        else:
            incoming.parent = 0
        session.messenger_authenticated = True  # type: ignore[attr-defined]

        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    def _admit(self, incoming: Session, writer: WriterAdapter) -> bool:
        """Count an authenticated connection against its user's limit; False if over it."""
        acl = self._plugin()
        client_id = str(incoming.client_id)
        principal = acl.principal(client_id) if acl is not None else None
        if principal is None:
            return False
        if self._user_connections.admit(principal, client_id, writer):
            return True
        logger.info(
            "refused CONNECT of client %r: user %s has %d live connections, the limit",
            client_id,
            principal.user_id,
            self._user_connections.count(principal.user_id),
        )
        return False

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        # Decided in _initialize_client_session, before any session was touched.
        authenticated = bool(getattr(session, "messenger_authenticated", False))
        session.messenger_authenticated = False  # type: ignore[attr-defined]
        return authenticated

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        # amqtt runs every plugin check as a new task and gathers them: several tasks per
        # message relayed. The ACL is pure and fast, so ask it directly.
        acl = self._plugin()
        return acl is not None and acl.allows(session, topic, action)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        # a client holds at most MAX_SUBSCRIPTIONS_PER_CLIENT distinct filters; subscribing
        # again to one it holds replaces it (amqtt keeps one entry) and is not counted twice
        topic_filter, client_id = subscription[0], str(session.client_id)
        if not self._filters.allows(client_id, topic_filter):
            logger.info(
                "refused a subscription of %s to %r: it holds %d filters, the limit",
                client_id,
                topic_filter,
                self._filters.count(client_id),
            )
            return SUBACK_FAILURE
        granted = await super().add_subscription(subscription, session)
        if granted != SUBACK_FAILURE:
            self._filters.add(client_id, topic_filter)
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted = super()._del_subscription(a_filter, session)
        self._filters.discard(str(session.client_id), a_filter)
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        # a clean session's start, an expired session, shutdown
        await super()._del_all_subscriptions(session)
        self._filters.forget(str(session.client_id))

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt 0.12 calls this at CONNECT for *every* client's subscription filters, so a
        # client would get retained messages it never subscribed to. Replay only what this
        # session holds and may read.
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, [])
        if not any(held.client_id == session.client_id for held, _qos in holders):
            return
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        # amqtt's StreamWriterAdapter.close() marks itself closed *before* it drains and sends
        # EOF; when either fails (the peer already reset) or the reader task's own stop() is
        # cancelled by the broker's, the socket is never closed: one leaked fd per such
        # disconnect. The connection is over when this returns, so close it for sure.
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            writer.close()

    async def _publish_session_retained_messages(self, session: Session) -> None:
        # What amqtt queued for an offline persistent session are ordinary messages, not
        # retained ones: amqtt 0.12 replays them with the retain flag set, and a subscriber
        # (the handler) would take a device's "online" for a replay of old state.
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            tasks.append(
                asyncio.ensure_future(handler.mqtt_publish(queued.topic, queued.data, queued.qos, False))
            )
        if tasks:
            await asyncio.wait(tasks)

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        # amqtt has no packet size limit: the payload limits of acl.limits, by topic class (a
        # topic of no class goes on to the topic rules, which refuse it)
        message = wait_deliver.result()
        if message is None:
            return await super()._handle_message_delivery(client_session, handler, wait_deliver)
        size = len(message.data or b"")
        retain = bool(message.publish_packet is not None and message.publish_packet.retain_flag)
        klass = topic_class(message.topic)
        if klass is not None and not payload_allowed(message.topic, size, retain=retain):
            logger.warning(
                "dropped a %d-byte%s publish from %s on %s (limit %d, retained %d)",
                size,
                " retained" if retain else "",
                client_session.client_id,
                message.topic,
                PAYLOAD_LIMITS[klass],
                MAX_RETAINED_BYTES,
            )
            return True
        if message.topic == CONTROL_TOPIC:
            # amqtt would drop the connection for a $ topic; this one is for the broker itself
            await self._handle_control(client_session, message.data)
            return True
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        if topic_name is None or parse_presence_topic(topic_name) is None:
            logger.info("not retaining a message on %r: only presence is retained", topic_name)
            return
        if data is not None and not payload_allowed(topic_name, len(data), retain=True):
            # publishes are checked before; this also covers a Last Will
            logger.info("not retaining a %d-byte presence message on %r", len(data), topic_name)
            return
        await super().retain_message(source_session, topic_name, data, qos)


@dataclass(frozen=True, slots=True)
class Listeners:
    mqtt: tuple[str, int]
    ws: tuple[str, int] | None


class EmbeddedBroker:
    """Starts and stops a :class:`MessengerBroker` with TCP and WebSocket listeners."""

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        host: str = "127.0.0.1",
        mqtt_port: int = 1884,
        ws_port: int | None = 8083,
        on_authenticated: Callable[[Principal], Any] | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_connections: int | None = None,
    ) -> None:
        self._host = host
        self._limits: dict[str, Any] = {
            "connect_timeout_s": connect_timeout_s,
            "max_connections": max_connections,
        }
        self._mqtt_port = mqtt_port
        self._ws_port = ws_port
        listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{host}:{mqtt_port}"}}
        if ws_port is not None:
            listeners["ws"] = {"type": "ws", "bind": f"{host}:{ws_port}"}
        self._config: dict[str, Any] = {
            "listeners": listeners,
            "timeout_disconnect_delay": 2,
            # offline persistent sessions (and their queues) do not live forever
            "session_expiry_interval": SESSION_EXPIRY_S,
            "plugins": {PLUGIN_PATH: {"verifier": verifier, "on_authenticated": on_authenticated}},
        }
        self._broker: MessengerBroker | None = None

    def check_ports(self) -> None:
        """Raise BrokerStartError, naming the flag to change, if a listener's port is taken."""
        self._check_port(self._mqtt_port, "--mqtt-port", "MESSENGER_MQTT_PORT")
        if self._ws_port is not None:
            self._check_port(self._ws_port, "--ws-port", "MESSENGER_WS_PORT")

    async def start(self) -> Listeners:
        """Start listening; raises BrokerStartError naming the port that is taken."""
        self.check_ports()
        self._broker = MessengerBroker(self._config, loop=asyncio.get_running_loop(), **self._limits)
        try:
            await self._broker.start()
        except BrokerError as exc:
            raise BrokerStartError(f"the MQTT broker could not start: {exc}") from exc
        return self.listeners

    @property
    def listeners(self) -> Listeners:
        if self._broker is None:
            raise RuntimeError("broker not started")
        servers = self._broker._servers
        mqtt = _bound(servers["default"].instance)
        ws = _bound(servers["ws"].instance) if "ws" in servers else None
        return Listeners(mqtt, ws)

    @property
    def broker(self) -> MessengerBroker:
        if self._broker is None:
            raise RuntimeError("broker not started")
        return self._broker

    async def stop(self) -> None:
        if self._broker is not None and self._broker.transitions.state == "started":
            await self._broker.shutdown()

    def _check_port(self, port: int, flag: str, env: str) -> None:
        if port != 0:
            bind_port(self._host, port, flag, env).close()


def bind_port(host: str, port: int, flag: str | None, env: str) -> socket.socket:
    """A TCP socket bound to ``host:port``; a taken port is a BrokerStartError naming ``flag``/``env``."""
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # with Nagle on every HTTP answer written in two parts waited for a 40 ms delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BrokerStartError(
                f"port {port} on {host} is already in use; choose another with "
                + (f"{flag} or {env}" if flag else env)
            ) from exc
        raise BrokerStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _bound(server: Any) -> tuple[str, int]:
    sockname = server.sockets[0].getsockname()
    return str(sockname[0]), int(sockname[1])


class _AmqttPubackTimeouts(logging.Filter):
    """Folds amqtt's per-message PUBACK timeout logs into one line per interval.

    Under a burst, amqtt 0.12 logs a warning, an error and a traceback for every message a
    subscriber acked later than its fixed 5 s, and a warning for every late PUBACK: thousands
    of lines that drown everything else.
    """

    PATTERNS = ("Timeout waiting for PUBACK", "Received PUBACK for unknown pending message")

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._suppressed = 0
        self._since = time.monotonic() - interval_s  # the first one is reported at once

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not any(pattern in text for pattern in self.PATTERNS):
            return True
        self._suppressed += 1
        now = time.monotonic()
        if now - self._since < self._interval_s:
            return False
        record.msg = "%d slow or late PUBACKs over %.0f s: the broker is overloaded"
        record.args = (self._suppressed, now - self._since)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        self._suppressed, self._since = 0, now
        return True


def fold_amqtt_timeout_logs() -> None:
    """Install the filter on amqtt's loggers (call once, where logging is configured)."""
    folding = _AmqttPubackTimeouts()
    for name in ("amqtt.broker", "amqtt.mqtt.protocol.handler"):
        logging.getLogger(name).addFilter(folding)
