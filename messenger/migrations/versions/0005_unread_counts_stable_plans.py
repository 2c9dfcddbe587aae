"""unread counters on conversations; indexes for plans that do not grow with a user's history

``conversations.unread_count`` is how many of the peer's messages the owner has not read: sends
add to it and read marks take from it, so a conversation list no longer counts every unread
message of every conversation it shows (a member with 100,000 unread paid 10x per page).

``ix_messages_recipient_id_blocked_read_at_id`` makes a user's unread messages one index range
in id order (catch-up pages, read marks), however many they have read or blocked senders sent;
``ix_messages_sender_id_recipient_id_blocked_id`` replaces the history index without the blocked
flag, so a history page never reads the messages a blocked sender pushed into the void.
``ix_messages_sender_id_sent_at`` goes: no query reads it, every send writes it, and the optimizer
picked it for the idempotency lookup (a sender's whole history read per batch) whenever the
table's statistics made the sender alone look selective.

On MariaDB every change is online: the column is added instantly, the index built in place with
concurrent reads and writes (``LOCK=NONE``), and the counters filled in small autocommitted
batches, so no conversation row stays locked for longer than one batch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ADDED: list[tuple[str, tuple[str, ...]]] = [
    ("ix_messages_recipient_id_blocked_read_at_id", ("recipient_id", "blocked", "read_at", "id")),
    ("ix_messages_sender_id_recipient_id_blocked_id", ("sender_id", "recipient_id", "blocked", "id")),
]
_DROPPED: list[tuple[str, tuple[str, ...]]] = [
    ("ix_messages_sender_id_sent_at", ("sender_id", "sent_at")),
    ("ix_messages_sender_id_recipient_id_id", ("sender_id", "recipient_id", "id")),
]

#: conversations per backfill batch (one short transaction each on MariaDB)
BATCH = 2000

_BACKFILL = (
    "UPDATE conversations SET unread_count = ("
    " SELECT COUNT(*) FROM messages AS m WHERE m.recipient_id = conversations.owner_id"
    " AND m.sender_id = conversations.peer_id AND m.read_at IS NULL AND m.blocked = 0)"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        op.execute(
            "ALTER TABLE conversations ADD COLUMN unread_count INTEGER NOT NULL DEFAULT 0, ALGORITHM=INSTANT"
        )
        op.execute(_online_alter(add=_ADDED, drop=_DROPPED))
        with op.get_context().autocommit_block():
            _backfill_in_batches(bind)
        return
    op.add_column(
        "conversations", sa.Column("unread_count", sa.Integer(), nullable=False, server_default="0")
    )
    for name, cols in _ADDED:
        op.create_index(name, "messages", list(cols))
    for name, _ in _DROPPED:
        op.drop_index(name, "messages")
    op.execute(_BACKFILL)


def _online_alter(*, add: list[tuple[str, tuple[str, ...]]], drop: list[tuple[str, tuple[str, ...]]]) -> str:
    """One ALTER of the messages indexes that reads and writes go on through (MariaDB)."""
    changes = [f"ADD INDEX {name} ({', '.join(cols)})" for name, cols in add]
    changes += [f"DROP INDEX {name}" for name, _ in drop]
    return f"ALTER TABLE messages {', '.join(changes)}, ALGORITHM=INPLACE, LOCK=NONE"


def _backfill_in_batches(bind: sa.Connection) -> None:
    """Fill the counters owner range by owner range (keyset on the primary key), each batch
    committed on its own."""
    after: str | None = None
    while True:
        bound = bind.execute(
            sa.text(
                "SELECT owner_id FROM conversations WHERE (:after IS NULL OR owner_id > :after) "
                "ORDER BY owner_id LIMIT 1 OFFSET :skip"
            ),
            {"after": after, "skip": BATCH - 1},
        ).scalar()
        # counted at the time of the batch: a message stored meanwhile is in the count, or adds
        # to it afterwards
        where = [c for c, v in (("owner_id > :after", after), ("owner_id <= :upper", bound)) if v is not None]
        bind.execute(
            sa.text(_BACKFILL + (f" WHERE {' AND '.join(where)}" if where else "")),
            {"after": after, "upper": bound},
        )
        if bound is None:
            return
        after = bound


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        op.execute(_online_alter(add=_DROPPED, drop=_ADDED))
        op.execute("ALTER TABLE conversations DROP COLUMN unread_count, ALGORITHM=INSTANT")
        return
    for name, cols in _DROPPED:
        op.create_index(name, "messages", list(cols))
    for name, _ in _ADDED:
        op.drop_index(name, "messages")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("unread_count")
