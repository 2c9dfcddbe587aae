"""Conversations: one row per user and peer with the id of their last message."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Insert, func, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import Session

from messenger.models import Conversation, Message


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
    lock them in the same order."""
    last: dict[tuple[str, str], int] = {}
    for owner, peer, message_id in sides:
        last[(owner, peer)] = max(last.get((owner, peer), 0), message_id)
    if not last:
        return
    rows = [
        {"owner_id": owner, "peer_id": peer, "last_message_id": top}
        for (owner, peer), top in sorted(last.items())
    ]
    session.execute(_upsert(session), rows)


def _upsert(session: Session) -> Insert:
    if session.get_bind().dialect.name in ("mysql", "mariadb"):
        ins = mysql.insert(Conversation)
        return ins.on_duplicate_key_update(
            last_message_id=func.greatest(Conversation.last_message_id, ins.inserted.last_message_id)
        )
    lite = sqlite.insert(Conversation)
    return lite.on_conflict_do_update(
        index_elements=[Conversation.owner_id, Conversation.peer_id],
        set_={"last_message_id": func.max(Conversation.last_message_id, lite.excluded.last_message_id)},
    )


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
