"""The MQTT connection: connect, reconnect with backoff, and one session per connection.

:class:`Connection` owns the transport only. For each connection it makes a new
``aiomqtt.Client`` (with the current token as password), subscribes to what its
:class:`SessionHandler` asks for, then runs three things side by side until the connection drops:
the handler's ``on_message`` for each message received, the handler's ``pump`` (everything it
publishes) and a watch for :meth:`Connection.close`. When the connection drops it waits a
backoff delay (full jitter) and connects again; a CONNECT refused as not authorized fetches a
new token first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from .backoff import Backoff
from .exceptions import AuthError, ConnectError
from .tokens import TokenSource

log = logging.getLogger(__name__)

#: CONNACK codes of refused credentials: MQTT 3.1.1's 4 and 5, as paho reports them (134, 135).
_REFUSED = (4, 5, 134, 135)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the broker."""

    host: str = "127.0.0.1"
    port: int = 1884
    transport: Literal["tcp", "websockets"] = "tcp"
    websocket_path: str = "/mqtt"
    tls_context: ssl.SSLContext | None = None
    keepalive: int = 30
    #: seconds to wait for CONNACK, SUBACK and PUBACK
    timeout: float = 10.0


class Link:
    """One live connection, as the session handler sees it."""

    def __init__(self, mqtt: aiomqtt.Client) -> None:
        self._mqtt = mqtt

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        await self._mqtt.publish(topic, payload, qos=1, retain=retain)

    async def unsubscribe(self, filters: list[str]) -> None:
        await self._mqtt.unsubscribe(filters)

    async def subscribe(self, filters: list[str]) -> list[bool]:
        """Subscribe (QoS 1); whether each filter was granted."""
        codes = await self._mqtt.subscribe([(f, 1) for f in filters])
        return [not (c >= 0x80 if isinstance(c, int) else c.is_failure) for c in codes]


class SessionHandler(Protocol):
    """What a :class:`Connection` calls; the client implements it."""

    def topics(self) -> list[str]:
        """The filters to subscribe to on every connection."""

    async def on_connected(self, link: Link, reconnect: bool) -> None:
        """Subscribed: the connection is usable."""

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        """A message arrived."""

    async def pump(self, link: Link) -> None:
        """Publishes what is due, for the life of the connection (cancelled when it drops)."""

    def stop(self) -> None:
        """The client is closing: ``pump`` must return (soon) and publish nothing more."""

    async def goodbye(self, link: Link) -> None:
        """After ``pump`` returned: the last publishes before DISCONNECT."""

    def on_disconnected(self, reason: str, retry_in: float) -> None:
        """The connection dropped or could not be made."""


class _Closing(Exception):
    """Ends a session on purpose."""


class _Refused(Exception):
    """The broker refused a subscription to the client's own topics."""


