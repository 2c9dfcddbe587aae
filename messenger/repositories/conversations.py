"""Conversations: one row per user and peer with the id of their last message and the owner's
unread count (kept by sends and read marks, so listing conversations never counts messages)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import bindparam, case, select, text, update
from sqlalchemy.orm import Session

from messenger.models import Base, Conversation, Message
from messenger.repositories import indexes, json_rows

#: (owner, peer, message id, whether the message is one more unread for the owner)
Side = tuple[str, str, int, bool]


def touch_many(session: Session, messages: Iterable[Message]) -> None:
    """Move each conversation of ``messages`` to its newest message, in one upsert.

    Both sides of a message move, and the recipient's counts one more unread; a blocked message
    moves only its sender's side, since its recipient never sees it.
    """
    sides: list[Side] = []
    for m in messages:
        sides.append((m.sender_id, m.recipient_id, m.id, False))
        if not m.blocked:
            sides.append((m.recipient_id, m.sender_id, m.id, True))
    touch(session, sides)


def touch(session: Session, sides: Iterable[Side]) -> None:
    """Move conversations given as (owner, peer, message id, unread) to their newest message and
    add the unread ones to their counts, in one upsert. Rows go in key order, so that two
    transactions upserting the same conversations lock them in the same order; they are bound
    as one JSON array (a fan-out page moves a thousand conversations)."""
    last: dict[tuple[str, str], tuple[int, int]] = {}
    for owner, peer, message_id, unread in sides:
        top, added = last.get((owner, peer), (0, 0))
        last[(owner, peer)] = (max(top, message_id), added + int(unread))
    if not last:
        return
    rows = [(owner, peer, top, added) for (owner, peer), (top, added) in sorted(last.items())]
    sides_table = json_rows.table(
        session,
        "sides",
        [("owner", json_rows.ID), ("peer", json_rows.ID), ("top", json_rows.BIGINT), ("added", "INTEGER")],
    )
    insert = (
        "INSERT INTO conversations (owner_id, peer_id, last_message_id, unread_count) "  # noqa: S608 - no values
        f"SELECT j.owner, j.peer, j.top, j.added FROM {sides_table}"
    )
    if json_rows.is_mysql(session):
        upsert = (
            " ON DUPLICATE KEY UPDATE last_message_id = GREATEST(last_message_id, VALUES(last_message_id)),"
            " unread_count = unread_count + VALUES(unread_count)"
        )
    else:  # "WHERE true": SQLite would read ON CONFLICT as part of a join
        upsert = (
            " WHERE true ON CONFLICT (owner_id, peer_id)"
            " DO UPDATE SET last_message_id = max(last_message_id, excluded.last_message_id),"
            " unread_count = unread_count + excluded.unread_count"
        )
    session.execute(text(insert + upsert), {"sides": json_rows.dumps(rows)})


def read(session: Session, owner_id: str, marked: Mapping[str, int]) -> None:
    """Take messages just marked read (``marked``: how many, per peer) off ``owner_id``'s
    counts; never below zero (a count from before the counters existed may be short)."""
    if not marked:
        return
    conversations = Base.metadata.tables["conversations"]
    table = conversations.c
    session.connection().execute(  # Core: one UPDATE per peer, executemany
        update(conversations)
        .where(table.owner_id == owner_id, table.peer_id == bindparam("peer"))
        .values(
            unread_count=case(
                (table.unread_count > bindparam("n"), table.unread_count - bindparam("n")), else_=0
            )
        ),
        [{"peer": peer, "n": n} for peer, n in sorted(marked.items())],
    )


def page(
    session: Session, owner_id: str, *, before: int | None = None, limit: int = 50
) -> list[Conversation]:
    """``owner_id``'s conversations, most recent activity first, by keyset on the last message id."""
    query = indexes.force(
        select(Conversation).where(Conversation.owner_id == owner_id),
        Conversation,
        "ix_conversations_owner_id_last_message_id",
    )
    if before is not None:
        query = query.where(Conversation.last_message_id < before)
    return list(session.scalars(query.order_by(Conversation.last_message_id.desc()).limit(limit)))
