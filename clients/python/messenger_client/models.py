"""What the REST API answers (docs/api.md), as typed values. Messages are :class:`Message` from
:mod:`messenger_client.events`, the same type as over MQTT."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from .events import Message

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset-paged list: pass ``next_before`` as ``before`` (or ``next_after`` as
    ``after``) for the next one; ``None`` at the end."""

    items: list[T]
    next_before: int | None = None
    next_after: int | None = None


@dataclass(frozen=True, slots=True)
class NamePage(Generic[T]):
    """A page of a list ordered by name (blocks, lists, members): ``next_after`` is a name."""

    items: list[T]
    next_after: str | None = None


@dataclass(frozen=True, slots=True)
class ReadMark:
    """Messages from ``sender`` were marked read up to ``up_to``."""

    sender: str
    up_to: int


@dataclass(frozen=True, slots=True)
class Conversation:
    peer: str
    last_message: Message
    unread: int


@dataclass(frozen=True, slots=True)
class Block:
    user: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Device:
    device: str
    node: str
    since: datetime


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    user: str
    online: bool
    devices: list[Device]
    since: datetime | None
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class TipRecord:
    """A tip over REST. ``status`` is ``succeeded``, ``pending`` (settled later) or ``failed``
    (with ``billing_url``)."""

    id: int
    client_id: str
    sender: str
    to: str
    amount: int
    currency: str
    body: str
    status: str
    reason: str | None
    message_id: int | None
    billing_url: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MemberList:
    id: str
    name: str
    owner: str
    members: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MassMessage:
    """A message to a list and its fan-out."""

    id: int
    client_id: str
    list_id: str
    body: str
    status: str  # queued, sending, sent, failed, canceled
    recipients: int | None
    processed: int
    stored: int
    skipped: int
    progress: float | None


@dataclass(frozen=True, slots=True)
class Me:
    user: str
    role: str
    display_name: str | None
    created_at: datetime | None
    token_expires_at: datetime | None
