"""Tips: recorded before their charge, claimed by one settler at a time, listed per user."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from messenger.models import Tip
from messenger.repositories import client_ids, indexes


def by_client_ids(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Tip]:
    """Tips by (payer, client message id), in one query."""
    return {(t.payer_id, t.client_msg_id): t for t in client_ids.rows(session, Tip, pairs)}


def due(session: Session, now: datetime, limit: int) -> list[int]:
    """Ids of pending tips whose next attempt is due, oldest first."""
    query = (
        select(Tip.id)
        .where(Tip.status == "pending", Tip.next_attempt_at <= now)
        .order_by(Tip.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim(session: Session, tip_id: int, owner: str, now: datetime, lease_s: float) -> bool:
    """Take a due pending tip for one attempt: no other settler sees it due until the lease ends."""
    result = session.execute(
        update(Tip)
        .where(Tip.id == tip_id, Tip.status == "pending", Tip.next_attempt_at <= now)
        .values(
            lease_owner=owner, next_attempt_at=now + timedelta(seconds=lease_s), attempts=Tip.attempts + 1
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def received(session: Session, payee_id: str, *, before: int | None = None, limit: int = 50) -> list[Tip]:
    """Tips a creator received (settled successfully), newest first."""
    query = indexes.force(
        select(Tip).where(Tip.payee_id == payee_id, Tip.status == "succeeded"), Tip, "ix_tips_payee_id_id"
    )
    if before is not None:
        query = query.where(Tip.id < before)
    return list(session.scalars(query.order_by(Tip.id.desc()).limit(limit)))


def sent(session: Session, payer_id: str, *, before: int | None = None, limit: int = 50) -> list[Tip]:
    """Tips a member sent, whatever their status, newest first."""
    query = indexes.force(select(Tip).where(Tip.payer_id == payer_id), Tip, "ix_tips_payer_id_id")
    if before is not None:
        query = query.where(Tip.id < before)
    return list(session.scalars(query.order_by(Tip.id.desc()).limit(limit)))
