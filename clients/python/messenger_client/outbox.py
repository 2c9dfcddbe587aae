"""The outbox: messages sent and not yet answered, resent with the same client id until they are.

A message is published with QoS 1, but the broker's PUBACK only says the broker has it; the
server's answer is the ``ack`` (or ``error``) event. Until that comes the message is resent with
the **same client id**, which the server stores at most once (and charges at most once, for a
tip): after ``ack_timeout`` without an answer (doubling, up to 8x), at once after every
reconnect (a publish may have been lost with the connection), and after ``retry_after`` when the
server said ``rate_limited``.

States (:class:`SendState`): ``pending`` (no answer yet), ``accepted`` (a mass message queued for
fan-out, or a tip whose charge is not settled: the server has it, a final answer follows),
``sent``, ``failed`` (refused, tip declined, or no answer within ``send_timeout``; a late ``ack``
still turns it into ``sent``). Like :mod:`.catchup`, no I/O here: the client publishes what
:meth:`Outbox.due` returns.

Order: messages to one recipient (or one list) are stored in the order they were sent. With
several handlers two commands sent back to back may be stored in either order (docs/protocol.md,
"Ordering"), so each conversation has one message in flight at a time: the next is published
once the server has answered the one before (``ack``, or a final error), a rate-limited or
retried one keeping its place. Other conversations are not held up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Generator
from enum import StrEnum
from typing import Any

from .backoff import Backoff
from .events import Ack, CommandError, TipFailed
from .exceptions import SendError

#: Error codes after which the same command is sent again (the protocol says: same ``id``).
RETRYABLE = frozenset({"rate_limited", "service_unavailable", "internal_error"})


class SendState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    SENT = "sent"
    FAILED = "failed"


def conversation_key(command: dict[str, Any]) -> str:
    """The conversation a message command belongs to: ``to:{user}`` or ``list:{id}``."""
    return f"to:{command['to']}" if command.get("to") is not None else f"list:{command.get('list', '')}"


class Outgoing:
    """One message sent through the client; ``await outgoing`` (or ``.wait()``) returns its
    :class:`Ack` once it is ``sent``, or raises :class:`SendError` once it ``failed``."""

    def __init__(self, client_id: str, command: dict[str, Any], created: float) -> None:
        self.client_id = client_id
        self.command = command
        self.conversation = conversation_key(command)
        self.payload = json.dumps(command, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.created = created
        self.state = SendState.PENDING
        self.ack: Ack | None = None
        self.error: SendError | None = None
        self.attempts = 0  # publishes so far
        self.next_attempt: float | None = created  # when to publish (again); None: not before an answer
        self._order = 0  # its place in the outbox's send order (set by Outbox.add)
        self._settled = asyncio.Event()
        self._accepted = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.state in (SendState.SENT, SendState.FAILED)

    async def wait(self) -> Ack:
        """The ``sent`` ack, or SendError when the message failed."""
        await self._settled.wait()
        if self.state is SendState.FAILED:
            assert self.error is not None  # noqa: S101 - set with the state
            raise self.error
        assert self.ack is not None  # noqa: S101
        return self.ack

    async def accepted(self) -> Ack:
        """The first ack: ``queued`` for a mass message, ``pending`` for a tip whose charge is
        not settled yet, else ``sent``; SendError when the message failed."""
        done = asyncio.ensure_future(self._settled.wait())
        accepted = asyncio.ensure_future(self._accepted.wait())
        try:
            await asyncio.wait({done, accepted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            accepted.cancel()
        if self.state is SendState.FAILED:
            assert self.error is not None  # noqa: S101
            raise self.error
        assert self.ack is not None  # noqa: S101
        return self.ack

    def __await__(self) -> Generator[Any, None, Ack]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        return f"<Outgoing {self.client_id} {self.state} attempts={self.attempts}>"

    def _settle(self, state: SendState) -> None:
        self.state = state
        self.next_attempt = None
        self._settled.set()
        self._accepted.set()


class Outbox:
    """Every message not yet ``sent``, by client id.

    Order: messages to one recipient (or one list) are stored in the order they were sent. With
    several handlers two commands sent back to back may be stored in either order
    (docs/protocol.md, "Ordering"), so each conversation has one message in flight at a time: the
    next is published once the server has answered the one before (``ack``, or a final error), a
    rate-limited or retried one keeping its place. Other conversations are not held up.
    """

    def __init__(
        self, *, ack_timeout: float = 10.0, send_timeout: float | None = 60.0, backoff: Backoff | None = None
    ) -> None:
        self.ack_timeout = ack_timeout
        self.send_timeout = send_timeout
        self._backoff = backoff or Backoff(base=1.0, cap=30.0)
        self._items: dict[str, Outgoing] = {}
        #: per conversation (``to:{user}`` or ``list:{id}``): the client id of the message in flight
        self._in_flight: dict[str, str] = {}
        self._added = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._items

    def get(self, client_id: str) -> Outgoing | None:
        return self._items.get(client_id)

    def unsettled(self) -> list[Outgoing]:
        """Messages not yet sent (pending, accepted, or failed without an answer), oldest first."""
        return sorted(self._items.values(), key=lambda o: o.created)

    def add(self, outgoing: Outgoing) -> Outgoing:
        """Queue a new message; its client id must not be in the outbox already."""
        if outgoing.client_id in self._items:
            raise ValueError(f"client id {outgoing.client_id!r} is already in the outbox: use resend()")
        self._added += 1
        outgoing._order = self._added
        self._items[outgoing.client_id] = outgoing
        return outgoing

    def resend(self, outgoing: Outgoing, now: float) -> Outgoing:
        """Send again, with the same client id, at once (a message that failed, or one whose
        answer the application does not want to wait for); its send timeout starts over. It
        keeps its place in its conversation: a failed one goes after the message in flight."""
        if outgoing.state is not SendState.ACCEPTED:
            outgoing.state = SendState.PENDING
            outgoing.error = None
            outgoing._settled.clear()
            outgoing._accepted.clear()
        outgoing.created = now
        outgoing.next_attempt = now
        self._items[outgoing.client_id] = outgoing
        return outgoing

    def due(self, now: float) -> list[Outgoing]:
        """What to publish now, in the order sent: the message in flight of each conversation
        (or else its first pending one), and accepted ones to ask about again."""
        return [o for o in self._heads() if o.next_attempt is not None and o.next_attempt <= now]

    def published(self, outgoing: Outgoing, now: float) -> None:
        """``outgoing`` was handed to the broker: wait for the answer, then resend."""
        outgoing.attempts += 1
        if outgoing.state is SendState.PENDING and outgoing.client_id in self._items:
            self._in_flight[outgoing.conversation] = outgoing.client_id
            outgoing.next_attempt = now + self.ack_timeout * min(2 ** (outgoing.attempts - 1), 8)
        else:  # accepted (asking for its outcome after a reconnect) or failed: one publish
            outgoing.next_attempt = None

    def reconnected(self, now: float) -> None:
        """A new connection: resend everything unanswered or unsettled (the server answers an
        accepted one with its current state, a settled tip with its outcome); of the pending
        ones, only the head of each conversation goes at once."""
        for outgoing in self._items.values():
            if outgoing.state is not SendState.FAILED:
                outgoing.next_attempt = now

    def on_ack(self, ack: Ack) -> Outgoing | None:
        """An ack; returns the outgoing message it answers, if it is in the outbox."""
        outgoing = self._items.get(ack.client_id)
        if outgoing is None:
            return None
        outgoing.ack = ack
        if ack.status in ("queued", "pending"):
            outgoing.state = SendState.ACCEPTED
            outgoing.error = None
            outgoing.next_attempt = None
            outgoing._accepted.set()
        else:
            outgoing.error = None
            outgoing._settle(SendState.SENT)
            del self._items[ack.client_id]
        self._release(outgoing)
        return outgoing

    def on_error(self, error: CommandError, now: float) -> tuple[Outgoing | None, bool]:
        """An error event: (the outgoing message it answers, whether it is retried). A retried
        error is the outbox's business, not the application's."""
        outgoing = self._items.get(error.client_id or "")
        if outgoing is None:
            return None, False
        if error.code in RETRYABLE and outgoing.state is not SendState.FAILED:
            if error.code == "rate_limited":
                # a hair past retry_after: the bucket has refilled by then
                wait = (error.retry_after or 1.0) * 1.05 + 0.01
            else:
                wait = max(self.ack_timeout / 4, self._backoff.delay(outgoing.attempts))
            outgoing.next_attempt = now + wait
            return outgoing, True
        self._fail(outgoing, SendError(outgoing.client_id, error.code, error.detail))
        return outgoing, False

    def on_tip_failed(self, event: TipFailed) -> Outgoing | None:
        outgoing = self._items.get(event.client_id)
        if outgoing is not None:
            reason = event.reason or "declined"
            detail = f"billing declined the tip ({reason}); fix the payment method at {event.billing_url}"
            self._fail(
                outgoing, SendError(outgoing.client_id, "tip_failed", detail, billing_url=event.billing_url)
            )
        return outgoing

    def expire(self, now: float) -> list[Outgoing]:
        """Fail the pending messages older than ``send_timeout``; they stay in the outbox, so
        that a late ack still marks them sent."""
        if self.send_timeout is None:
            return []
        expired = [
            o
            for o in self._items.values()
            if o.state is SendState.PENDING and now - o.created >= self.send_timeout
        ]
        for outgoing in expired:
            outgoing.error = SendError(
                outgoing.client_id, "timeout", f"no answer within {self.send_timeout:g}s; resend to try again"
            )
            outgoing._settle(SendState.FAILED)
            self._release(outgoing)
        return expired

    def next_wakeup(self) -> float | None:
        """The next moment something is due (a publish or a timeout), or None."""
        moments = [o.next_attempt for o in self._heads() if o.next_attempt is not None]
        if self.send_timeout is not None:
            moments += [
                o.created + self.send_timeout for o in self._items.values() if o.state is SendState.PENDING
            ]
        return min(moments, default=None)

    def _fail(self, outgoing: Outgoing, error: SendError) -> None:
        outgoing.error = error
        outgoing._settle(SendState.FAILED)
        del self._items[outgoing.client_id]
        self._release(outgoing)

    def _release(self, outgoing: Outgoing) -> None:
        """The server answered ``outgoing`` for good: the next waiting message of its
        conversation may go (:meth:`due`)."""
        if self._in_flight.get(outgoing.conversation) == outgoing.client_id:
            del self._in_flight[outgoing.conversation]

    def _heads(self) -> list[Outgoing]:
        """What may be published, in the order sent: each conversation's message in flight, or
        else its first pending one (the rest wait their turn); and the accepted ones, which
        hold up nothing."""
        heads: list[Outgoing] = []
        started: set[str] = set()
        for outgoing in sorted(self._items.values(), key=lambda o: o._order):
            if outgoing.state is SendState.ACCEPTED:
                heads.append(outgoing)
            elif outgoing.state is SendState.PENDING and outgoing.conversation not in started:
                holder = self._in_flight.get(outgoing.conversation)
                if holder is None or holder == outgoing.client_id:
                    started.add(outgoing.conversation)
                    heads.append(outgoing)
        return heads