class Connection:
    """Connects ``user`` as ``{user}/{device}``, for as long as :meth:`run` runs."""

    def __init__(
        self,
        user: str,
        device: str,
        endpoint: Endpoint,
        tokens: TokenSource,
        handler: SessionHandler,
        *,
        backoff: Backoff | None = None,
        will: tuple[str, bytes] | None = None,
        clean_session: bool = True,
        stable_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user = user
        self.client_id = f"{user}/{device}"
        self.endpoint = endpoint
        self._tokens = tokens
        self._handler = handler
        self._backoff = backoff or Backoff()
        self._will = will
        self._clean_session = clean_session
        self._stable_after = stable_after
        self._clock = clock
        self._closing = asyncio.Event()
        self.connected = asyncio.Event()
        #: the outcome of the first connection: None once connected, or AuthError when the broker
        #: refused the credentials twice before any connection (then :meth:`run` gives up)
        self.first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connections = 0  # successful connections so far
        self.last_error: str | None = None

    def close(self) -> None:
        """Ask :meth:`run` to say goodbye, disconnect and return."""
        self._closing.set()

    async def run(self) -> None:
        """Connect, and reconnect after every drop, until :meth:`close`."""
        attempt = 0
        refusals = 0
        while not self._closing.is_set():
            started = self._clock()
            token: str | None = None
            try:
                token = await self._tokens.current()
                await self._session(token)
                return
            except _Closing:
                return
            except (aiomqtt.MqttCodeError, _Refused) as exc:
                refused = isinstance(exc, _Refused) or (
                    isinstance(exc, MqttConnectError) and exc.rc in _REFUSED
                )
                reason = str(exc) or type(exc).__name__
                if refused:
                    refusals += 1
                    if refusals >= 2 and not self.first.done():
                        # a fresh token was refused too: the credentials are wrong, not stale
                        self.first.set_exception(AuthError(f"the broker refused {self.client_id}: {reason}"))
                        return
                    with contextlib.suppress(Exception):
                        await self._tokens.refresh(token)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            except Exception as exc:  # get_token failed, or a bug: keep trying, loudly
                log.exception("messenger client %s: session failed", self.client_id)
                reason = f"{type(exc).__name__}: {exc}"
            if self._closing.is_set():
                return
            self.connected.clear()
            if self._clock() - started >= self._stable_after:
                attempt = 0  # a connection that held: start the backoff over
            delay = self._backoff.delay(attempt)
            attempt += 1
            self.last_error = reason
            log.info("messenger client %s: %s; reconnecting in %.2fs", self.client_id, reason, delay)
            self._handler.on_disconnected(reason, delay)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for may swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def _session(self, token: str) -> None:
        endpoint = self.endpoint
        will = None if self._will is None else aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True)
        client = aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            username=self.user,
            password=token,
            identifier=self.client_id,
            will=will,
            clean_session=self._clean_session,
            transport=endpoint.transport,
            websocket_path=endpoint.websocket_path if endpoint.transport == "websockets" else None,
            tls_context=endpoint.tls_context,
            keepalive=endpoint.keepalive,
            timeout=endpoint.timeout,
        )
        async with client:
            link = Link(client)
            topics = self._handler.topics()
            granted = await link.subscribe(topics)
            if not all(granted[:2]):  # the first two are the client's own topics
                raise _Refused(f"the broker refused the subscription to {topics[:2]}")
            self.connections += 1
            self.connected.set()
            await self._handler.on_connected(link, reconnect=self.connections > 1)
            if not self.first.done():
                self.first.set_result(None)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(client))
                    pump = group.create_task(self._handler.pump(link))
                    group.create_task(self._until_closed(link, pump))
            except BaseExceptionGroup as group:
                raise _first(group) from None

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):  # paho always gives bytes; be sure
                continue
            self._handler.on_message(str(message.topic), bytes(payload), bool(message.retain))
        raise aiomqtt.MqttError("the message stream ended")

    async def _until_closed(self, link: Link, pump: asyncio.Task[None]) -> None:
        await self._closing.wait()
        # the pump stops first: nothing it publishes may come after the goodbye (an "online"
        # after the "offline" would leave the device online for good)
        self._handler.stop()
        try:
            async with asyncio.timeout(self.endpoint.timeout):
                await asyncio.wait([pump])
            async with asyncio.timeout(self.endpoint.timeout):
                await self._handler.goodbye(link)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning(
                "messenger client %s: no clean goodbye (%s)", self.client_id, exc or type(exc).__name__
            )
        raise _Closing


def connect_error(connection: Connection) -> ConnectError:
    """The error to raise when the first connection did not come in time."""
    endpoint = connection.endpoint
    return ConnectError(
        f"could not connect {connection.client_id} to {endpoint.host}:{endpoint.port}"
        f" ({connection.last_error or 'no answer'})"
    )


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a session: a close on purpose first, then a connection error."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for kind in (_Closing, aiomqtt.MqttError):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0]
