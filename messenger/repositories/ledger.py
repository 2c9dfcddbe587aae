"""The embedded billing ledger: balances per user and currency, and idempotent charges."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from messenger.models import LedgerBalance, LedgerCharge
from messenger.repositories.users import insert_ignore


def balances(session: Session, user_id: str) -> dict[str, int]:
    rows = session.scalars(select(LedgerBalance).where(LedgerBalance.user_id == user_id))
    return {row.currency: row.amount for row in rows}


def top_up(session: Session, user_id: str, currency: str, amount: int) -> int:
    """Add ``amount`` minor units to the user's balance; returns the new balance."""
    _credit(session, user_id, currency, amount)
    return int(
        session.scalar(
            select(LedgerBalance.amount).where(
                LedgerBalance.user_id == user_id, LedgerBalance.currency == currency
            )
        )
        or 0
    )


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
    (``idempotency_conflict``). Returns (status, reason, charge id).

    The balance is checked and debited by one conditional UPDATE, not read then written: SQLite
    ignores ``FOR UPDATE``, and two charges reading the same balance would both spend it.
    """
    done = session.get(LedgerCharge, idempotency_key)
    if done is not None:
        if (done.payer_id, done.payee_id, done.amount, done.currency) != (payer, payee, amount, currency):
            return "failed", "idempotency_conflict", None
        return done.status, done.reason, done.id
    debited = session.execute(
        update(LedgerBalance)
        .where(
            LedgerBalance.user_id == payer,
            LedgerBalance.currency == currency,
            LedgerBalance.amount >= amount,
        )
        .values(amount=LedgerBalance.amount - amount)
    )
    status, reason = "succeeded", None
    if debited.rowcount:  # type: ignore[attr-defined]
        _credit(session, payee, currency, amount)
    else:
        status, reason = "failed", "insufficient_funds"
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
    # a concurrent charge with the same key fails here, and its debit is rolled back with it
    session.flush()
    return status, reason, row.id


def _credit(session: Session, user_id: str, currency: str, amount: int) -> None:
    session.execute(
        insert_ignore(session, LedgerBalance), [{"user_id": user_id, "currency": currency, "amount": 0}]
    )
    session.execute(
        update(LedgerBalance)
        .where(LedgerBalance.user_id == user_id, LedgerBalance.currency == currency)
        .values(amount=LedgerBalance.amount + amount)
    )
