"""Mass messages: queued by a creator, expanded by one fan-out worker at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from messenger.models import MassMessage
from messenger.repositories import client_ids, indexes

#: Statuses a fan-out still has to work on.
ACTIVE = ("queued", "sending")
FINAL = ("sent", "failed", "canceled")


def by_client_ids(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], MassMessage]:
    return {(m.sender_id, m.client_msg_id): m for m in client_ids.rows(session, MassMessage, pairs)}


def get(session: Session, mass_message_id: int, *, for_update: bool = False) -> MassMessage | None:
    return session.get(MassMessage, mass_message_id, with_for_update=for_update)


def claimable(session: Session, owner: str, now: datetime, limit: int = 10) -> list[int]:
    """Active mass messages nobody holds (or whose holder's lease ran out, or that ``owner``
    held before a restart), oldest first."""
    query = (
        select(MassMessage.id)
        .where(
            MassMessage.status.in_(ACTIVE),
            or_(
                MassMessage.lease_until.is_(None),
                MassMessage.lease_until < now,
                MassMessage.lease_owner == owner,
            ),
        )
        .order_by(MassMessage.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def claim(session: Session, mass_message_id: int, owner: str, now: datetime, lease_s: float) -> bool:
    """Take a mass message for ``lease_s``; the holder renews the lease with every chunk."""
    result = session.execute(
        update(MassMessage)
        .where(
            MassMessage.id == mass_message_id,
            MassMessage.status.in_(ACTIVE),
            or_(
                MassMessage.lease_until.is_(None),
                MassMessage.lease_until < now,
                MassMessage.lease_owner == owner,
            ),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, mass_message_id: int, owner: str) -> None:
    """Let another worker take it at once (a worker stopping in the middle of a fan-out)."""
    session.execute(
        update(MassMessage)
        .where(MassMessage.id == mass_message_id, MassMessage.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def sent_by(
    session: Session, sender_id: str, *, before: int | None = None, limit: int = 50
) -> list[MassMessage]:
    query = indexes.force(
        select(MassMessage).where(MassMessage.sender_id == sender_id),
        MassMessage,
        "ix_mass_messages_sender_id_id",
    )
    if before is not None:
        query = query.where(MassMessage.id < before)
    return list(session.scalars(query.order_by(MassMessage.id.desc()).limit(limit)))
