"""The client: ``async with Client(user, get_token) as chat`` and ``async for event in chat.events()``.

:class:`Client` puts the pieces together: the :class:`~.connection.Connection` (reconnect with
backoff), the :class:`~.tokens.TokenSource` (refresh before expiry), the
:class:`~.catchup.CatchUp` merge (a catch-up on every connection, each message once, in id
order), the :class:`~.outbox.Outbox` (idempotent retries) and the :class:`~.rest.RestClient`.

What happens on every connection, in this order (docs/protocol.md, "Delivery semantics"):

1. subscribe to ``users/{uid}/messages``, ``users/{uid}/events`` and the watched presence topics,
   and wait for the SUBACK (a catch-up published before that would be lost);
2. ``sync`` after the last id seen (the unread messages the first time), page by page while the
   server says ``more``; live messages meanwhile are held and merged in id order;
3. resend the outbox (same client ids: stored once; of each conversation, the message in flight
   or else the first waiting one) and the pending read marks;
4. once caught up, announce the device ``online`` (retained, with a Last Will of ``offline``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from . import parse
from .backoff import Backoff
from .catchup import CatchUp
from .connection import Connection, Endpoint, Link, connect_error
from .events import (
    Ack,
    CaughtUp,
    CommandError,
    Connected,
    Disconnected,
    Event,
    SendTimedOut,
    ServerEvent,
    Synced,
    TipFailed,
)
from .exceptions import ClosedError, ProtocolError, SendError
from .outbox import Outbox, Outgoing, SendState
from .rest import RestClient
from .tokens import TokenProvider, TokenSource
from .topics import (
    MAX_COMMAND_BYTES,
    MAX_ID,
    check_client_id,
    check_user_id,
    events_topic,
    inbound_topic,
    messages_topic,
    presence_filter,
    presence_topic,
    split_presence_topic,
)

log = logging.getLogger(__name__)

_CURRENCY = re.compile(r"[A-Z]{3}")
#: Tries of a catch-up that gets no ``synced`` before the client stops waiting for it.
CATCHUP_TRIES = 3


def _encode(command: dict[str, Any]) -> bytes:
    return json.dumps(command, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Client:
    """One device of one user, connected to Messenger.

    ``get_token`` is an async callable returning a bearer token for ``user``; it is called at
    start, again before the token expires, and whenever the server refuses it. ``last_id``
    resumes from a catch-up point the application kept (:attr:`last_id`): messages up to it count
    as seen. ``presence`` announces this device online and leaves a Last Will of offline.
    ``send_timeout`` (None: never) is how long a message may go unanswered before it is
    ``failed``; it can be resent with the same id.

    One task should consume :meth:`events`; events queue up until it does.
    """

    def __init__(
        self,
        user: str,
        get_token: TokenProvider,
        *,
        host: str = "127.0.0.1",
        port: int = 1884,
        transport: Literal["tcp", "websockets"] = "tcp",
        websocket_path: str = "/mqtt",
        tls_context: ssl.SSLContext | None = None,
        api_url: str = "http://127.0.0.1:8080",
        device: str | None = None,
        last_id: int | None = None,
        presence: bool = True,
        clean_session: bool = True,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        ack_timeout: float = 10.0,
        send_timeout: float | None = 60.0,
        catchup_timeout: float = 10.0,
        typing_interval: float = 3.0,
        refresh_margin: float = 60.0,
        backoff: Backoff | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.user = check_user_id(user)
        self.device = check_user_id(device or f"py-{uuid.uuid4().hex[:12]}", "device name")
        if last_id is not None and not (isinstance(last_id, int) and 0 <= last_id <= MAX_ID):
            raise ValueError(f"last_id must be an id (0 to 2^63-1), got {last_id!r}")
        self.endpoint = Endpoint(
            host, port, transport, websocket_path, tls_context, keepalive, connect_timeout
        )
        self._presence_enabled = presence
        self._clean_session = clean_session
        self._connect_timeout = connect_timeout
        self._catchup_timeout = catchup_timeout
        self._typing_interval = typing_interval
        self._backoff = backoff or Backoff()
        self._clock: Callable[[], float] = time.monotonic
        self._tokens = TokenSource(get_token, refresh_margin=refresh_margin)
        #: the REST API, with the same token
        self.rest = RestClient(api_url, self._tokens, http=http, timeout=connect_timeout)
        self._catchup = CatchUp(last_id)
        self._outbox = Outbox(ack_timeout=ack_timeout, send_timeout=send_timeout)

        self._messages_topic = messages_topic(self.user)
        self._events_topic = events_topic(self.user)
        self._inbound = inbound_topic(self.user)
        self._presence_topic = presence_topic(self.user, self.device)

        self._events: asyncio.Queue[Event | None] = asyncio.Queue()  # None: closed
        self._wake = asyncio.Event()  # the pump: something to publish
        self._timer_wake = asyncio.Event()  # the send timeouts
        self._connection: Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._stopping = False  # the pump publishes nothing more: the goodbye comes next

        self._link: Link | None = None
        self._sync_after: int | None = None
        self._sync_due: float | None = None
        self._sync_deadline: float | None = None
        self._sync_tries = 0
        #: the ``id`` of the last ``sync`` sent: its ``synced`` and its ``rate_limited`` name it
        self._sync_id: str | None = None
        #: the ``id`` of each ``read`` sent since the last publish round, for its ``rate_limited``
        self._read_ids: set[str] = set()
        self._announce_due = False
        self._reads: dict[str | None, int] = {}  # peer (None: everyone) -> up_to, to publish
        self._reads_sent: dict[str | None, int] = {}
        self._reads_due_at = 0.0
        self._typing: deque[str] = deque()
        self._typing_sent: dict[str, float] = {}
        self._watched: set[str] = set()
        self._subscribe: deque[str] = deque()
        self._unsubscribe: deque[str] = deque()
        self._presence: dict[str, dict[str, bool]] = {}

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect (waiting for the first connection: ConnectError, AuthError) and keep connected."""
        if self._connection is not None or self._closed:
            raise RuntimeError("a Client starts once")
        will = (self._presence_topic, b"offline") if self._presence_enabled else None
        self._connection = Connection(
            self.user,
            self.device,
            self.endpoint,
            self._tokens,
            self,
            backoff=self._backoff,
            will=will,
            clean_session=self._clean_session,
        )
        self._tasks = [
            asyncio.create_task(self._connection.run(), name=f"messenger-client {self.user}/{self.device}"),
            asyncio.create_task(self._tokens.keep_fresh(), name="messenger-client token refresh"),
            asyncio.create_task(self._expire_sends(), name="messenger-client send timeouts"),
        ]
        try:
            async with asyncio.timeout(self._connect_timeout):
                await asyncio.shield(self._connection.first)
        except TimeoutError:
            error = connect_error(self._connection)
            await self.close()
            raise error from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Say goodbye (presence offline), disconnect, and end :meth:`events`. Messages still
        unanswered fail with code ``closed`` (resending them later, with the same ids, is safe)."""
        if self._closed:
            return
        self._closed = True
        connection, tasks = self._connection, self._tasks
        if connection is not None:
            connection.close()
            run = tasks[0]
            try:
                async with asyncio.timeout(self.endpoint.timeout + 5):
                    await asyncio.shield(run)
            except TimeoutError:
                log.warning("messenger client %s: no clean disconnect in time", connection.client_id)
            if connection.first.done() and not connection.first.cancelled():
                connection.first.exception()  # retrieved: it was raised by start() if it mattered
            else:
                connection.first.cancel()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for outgoing in self._outbox.unsettled():
            if not outgoing.done:
                outgoing.error = SendError(
                    outgoing.client_id, "closed", "the client was closed before an answer"
                )
                outgoing._settle(SendState.FAILED)
        await self.rest.aclose()
        self._events.put_nowait(None)

    # --- what the application reads ---

    async def events(self) -> AsyncIterator[Event]:
        """Messages, events and connection changes, in order, until the client is closed."""
        while True:
            item = await self._events.get()
            if item is None:
                self._events.put_nowait(None)  # for any other iteration
                return
            yield item

    @property
    def connected(self) -> bool:
        return not self._closed and self._connection is not None and self._connection.connected.is_set()

    @property
    def connections(self) -> int:
        """Successful connections so far (1 + reconnects)."""
        return 0 if self._connection is None else self._connection.connections

    @property
    def last_id(self) -> int | None:
        """Where the next catch-up starts: keep it, and pass it as ``last_id`` next time to
        resume (every message up to it has been yielded)."""
        return self._catchup.resume_after

    @property
    def duplicates_dropped(self) -> int:
        """Repeated messages dropped so far (redeliveries, catch-ups of messages already seen)."""
        return self._catchup.duplicates

    @property
    def token_fetches(self) -> int:
        """How many times ``get_token`` was called."""
        return self._tokens.fetches

    def outbox(self) -> list[Outgoing]:
        """Messages not answered yet (pending, accepted) or failed by timeout, oldest first."""
        return self._outbox.unsettled()

    def online(self, user: str) -> bool | None:
        """Whether a watched user has a device online; None before anything is known."""
        devices = self._presence.get(user)
        return None if devices is None else any(devices.values())

    # --- what the application does ---

    def send(self, to: str, body: str, *, client_id: str | None = None) -> Outgoing:
        """Send ``body`` to ``to``. Returns at once; ``await`` the result for the ack. Messages
        to one recipient are stored in the order sent: each goes once the one before is answered."""
        command = {"type": "message", "id": client_id, "to": check_user_id(to, "recipient"), "body": body}
        return self._queue(command)

    def send_to_list(self, list_id: str, body: str, *, client_id: str | None = None) -> Outgoing:
        """A creator's mass message to one of their lists: accepted (``queued``) first, ``sent``
        when the fan-out is done."""
        command = {
            "type": "message",
            "id": client_id,
            "list": check_client_id(list_id, "list id"),
            "body": body,
        }
        return self._queue(command)

    def tip(
        self, to: str, amount: int, currency: str, body: str = "", *, client_id: str | None = None
    ) -> Outgoing:
        """Tip a creator ``amount`` minor units, with a message. A declined charge fails with
        code ``tip_failed`` and ``billing_url`` (also yielded as a ``TipFailed`` event); a new
        attempt takes a new client id."""
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise ValueError(f"amount must be a positive integer (minor units), got {amount!r}")
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise ValueError(f"currency must be three capital letters, got {currency!r}")
        command = {
            "type": "message",
            "id": client_id,
            "to": check_user_id(to, "recipient"),
            "body": body,
            "tip": {"amount": amount, "currency": currency},
        }
        return self._queue(command)

    def resend(self, outgoing: Outgoing) -> Outgoing:
        """Send again now, with the same client id (stored at most once)."""
        self._check_open()
        self._outbox.resend(outgoing, self._clock())
        self._poke()
        return outgoing

    def mark_read(self, up_to: int, *, peer: str | None = None) -> None:
        """Mark read the messages to this user up to ``up_to`` (only from ``peer``, if given).
        Sent when connected; read marks made offline are sent on the next connection."""
        self._check_open()
        if not isinstance(up_to, int) or isinstance(up_to, bool) or not 0 <= up_to <= MAX_ID:
            raise ValueError(f"up_to must be an id, got {up_to!r}")
        key = None if peer is None else check_user_id(peer, "peer")
        self._reads[key] = max(self._reads.get(key, 0), up_to)
        self._poke()

    def typing(self, to: str) -> bool:
        """Tell ``to`` this user is typing. Lossy by design: dropped while disconnected, and at
        most one per ``typing_interval`` per peer (the server drops a flood anyway). Returns
        whether it was sent."""
        self._check_open()
        check_user_id(to, "recipient")
        now = self._clock()
        if (
            not self.connected
            or now - self._typing_sent.get(to, -self._typing_interval) < self._typing_interval
        ):
            return False
        self._typing_sent[to] = now
        self._typing.append(to)
        self._poke()
        return True

    def watch_presence(self, user: str) -> None:
        """Follow ``user``'s devices: ``Presence`` events, and :meth:`online`."""
        self._check_open()
        if check_user_id(user) not in self._watched:
            self._watched.add(user)
            self._subscribe.append(presence_filter(user))
            self._poke()

    def unwatch_presence(self, user: str) -> None:
        if user in self._watched:
            self._watched.discard(user)
            self._presence.pop(user, None)
            self._unsubscribe.append(presence_filter(user))
            self._poke()

    def _queue(self, command: dict[str, Any]) -> Outgoing:
        self._check_open()
        if not isinstance(command["body"], str):
            raise TypeError("body must be a str")
        command["id"] = check_client_id(command["id"] or uuid.uuid4().hex)
        if len(_encode(command)) > MAX_COMMAND_BYTES:
            raise ValueError(f"the message is over the server's {MAX_COMMAND_BYTES} bytes (UTF-8 JSON)")
        existing = self._outbox.get(command["id"])
        if existing is not None:
            if existing.command != command:
                raise ValueError(f"client id {command['id']!r} is in use for another message")
            return self.resend(existing)
        outgoing = self._outbox.add(Outgoing(command["id"], command, self._clock()))
        self._poke()
        return outgoing

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the client is closed")

    def _poke(self) -> None:
        self._wake.set()
        self._timer_wake.set()

    def _emit(self, event: Event) -> None:
        self._events.put_nowait(event)

    # --- the session (called by Connection) ---

    def topics(self) -> list[str]:
        self._subscribe.clear()  # everything watched is subscribed to with the connection
        return [
            self._messages_topic,
            self._events_topic,
            *(presence_filter(u) for u in sorted(self._watched)),
        ]

    async def on_connected(self, link: Link, reconnect: bool) -> None:
        now = self._clock()
        self._link = link
        self._unsubscribe.clear()
        # the broker replays the retained state of every watched device: start from that (a
        # device cleared while this client was away is simply not replayed)
        self._presence.clear()
        self._outbox.reconnected(now)
        self._sync_after = self._catchup.begin()
        self._sync_due, self._sync_deadline, self._sync_tries = now, None, 0
        self._announce_due = False
        self._reads_due_at = now
        self._typing.clear()
        self._emit(Connected(reconnect))
        self._poke()

    def on_disconnected(self, reason: str, retry_in: float) -> None:
        self._link = None
        self._sync_due = self._sync_deadline = None
        self._typing.clear()
        self._emit(Disconnected(reason, retry_in))

    async def goodbye(self, link: Link) -> None:
        if self._presence_enabled:
            # a clean DISCONNECT discards the Last Will: say offline ourselves (an empty retained
            # payload is offline and clears the device's retained state)
            await link.publish(self._presence_topic, b"", retain=True)

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            self._dispatch(topic, payload, retain)
        except ProtocolError as exc:
            log.warning(
                "messenger client %s/%s: dropped a payload on %s: %s", self.user, self.device, topic, exc
            )

    def _dispatch(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic == self._messages_topic:
            message = parse.delivered_message(payload)
            if message.to != self.user:
                raise ProtocolError(f"a message to {message.to!r} on {topic}")
            for released in self._catchup.offer(message):
                self._emit(released)
        elif topic == self._events_topic:
            self._on_event(parse.event(payload))
        elif (where := split_presence_topic(topic)) is not None and where[0] in self._watched:
            state = parse.presence(where[0], where[1], payload, retained=retain)
            if state is not None:
                self._presence.setdefault(state.user, {})[state.device] = state.online
                self._emit(state)
        # anything else (e.g. a retained presence replay of a filter just unwatched) is not ours

    def _on_event(self, event: ServerEvent) -> None:
        now = self._clock()
        if isinstance(event, Ack):
            self._outbox.on_ack(event)
            self._poke()  # an answer: the next message of its conversation may go
        elif isinstance(event, CommandError):
            handled = self._handled_error(event, now)
            self._poke()
            if handled:
                return
        elif isinstance(event, TipFailed):
            self._outbox.on_tip_failed(event)
            self._poke()
        elif isinstance(event, Synced):
            if event.named and event.client_id != self._sync_id:
                return  # another device's catch-up, or the server's own (every device gets them)
            was_active = self._catchup.active
            released, next_after = self._catchup.synced(event.last_id, event.more)
            for message in released:
                self._emit(message)
            if next_after is not None:
                self._sync_after, self._sync_due, self._sync_deadline = next_after, now, None
                self._poke()
            elif was_active:
                self._caught_up()
            return  # the client's business: yielded as CaughtUp
        self._emit(event)

    def _handled_error(self, error: CommandError, now: float) -> bool:
        """Whether the client deals with ``error`` itself (retries), rather than the application."""
        _, retried = self._outbox.on_error(error, now)
        if retried:
            return True
        if error.code != "rate_limited":
            return False
        wait = (error.retry_after or 1.0) * 1.05 + 0.01
        if error.limit is not None:  # the server names the bucket and echoes the request's id
            is_sync, is_read = error.limit == "sync", error.limit == "read"
            ours_sync = error.client_id is not None and error.client_id == self._sync_id
            ours_read = error.client_id is not None and error.client_id in self._read_ids
        else:  # an older server: `detail` names the bucket; read and sync carry no id
            is_sync, is_read = "catch-up" in error.detail, "read" in error.detail
            ours_sync = ours_read = error.client_id is None
        if is_sync:
            if ours_sync and self._catchup.active:
                self._sync_due, self._sync_deadline = now + wait, None
            return True  # another device's, or the server's push for a device going online
        if is_read and ours_read:
            for peer, up_to in self._reads_sent.items():
                self._reads[peer] = max(self._reads.get(peer, 0), up_to)
            self._reads_sent.clear()
            self._read_ids.clear()
            self._reads_due_at = now + wait
            return True
        return False

    def _caught_up(self) -> None:
        self._sync_deadline = None
        self._emit(CaughtUp(self._catchup.resume_after))
        if self._presence_enabled:
            self._announce_due = True
            self._poke()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def pump(self, link: Link) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._publish_due(link)
            moments = [
                self._outbox.next_wakeup(),
                self._sync_due,
                self._sync_deadline,
                self._reads_due_at if self._reads else None,
            ]
            wake_at = min((m for m in moments if m is not None), default=None)
            timeout = None if wake_at is None else max(0.0, wake_at - self._clock())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for may swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _publish_due(self, link: Link) -> None:
        while self._unsubscribe:
            await link.unsubscribe([self._unsubscribe.popleft()])
        while self._subscribe:
            await link.subscribe([self._subscribe.popleft()])

        now = self._clock()
        if self._sync_due is not None and now >= self._sync_due:
            self._sync_due = None
            # a new id per request: a late answer to an earlier one is not taken for this one's
            self._sync_id = f"sync-{uuid.uuid4().hex[:16]}"
            command: dict[str, Any] = {"type": "sync", "id": self._sync_id}
            if self._sync_after is not None:
                command["after"] = self._sync_after
            await link.publish(self._inbound, _encode(command))
            self._sync_deadline = self._clock() + self._catchup_timeout
        elif self._sync_deadline is not None and now >= self._sync_deadline and self._catchup.active:
            self._sync_tries += 1
            if self._sync_tries < CATCHUP_TRIES:
                self._sync_due, self._sync_deadline = now, None
                self._wake.set()
            else:
                log.warning("messenger client %s/%s: no answer to sync; going live", self.user, self.device)
                self._sync_deadline = None
                for message in self._catchup.finish(complete=False):
                    self._emit(message)
                if self._presence_enabled:
                    self._announce_due = True

        if self._announce_due:
            self._announce_due = False
            await link.publish(self._presence_topic, b"online", retain=True)

        if self._reads and now >= self._reads_due_at:
            reads, self._reads = self._reads, {}
            self._reads_sent = {}
            self._read_ids.clear()
            for peer, up_to in reads.items():
                read_id = f"read-{uuid.uuid4().hex[:16]}"
                self._read_ids.add(read_id)
                command = {"type": "read", "up_to": up_to, "id": read_id}
                if peer is not None:
                    command["with"] = peer
                try:
                    await link.publish(self._inbound, _encode(command))
                except BaseException:
                    for key in reads.keys() - self._reads_sent.keys():  # not sent: keep for later
                        self._reads[key] = max(self._reads.get(key, 0), reads[key])
                    raise
                self._reads_sent[peer] = up_to

        while self._typing:
            to = self._typing.popleft()
            await link.publish(self._inbound, _encode({"type": "typing", "to": to}))

        for outgoing in self._outbox.due(self._clock()):
            if self._stopping:
                return
            await link.publish(self._inbound, outgoing.payload)
            self._outbox.published(outgoing, self._clock())

    async def _expire_sends(self) -> None:
        """Fail messages unanswered for ``send_timeout``, connected or not."""
        while True:
            self._timer_wake.clear()
            for outgoing in self._outbox.expire(self._clock()):
                self._emit(SendTimedOut(outgoing.client_id))
                self._wake.set()  # failed: the next message of its conversation may go
            timeouts = self._outbox.send_timeout
            pending = [o.created for o in self._outbox.unsettled() if o.state is SendState.PENDING]
            wait = (
                None if timeouts is None or not pending else max(0.0, min(pending) + timeouts - self._clock())
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._timer_wake.wait()
