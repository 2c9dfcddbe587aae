"""Conversations: one row per user and peer with the id of their last message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from messenger.models import Conversation, Message
from messenger.repositories import json_rows


def touch_many(session: Session, messages: Iterable[Message]) -> None:
    """Move each conversation of ``messages`` to its newest message, in one upsert.

    Both sides of a message move; a blocked message moves only its sender's side, since its
    recipient never sees it.
    """
    sides: list[tuple[str, str, int]] = []
    for m in messages:
        sides.append((m.sender_id, m.recipient_id, m.id))
        if not m.blocked:
            sides.append((m.recipient_id, m.sender_id, m.id))
    touch(session, sides)


def touch(session: Session, sides: Iterable[tuple[str, str, int]]) -> None:
    """Move conversations given as (owner, peer, message id) to their newest message, in one
    upsert. Rows go in key order, so that two transactions upserting the same conversations
    lock them in the same order; they are bound as one JSON array (a fan-out page moves a
    thousand conversations)."""
    last: dict[tuple[str, str], int] = {}
    for owner, peer, message_id in sides:
        last[(owner, peer)] = max(last.get((owner, peer), 0), message_id)
    if not last:
        return
    rows = [(owner, peer, top) for (owner, peer), top in sorted(last.items())]
    sides_table = json_rows.table(
        session, "sides", [("owner", json_rows.ID), ("peer", json_rows.ID), ("top", json_rows.BIGINT)]
    )
    insert = (
        "INSERT INTO conversations (owner_id, peer_id, last_message_id) "  # noqa: S608 - no values
        f"SELECT j.owner, j.peer, j.top FROM {sides_table}"
    )
    if json_rows.is_mysql(session):
        upsert = (
            " ON DUPLICATE KEY UPDATE last_message_id = GREATEST(last_message_id, VALUES(last_message_id))"
        )
    else:  # "WHERE true": SQLite would read ON CONFLICT as part of a join
        upsert = (
            " WHERE true ON CONFLICT (owner_id, peer_id)"
            " DO UPDATE SET last_message_id = max(last_message_id, excluded.last_message_id)"
        )
    session.execute(text(insert + upsert), {"sides": json_rows.dumps(rows)})


def page(
    session: Session, owner_id: str, *, before: int | None = None, limit: int = 50
) -> list[Conversation]:
    """``owner_id``'s conversations, most recent activity first, by keyset on the last message id."""
    query = select(Conversation).where(Conversation.owner_id == owner_id)
    if before is not None:
        query = query.where(Conversation.last_message_id < before)
    return list(session.scalars(query.order_by(Conversation.last_message_id.desc()).limit(limit)))


def unread_counts(session: Session, owner_id: str, peers: Sequence[str]) -> dict[str, int]:
    """How many unread messages each of ``peers`` sent ``owner_id`` (blocked ones never count)."""
    if not peers:
        return {}
    rows = session.execute(
        select(Message.sender_id, func.count())
        .where(
            Message.recipient_id == owner_id,
            Message.sender_id.in_(list(peers)),
            Message.read_at.is_(None),
            Message.blocked.is_(False),
        )
        .group_by(Message.sender_id)
    )
    return {sender: int(count) for sender, count in rows}
