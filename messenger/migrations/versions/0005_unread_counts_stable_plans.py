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

import time

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


def backfill_statement(dialect: str) -> str:
    """The counters' backfill: each conversation counts its peer's unread messages through the
    (recipient, sender, read_at) index, named, so that a recipient with many unread from many
    peers is not read once per conversation (the optimizer's pick, the recipient-only range of
    the unread index, made this quadratic: 18 minutes and counting on 10 million messages)."""
    index = "ix_messages_recipient_id_sender_id_read_at"
    hint = f"FORCE INDEX ({index})" if dialect in ("mysql", "mariadb") else f"INDEXED BY {index}"
    return (
        "UPDATE conversations SET unread_count = ("  # noqa: S608 - no values
        f" SELECT COUNT(*) FROM messages AS m {hint} WHERE m.recipient_id = conversations.owner_id"
        " AND m.sender_id = conversations.peer_id AND m.read_at IS NULL AND m.blocked = 0)"
    )


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        # each step only if it is not done yet: MariaDB commits every ALTER at once, so a run
        # interrupted after them (the version still 0004) must be able to run again
        if not _has_unread_count(bind):
            op.execute(
                "ALTER TABLE conversations ADD COLUMN unread_count INTEGER NOT NULL DEFAULT 0,"
                " ALGORITHM=INSTANT"
            )
        present = _indexes(bind)
        add = [ix for ix in _ADDED if ix[0] not in present]
        drop = [ix for ix in _DROPPED if ix[0] in present]
        if add or drop:
            op.execute(_online_alter(add=add, drop=drop))
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
    op.execute(backfill_statement(bind.dialect.name))


def _has_unread_count(bind: sa.Connection) -> bool:
    return "unread_count" in {c["name"] for c in sa.inspect(bind).get_columns("conversations")}


def _indexes(bind: sa.Connection) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(bind).get_indexes("messages")}


def _online_alter(*, add: list[tuple[str, tuple[str, ...]]], drop: list[tuple[str, tuple[str, ...]]]) -> str:
    """One ALTER of the messages indexes that reads and writes go on through (MariaDB)."""
    changes = [f"ADD INDEX {name} ({', '.join(cols)})" for name, cols in add]
    changes += [f"DROP INDEX {name}" for name, _ in drop]
    return f"ALTER TABLE messages {', '.join(changes)}, ALGORITHM=INPLACE, LOCK=NONE"


def _backfill_in_batches(bind: sa.Connection) -> None:
    """Fill the counters owner range by owner range (keyset on the primary key), each batch
    committed on its own (MariaDB, in autocommit).

    READ COMMITTED for the batches: the counts read the messages without locking them, so the
    handlers' inserts go on beside the backfill (under REPEATABLE READ the counting locked the
    ranges it read, and a concurrent send deadlocked with it). A batch that still loses a
    deadlock or a lock wait is run again.
    """
    isolation = bind.exec_driver_sql("SELECT @@SESSION.tx_isolation").scalar()
    bind.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    try:
        after: str | None = None
        while True:
            bound = bind.execute(
                sa.text(
                    "SELECT owner_id FROM conversations WHERE (:after IS NULL OR owner_id > :after) "
                    "ORDER BY owner_id LIMIT 1 OFFSET :skip"
                ),
                {"after": after, "skip": BATCH - 1},
            ).scalar()
            # counted at the time of the batch: a message stored meanwhile is in the count, or
            # adds to it afterwards
            where = [c for c, v in (("owner_id > :after", after), ("owner_id <= :upper", bound)) if v]
            statement = sa.text(
                backfill_statement(bind.dialect.name) + (f" WHERE {' AND '.join(where)}" if where else "")
            )
            _run_retrying(bind, statement, {"after": after, "upper": bound})
            if bound is None:
                return
            after = bound
    finally:
        level = str(isolation or "REPEATABLE-READ").replace("-", " ")
        bind.exec_driver_sql(f"SET SESSION TRANSACTION ISOLATION LEVEL {level}")


#: MariaDB's "deadlock found" and "lock wait timeout exceeded"
_RETRYABLE = (1213, 1205)


def _run_retrying(bind: sa.Connection, statement: sa.TextClause, params: dict[str, object]) -> None:
    for attempt in range(5):
        try:
            bind.execute(statement, params)
            return
        except sa.exc.OperationalError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in _RETRYABLE or attempt == 4:
                raise
            time.sleep(0.1 * 2**attempt)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        present = _indexes(bind)
        add = [ix for ix in _DROPPED if ix[0] not in present]
        drop = [ix for ix in _ADDED if ix[0] in present]
        if add or drop:
            op.execute(_online_alter(add=add, drop=drop))
        if _has_unread_count(bind):
            op.execute("ALTER TABLE conversations DROP COLUMN unread_count, ALGORITHM=INSTANT")
        return
    for name, cols in _DROPPED:
        op.create_index(name, "messages", list(cols))
    for name, _ in _ADDED:
        op.drop_index(name, "messages")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("unread_count")
