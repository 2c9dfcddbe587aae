"""What users do, implemented once for every way in: MQTT commands (the handler) and REST (the API).

Each action works inside the caller's unit of work and returns the MQTT messages to publish
*after* the commit (:class:`Outbound`); it never publishes itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from acl.topics import events_topic, messages_topic
from messenger import protocol, ratelimit
from messenger.exceptions import Rejected
from messenger.metrics import Metrics
from messenger.models import BlockedUser, Message
from messenger.ratelimit import Action, RateLimiter
from messenger.repositories import blocks, client_ids, conversations, messages, users
from messenger.repositories.messages import NewMessage


class Kind(StrEnum):
    """What an :class:`Outbound` is, for the metrics."""

    MESSAGE = "message"  # a message delivered to its recipient
    STORED = "stored"  # the ack of a message stored just now (not a duplicate)
    ERROR = "error"  # an error event; ``code`` says which
    EVENT = "event"  # any other event


@dataclass(frozen=True, slots=True)
class Outbound:
    """One MQTT message to publish once the transaction that produced it has committed."""

    topic: str
    payload: bytes
    kind: Kind = Kind.EVENT
    code: str | None = None


def count(metrics: Metrics | None, out: Sequence[Outbound], via: str) -> None:
    """Count stored, delivered and refused messages among ``out`` (``via``: ``mqtt`` or ``http``)."""
    if metrics is None:
        return
    for o in out:
        if o.kind is Kind.MESSAGE:
            metrics.messages_delivered.inc()
        elif o.kind is Kind.STORED:
            metrics.messages_stored.labels(via).inc()
        elif o.kind is Kind.ERROR:
            metrics.messages_rejected.labels(o.code or "unknown", via).inc()


def event(
    user_id: str, payload: dict[str, object], kind: Kind = Kind.EVENT, code: str | None = None
) -> Outbound:
    """An event for ``user_id``; ``code`` names a refusal (``Kind.ERROR``) for the metrics."""
    return Outbound(events_topic(user_id), protocol.encode(payload), kind, code)


def error(user_id: str, code: str, detail: str, client_id: str | None = None, **extra: object) -> Outbound:
    """An ``error`` event for ``user_id``."""
    return event(user_id, protocol.error_event(code, detail, client_id, **extra), Kind.ERROR, code)


def delivery(message: Message) -> Outbound:
    return Outbound(
        messages_topic(message.recipient_id), protocol.encode(protocol.message_payload(message)), Kind.MESSAGE
    )


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A 1:1 message as a client asked for it (``client_id`` is its idempotency key)."""

    sender: str
    client_id: str
    to: str
    body: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one :class:`SendRequest`: the stored message, or why it was refused."""

    request: SendRequest
    message: Message | None = None
    created: bool = False
    error: Rejected | None = None


class _Limited(Protocol):
    @property
    def sender(self) -> str: ...


R = TypeVar("R", bound=_Limited)


def rate_limit(
    limiter: RateLimiter | None, requests: Sequence[R], action: Action = Action.SEND
) -> tuple[list[R], list[tuple[R, Rejected]]]:
    """Split ``requests`` into those within their sender's ``action`` bucket and ``rate_limited``
    refusals.

    One limiter round trip for the whole batch; each sender's earliest requests go first.
    """
    grants = ratelimit.acquire(limiter, [(action, r.sender) for r in requests])
    allowed: list[R] = []
    refused: list[tuple[R, Rejected]] = []
    for request in requests:
        wait = grants.take((action, request.sender))
        if wait is None:
            allowed.append(request)
        else:
            refused.append((request, ratelimit.refusal(action, wait)))
    return allowed, refused


def send_messages(
    session: Session, requests: Sequence[SendRequest]
) -> tuple[list[SendResult], list[Outbound]]:
    """Validate and store 1:1 messages idempotently; return each result and what to publish.

    * A sender messaging themself gets ``invalid_recipient``; an unknown sender or recipient
      ``unknown_sender`` / ``unknown_recipient``.
    * A message to someone who blocked the sender is stored with ``blocked=True`` and not
      delivered; the sender's ``ack`` looks like any other.
    * A repeated ``(sender, client_id)`` returns the original message (``created=False``) and
      is acked again, never stored twice; reusing a client id for another recipient or another
      body is ``idempotency_conflict``.
    """
    results: list[SendResult | None] = [None] * len(requests)
    known = users.existing_ids(session, {r.to for r in requests} | {r.sender for r in requests})
    refused = blocks.blocked_pairs(session, [(r.to, r.sender) for r in requests if r.to in known])
    pairs = [(r.sender, r.client_id) for r in requests]
    existing = messages.by_client_ids(session, pairs)
    taken = client_ids.used_elsewhere(session, pairs, kind="message")
    earlier: dict[tuple[str, str], list[Message]] = {}
    for m in existing.values():
        earlier.setdefault((m.sender_id, m.client_msg_id), []).append(m)
    accepted: list[tuple[int, NewMessage]] = []
    for i, r in enumerate(requests):
        if (r.sender, r.client_id) in taken or any(
            m.recipient_id != r.to or m.body != r.body or m.tip_amount is not None
            for m in earlier.get((r.sender, r.client_id), ())
        ):
            detail = f"client id {r.client_id!r} was already used for another message"
            results[i] = SendResult(r, error=Rejected(detail, code="idempotency_conflict"))
        elif r.to == r.sender:
            results[i] = SendResult(
                r, error=Rejected("you cannot message yourself", code="invalid_recipient")
            )
        elif r.sender not in known:
            # the broker let in a user nobody provisioned (possible with an external gateway)
            results[i] = SendResult(r, error=Rejected("your user is not provisioned", code="unknown_sender"))
        elif r.to not in known:
            results[i] = SendResult(r, error=Rejected(f"no user {r.to!r}", code="unknown_recipient"))
        else:
            blocked = (r.to, r.sender) in refused
            accepted.append((i, NewMessage(r.sender, r.to, r.client_id, r.body, blocked=blocked)))
    # every key of `accepted` was looked up just above: no second lookup
    stored = messages.store_many(session, [new for _, new in accepted], stored=existing)
    conversations.touch_many(session, [m for m, created in stored if created])
    out: list[Outbound] = []
    for (i, _), (message, created) in zip(accepted, stored, strict=True):
        results[i] = SendResult(requests[i], message, created)
        if not message.blocked:
            out.append(delivery(message))
        ack = protocol.ack_event(message, duplicate=not created)
        out.append(event(message.sender_id, ack, Kind.STORED if created else Kind.EVENT))
    return [r for r in results if r is not None], out


def refusal_event(sender: str, client_id: str | None, refusal: Rejected) -> Outbound:
    """The ``error`` event telling ``sender`` a command was refused."""
    return error(sender, refusal.code, refusal.detail, client_id, **refusal.extra)


def mark_read(
    session: Session,
    reader: str,
    *,
    up_to: int | None = None,
    ids: Sequence[int] | None = None,
    peer: str | None = None,
) -> tuple[dict[str, int], list[Outbound]]:
    """Mark messages to ``reader`` read (up to an id, or by ids); each sender gets a ``read`` event.

    Returns the highest id marked per sender, and the events to publish.
    """
    marked = messages.mark_read(session, reader, up_to, ids=ids, peer=peer)
    out = [event(sender, protocol.read_event(reader, top)) for sender, top in marked.items()]
    return marked, out


def block(session: Session, blocker: str, blocker_role: str, blocked: str) -> BlockedUser:
    """``blocker`` blocks ``blocked`` (idempotent). Refuses blocking yourself or an unknown user."""
    if blocked == blocker:
        raise Rejected("you cannot block yourself", code="invalid_block")
    if users.get(session, blocked) is None:
        raise Rejected(f"no user {blocked!r}", code="unknown_user")
    users.ensure(session, blocker, blocker_role)
    return blocks.block(session, blocker, blocked)


def unblock(session: Session, blocker: str, blocked: str) -> bool:
    """Remove a block (idempotent); False when there was none."""
    return blocks.unblock(session, blocker, blocked)
