"""What :meth:`messenger_client.Client.events` yields: the protocol's messages and events as
typed, immutable values, plus the client's own connection events.

Field names follow the protocol (docs/protocol.md) except where a JSON name is a Python keyword or
builtin: ``from`` is ``sender``, ``list`` is ``list_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TipInfo:
    """A tip on a message or in an ack: minor units (500 = 5.00)."""

    amount: int
    currency: str | None
    status: str | None  # succeeded, pending, failed


@dataclass(frozen=True, slots=True)
class Message:
    """A message to this user (``users/{uid}/messages``), live or caught up; each is yielded once,
    whatever the broker or a catch-up repeats."""

    id: int  # the server id: unique, increasing
    client_id: str  # the sender's id for it
    sender: str
    to: str
    body: str
    sent_at: datetime
    read_at: datetime | None = None
    tip: TipInfo | None = None
    list_id: str | None = None  # set on a copy of a mass message


@dataclass(frozen=True, slots=True)
class Ack:
    """The server stored (``sent``), accepted (``queued`` mass message, ``pending`` tip charge) a
    message sent by this user, from this device or another."""

    client_id: str
    id: int | None
    status: str
    duplicate: bool = False
    sent_at: datetime | None = None
    tip: TipInfo | None = None
    mass_message: int | None = None


@dataclass(frozen=True, slots=True)
class CommandError:
    """An ``error`` event the client did not handle itself (it retries ``rate_limited``,
    ``service_unavailable`` and ``internal_error`` of its own sends, and its catch-ups)."""

    client_id: str | None
    code: str
    detail: str
    retry_after: float | None = None
    #: with ``rate_limited``: the bucket (``send``, ``tip``, ``charge_declined``, ``read``, ``sync``)
    limit: str | None = None


@dataclass(frozen=True, slots=True)
class TipFailed:
    """Billing declined a tip; nothing was delivered. Send the user to ``billing_url``."""

    client_id: str
    billing_url: str
    reason: str | None = None
    tip: TipInfo | None = None


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """``by`` read this user's messages up to ``up_to``."""

    by: str
    up_to: int


@dataclass(frozen=True, slots=True)
class Typing:
    sender: str


@dataclass(frozen=True, slots=True)
class Synced:
    """The end of a catch-up page (the client pages on by itself; yielded as :class:`CaughtUp`)."""

    last_id: int | None
    more: bool
    #: the ``id`` of the ``sync`` it answers; None for the server's own catch-up (a device came
    #: online) and a ``sync`` without one
    client_id: str | None = None
    #: the server named the request (``client_id`` was there, null or not); older servers do not
    named: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    """A device of a watched user went online or offline (``retained``: the broker's stored state,
    replayed when the watch began)."""

    user: str
    device: str
    online: bool
    retained: bool = False


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event of a type this version does not know (newer servers may add some)."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is up and subscribed; ``reconnect`` is False for the first one."""

    reconnect: bool


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The catch-up of this connection is done: every message stored before it has been
    yielded. ``last_id`` is where the next one will start (persist it, see ``Client.last_id``)."""

    last_id: int | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection dropped (or a connect failed); the client tries again in ``retry_in`` s."""

    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class SendTimedOut:
    """A message got no answer within the send timeout; it stays in the outbox as ``failed``.
    ``Client.resend`` tries again with the same client id (stored at most once)."""

    client_id: str


#: A server event on ``users/{uid}/events``, as parsed.
ServerEvent = Ack | CommandError | TipFailed | ReadReceipt | Typing | Synced | UnknownEvent
#: Everything ``Client.events()`` yields.
Event = (
    Message
    | Ack
    | CommandError
    | TipFailed
    | ReadReceipt
    | Typing
    | Presence
    | UnknownEvent
    | Connected
    | CaughtUp
    | Disconnected
    | SendTimedOut
)
