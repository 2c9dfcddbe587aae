"""Tips, for the handler (``tip`` on a ``message`` command) and the API (``POST /v1/tips``).

A tip goes through three steps, never charged twice however often any of them is repeated:

1. :func:`record_tips` checks it (member to creator, not blocked, amount and currency within
   the policy) and records it ``pending`` in the caller's transaction. A redelivered command
   finds its tip and is answered from it.
2. :func:`settle` charges it (outside any transaction: the billing service may be slow), with
   an idempotency key derived from the payer and the client message id; not when the payer's
   ``charge_declined`` bucket is empty (:mod:`messenger.ratelimit`): then it fails unasked.
3. In one more transaction it records the outcome: ``succeeded`` stores the message with its
   tip and delivers it; ``failed`` sends the payer ``tip_failed``; an unknown outcome leaves it
   ``pending`` for a later attempt with the same key (:func:`due_tips`, :func:`claim`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from messenger import protocol, ratelimit
from messenger.actions import Kind, Outbound, delivery, event
from messenger.db import unit_of_work
from messenger.exceptions import Rejected, StoreUnavailable
from messenger.models import Message, Tip, utcnow
from messenger.ratelimit import Action, RateLimiter
from messenger.repositories import blocks, client_ids, conversations, messages, tips, users
from messenger.repositories.messages import NewMessage
from messenger.services.billing import Billing, Charge, ChargeResult, ChargeStatus
from messenger.settings import ProductSettings

logger = logging.getLogger(__name__)

#: How long one settlement attempt holds a tip before another settler may try it.
LEASE_S = 60.0
#: The longest wait between two attempts of a charge whose outcome is unknown.
MAX_RETRY_S = 300.0


@dataclass(frozen=True, slots=True)
class TipPolicy:
    min_amount: int = 100
    max_amount: int = 200_000
    currencies: frozenset[str] = frozenset({"USD", "EUR", "GBP"})
    billing_url: str = "http://localhost:3000/settings/billing"
    retry_s: float = 5.0

    @classmethod
    def of(cls, settings: ProductSettings) -> TipPolicy:
        return cls(
            settings.tip_min_amount,
            settings.tip_max_amount,
            settings.accepted_currencies(),
            settings.billing_preferences_url,
            settings.tip_retry_s,
        )


@dataclass(frozen=True, slots=True)
class TipRequest:
    payer: str
    client_id: str
    payee: str
    body: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """What became of one :class:`TipRequest`: its tip (new or found again), or why it was refused."""

    request: TipRequest
    tip: Tip | None = None
    created: bool = False
    error: Rejected | None = None


def idempotency_key(payer: str, client_id: str) -> str:
    """The billing idempotency key of a tip: the client message id, scoped by its payer."""
    return f"tip:{payer}:{client_id}"


def admit(limiter: RateLimiter | None, request: TipRequest) -> None:
    """Take a token of the payer's ``tip`` bucket, and check that their ``charge_declined``
    bucket has one left; raises ``rate_limited`` otherwise (one limiter round trip).

    The handler does the same for a whole batch of commands (``CommandProcessor.prepare``).
    """
    tipped, declines = (Action.TIP, request.payer), (Action.CHARGE_DECLINED, request.payer)
    grants = ratelimit.acquire(limiter, [tipped], [declines])
    if (wait := grants.take(tipped)) is not None:
        raise ratelimit.refusal(Action.TIP, wait)
    if (wait := grants.look(declines)) is not None:
        raise ratelimit.refusal(Action.CHARGE_DECLINED, wait)


def record_tips(
    session: Session, requests: Sequence[TipRequest], policy: TipPolicy, *, claimed_by: str | None = None
) -> tuple[list[Recorded], list[Outbound]]:
    """Check and record tips ``pending``; returns each result and the replies to publish.

    A repeat of a recorded tip is answered from its state: ``succeeded`` acks again with the
    message, ``failed`` repeats ``tip_failed``, ``pending`` says nothing (its settler will).
    ``claimed_by`` records new tips as already claimed for a first attempt by that caller (the
    API, which charges at once), so no background settler charges them at the same time.
    """
    ids = {r.payer for r in requests} | {r.payee for r in requests}
    roles = users.roles(session, ids)
    refused = blocks.blocked_pairs(session, [(r.payee, r.payer) for r in requests])
    pairs = [(r.payer, r.client_id) for r in requests]
    found = tips.by_client_ids(session, pairs)
    taken = client_ids.used_elsewhere(session, pairs, kind="tip")
    shown = messages.by_ids(session, [t.message_id for t in found.values() if t.message_id is not None])
    results: list[Recorded] = []
    out: list[Outbound] = []
    now = utcnow()
    for r in requests:
        earlier = found.get((r.payer, r.client_id))
        if (r.payer, r.client_id) in taken:
            detail = f"client id {r.client_id!r} was already used for another message"
            results.append(Recorded(r, error=Rejected(detail, code="idempotency_conflict")))
            continue
        if earlier is not None:
            if (earlier.payee_id, earlier.amount, earlier.currency, earlier.body) != (
                r.payee,
                r.amount,
                r.currency,
                r.body,
            ):
                detail = f"client id {r.client_id!r} was already used for another tip"
                results.append(Recorded(r, error=Rejected(detail, code="idempotency_conflict")))
                continue
            results.append(Recorded(r, earlier))
            out.extend(_answer(earlier, shown.get(earlier.message_id or 0), policy, duplicate=True))
            continue
        error = _check(r, roles, refused, policy)
        if error is not None:
            results.append(Recorded(r, error=error))
            continue
        tip = Tip(
            payer_id=r.payer,
            payee_id=r.payee,
            client_msg_id=r.client_id,
            amount=r.amount,
            currency=r.currency,
            body=r.body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
        )
        if claimed_by is not None:
            tip.attempts, tip.lease_owner = 1, claimed_by
            tip.next_attempt_at = now + timedelta(seconds=LEASE_S)
        session.add(tip)
        found[(r.payer, r.client_id)] = tip  # the same tip twice in one batch is recorded once
        results.append(Recorded(r, tip, created=True))
    session.flush()  # a concurrent handler recording the same tip fails here: the caller retries
    return results, out


def _check(
    r: TipRequest, roles: dict[str, str], refused: set[tuple[str, str]], policy: TipPolicy
) -> Rejected | None:
    if r.currency not in policy.currencies:
        accepted = ", ".join(sorted(policy.currencies))
        return Rejected(f"tips are accepted in {accepted}, not {r.currency}", code="invalid_tip")
    if not policy.min_amount <= r.amount <= policy.max_amount:
        return Rejected(
            f"a tip is between {policy.min_amount} and {policy.max_amount} minor units", code="invalid_tip"
        )
    if r.payer == r.payee:
        return Rejected("you cannot tip yourself", code="invalid_recipient")
    if r.payer not in roles:
        return Rejected("your user is not provisioned", code="unknown_sender")
    if r.payee not in roles:
        return Rejected(f"no user {r.payee!r}", code="unknown_recipient")
    if roles[r.payer] != "member":
        return Rejected("only members send tips", code="tip_refused")
    if roles[r.payee] != "creator":
        return Rejected(f"{r.payee} is not a creator; tips go to creators", code="tip_refused")
    if (r.payee, r.payer) in refused:
        # said plainly, unlike a blocked message: a tip into the void would cost money
        return Rejected(f"{r.payee} does not accept tips from you", code="tip_refused")
    return None


def _answer(tip: Tip, message: Message | None, policy: TipPolicy, *, duplicate: bool) -> list[Outbound]:
    """What the payer is told about a tip in its current state."""
    if tip.status == "succeeded":
        ack = protocol.tip_ack(
            tip.client_msg_id, message, tip.amount, tip.currency, "succeeded", duplicate=duplicate
        )
        return [event(tip.payer_id, ack, Kind.EVENT if duplicate else Kind.STORED)]
    if tip.status == "failed":
        failed = protocol.tip_failed_event(
            tip.client_msg_id, policy.billing_url, tip.reason, tip.amount, tip.currency
        )
        return [event(tip.payer_id, failed, Kind.ERROR, "tip_failed")]
    return []


def charge_of(tip: Tip) -> Charge:
    return Charge(
        payer=tip.payer_id,
        payee=tip.payee_id,
        amount=tip.amount,
        currency=tip.currency,
        idempotency_key=idempotency_key(tip.payer_id, tip.client_msg_id),
        description=f"Tip from {tip.payer_id} to {tip.payee_id}",
    )


def due_tips(sessions: sessionmaker[Session], owner: str, limit: int = 10) -> list[int]:
    """Claim up to ``limit`` pending tips whose next attempt is due; returns their ids."""
    now = utcnow()
    with unit_of_work(sessions) as session:
        candidates = tips.due(session, now, limit)
        return [tip_id for tip_id in candidates if tips.claim(session, tip_id, owner, now, LEASE_S)]


def settle(
    sessions: sessionmaker[Session],
    billing: Billing,
    tip_id: int,
    policy: TipPolicy,
    limiter: RateLimiter | None = None,
) -> tuple[Tip | None, list[Outbound]]:
    """Charge a claimed pending tip and record the outcome; returns the tip and what to publish.

    With a ``limiter``, a payer whose ``charge_declined`` bucket is empty is not charged: the
    tip fails at once (``tip_failed``: their payment method needs fixing), and billing is not
    called; each charge billing declines takes a token of that bucket.

    Raises StoreUnavailable when the database is down: the tip stays pending, its lease runs
    out and it is tried again, with the same idempotency key. The limiter's store (Redis) being
    down does not stop a settlement: the tip was admitted when it came in.
    """
    with unit_of_work(sessions) as session:
        tip = session.get(Tip, tip_id)
        if tip is None or tip.status != "pending":
            return tip, []
        charge = charge_of(tip)
    declines = (Action.CHARGE_DECLINED, charge.payer)
    try:
        wait = ratelimit.acquire(limiter, look=[declines]).look(declines)
    except StoreUnavailable:  # the tip passed the same check when it came in: settle it anyway
        logger.warning("tip %d: declined charges not checked: rate limit store unavailable", tip_id)
        wait = None
    if wait is None:
        result = billing.charge(charge)
    else:  # billing is not asked: money did not move
        logger.info("tip %d of %s not charged: too many declined charges", tip_id, charge.payer)
        result = ChargeResult(ChargeStatus.FAILED, f"too many declined charges; retry in {wait:g}s")
    tip, out, recorded = _record(sessions, tip_id, result, policy)
    if recorded and wait is None and result.status is ChargeStatus.FAILED:
        try:
            ratelimit.acquire(limiter, [declines])
        except StoreUnavailable:  # the outcome is recorded; this decline just goes uncounted
            logger.warning("could not count the declined charge of tip %d", tip_id, exc_info=True)
    return tip, out


def _record(
    sessions: sessionmaker[Session], tip_id: int, result: ChargeResult, policy: TipPolicy
) -> tuple[Tip | None, list[Outbound], bool]:
    """Record the outcome of a tip's charge: the tip, what to publish, and whether it was this
    call that recorded it."""
    with unit_of_work(sessions) as session:
        tip = session.get(Tip, tip_id, with_for_update=True)
        if tip is None or tip.status != "pending":
            return tip, [], False  # another settler recorded the same (idempotent) outcome first
        now = utcnow()
        if result.status is ChargeStatus.SUCCEEDED:
            new = NewMessage(
                tip.payer_id,
                tip.payee_id,
                tip.client_msg_id,
                tip.body,
                tip_amount=tip.amount,
                tip_currency=tip.currency,
                tip_status="succeeded",
            )
            ((message, created),) = messages.store_many(session, [new])
            if created:
                conversations.touch_many(session, [message])
            tip.status, tip.charge_id, tip.message_id, tip.settled_at = (
                "succeeded",
                result.charge_id,
                message.id,
                now,
            )
            tip.reason = None
            out = [delivery(message), *_answer(tip, message, policy, duplicate=False)]
            logger.info(
                "tip %d of %s to %s succeeded (%s)", tip.id, tip.payer_id, tip.payee_id, result.charge_id
            )
        elif result.status is ChargeStatus.FAILED:
            tip.status, tip.reason, tip.charge_id, tip.settled_at = (
                "failed",
                result.reason,
                result.charge_id,
                now,
            )
            out = _answer(tip, None, policy, duplicate=False)
            logger.info("tip %d of %s failed: %s", tip.id, tip.payer_id, result.reason)
        else:
            wait = min(policy.retry_s * 2 ** max(tip.attempts - 1, 0), MAX_RETRY_S)
            tip.next_attempt_at, tip.reason = now + timedelta(seconds=wait), result.reason
            out = []
            if tip.attempts <= 1:  # say once that it is pending; the settlement follows
                ack = protocol.tip_ack(
                    tip.client_msg_id, None, tip.amount, tip.currency, "pending", duplicate=False
                )
                out.append(event(tip.payer_id, ack))
            logger.warning(
                "tip %d: charge outcome unknown (%s); attempt %d, next in %.0fs",
                tip.id,
                result.reason,
                tip.attempts,
                wait,
            )
        return tip, out, True
