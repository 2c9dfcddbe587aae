"""Blocks: who refuses messages from whom."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from messenger.models import BlockedUser


def block(session: Session, blocker_id: str, blocked_id: str) -> BlockedUser:
    """Block ``blocked_id`` for ``blocker_id``; blocking twice keeps the first row."""
    row = session.get(BlockedUser, (blocker_id, blocked_id))
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = BlockedUser(blocker_id=blocker_id, blocked_id=blocked_id)
            session.add(row)
    except IntegrityError:
        row = session.get(BlockedUser, (blocker_id, blocked_id))
        if row is None:
            raise
    return row


def unblock(session: Session, blocker_id: str, blocked_id: str) -> bool:
    """Remove a block; False when there was none."""
    result = session.execute(
        delete(BlockedUser).where(BlockedUser.blocker_id == blocker_id, BlockedUser.blocked_id == blocked_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def get(session: Session, blocker_id: str, blocked_id: str) -> BlockedUser | None:
    return session.get(BlockedUser, (blocker_id, blocked_id))


def list_for(
    session: Session, blocker_id: str, *, after: str | None = None, limit: int = 100
) -> list[BlockedUser]:
    """The users ``blocker_id`` blocked, by id, keyset-paginated with ``after``."""
    query = select(BlockedUser).where(BlockedUser.blocker_id == blocker_id)
    if after is not None:
        query = query.where(BlockedUser.blocked_id > after)
    return list(session.scalars(query.order_by(BlockedUser.blocked_id).limit(limit)))


def blocked_pairs(session: Session, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (blocker, blocked) pairs among ``pairs`` that are blocks, in one query."""
    wanted = set(pairs)
    if not wanted:
        return set()
    # two single-column INs, exact pairs picked here: MariaDB plans a 500-row row-constructor IN
    # in about 100 ms (a third of a handler batch), these in 3 ms (a range on the blocker)
    rows = session.execute(
        select(BlockedUser.blocker_id, BlockedUser.blocked_id).where(
            BlockedUser.blocker_id.in_(sorted({blocker for blocker, _ in wanted})),
            BlockedUser.blocked_id.in_(sorted({blocked for _, blocked in wanted})),
        )
    )
    return {(blocker, blocked) for blocker, blocked in rows if (blocker, blocked) in wanted}
