"""The embedded billing ledger: balances per user and currency, and idempotent charges."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from messenger.models import LedgerBalance, LedgerCharge


def balances(session: Session, user_id: str) -> dict[str, int]:
    rows = session.scalars(select(LedgerBalance).where(LedgerBalance.user_id == user_id))
    return {row.currency: row.amount for row in rows}


def top_up(session: Session, user_id: str, currency: str, amount: int) -> int:
    """Add ``amount`` minor units to the user's balance; returns the new balance."""
    row = _locked(session, user_id, currency)
    if row is None:
        row = LedgerBalance(user_id=user_id, currency=currency, amount=0)
        session.add(row)  # two first top-ups at once: one fails on the key and is retried
    row.amount += amount
    session.flush()
    return row.amount


def charge(
    session: Session,
    *,
    payer: str,
    payee: str,
    amount: int,
    currency: str,
    idempotency_key: str,
    description: str,
) -> tuple[str, str | None, str | None]:
    """Charge once per idempotency key: move the amount from payer to payee (``succeeded``), or
    record a failure (``failed``, ``insufficient_funds``). A repeated key returns what the first
    charge did; a repeated key with another payer, payee, amount or currency fails
    (``idempotency_conflict``). Returns (status, reason, charge id)."""
    done = session.get(LedgerCharge, idempotency_key)
    if done is not None:
        if (done.payer_id, done.payee_id, done.amount, done.currency) != (payer, payee, amount, currency):
            return "failed", "idempotency_conflict", None
        return done.status, done.reason, done.id
    balance = _locked(session, payer, currency)
    status, reason = "succeeded", None
    if balance is None or balance.amount < amount:
        status, reason = "failed", "insufficient_funds"
    else:
        balance.amount -= amount
        earned = _locked(session, payee, currency)
        if earned is None:
            session.add(LedgerBalance(user_id=payee, currency=currency, amount=amount))
        else:
            earned.amount += amount
    row = LedgerCharge(
        idempotency_key=idempotency_key,
        id=f"ch_{uuid.uuid4().hex}",
        payer_id=payer,
        payee_id=payee,
        amount=amount,
        currency=currency,
        description=description[:256],
        status=status,
        reason=reason,
    )
    session.add(row)
    session.flush()  # a concurrent charge with the same key fails here, before the commit
    return status, reason, row.id


def _locked(session: Session, user_id: str, currency: str) -> LedgerBalance | None:
    # FOR UPDATE on MariaDB: two charges of one payer never both spend the same balance
    return session.scalars(
        select(LedgerBalance)
        .where(LedgerBalance.user_id == user_id, LedgerBalance.currency == currency)
        .with_for_update()
    ).one_or_none()
