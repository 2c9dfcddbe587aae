"""Migration 0005 on a database with history: counters filled from the messages, the indexes
swapped, and back down and up again, on each backend (a database of its own on MariaDB)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from messenger.db import alembic_config, create_db_engine, migrate
from tests.conftest import BACKENDS, fresh_database


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with fresh_database(request.param, tmp_path, "mig") as url:
        engine = create_db_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _indexes(engine: Engine) -> set[str]:
    return {ix["name"] for ix in inspect(engine).get_indexes("messages") if ix["name"]}


def test_0005_fills_unread_counters_and_swaps_indexes(empty_engine: Engine) -> None:
    engine = empty_engine
    migrate(engine, "0004")
    # as text: Python 3.12 deprecates sqlite3's datetime adapter (and warnings are errors here)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    # a and b talk; b has read one of a's three messages; c's message to a was blocked
    rows = [
        ("a", "b", "1", None, 0),
        ("a", "b", "2", now, 0),
        ("a", "b", "3", None, 0),
        ("b", "a", "4", None, 0),
        ("c", "a", "5", None, 1),
    ]
    with engine.begin() as conn:
        for uid in "abc":
            conn.execute(
                text("INSERT INTO users (id, role, created_at) VALUES (:id, 'member', :now)"),
                {"id": uid, "now": now},
            )
        for sender, recipient, client_id, read_at, blocked in rows:
            conn.execute(
                text(
                    "INSERT INTO messages (sender_id, recipient_id, client_msg_id, body, sent_at, read_at,"
                    " blocked) VALUES (:s, :r, :c, 'x', :now, :read_at, :blocked)"
                ),
                {
                    "s": sender,
                    "r": recipient,
                    "c": client_id,
                    "now": now,
                    "read_at": read_at,
                    "blocked": blocked,
                },
            )
        conn.execute(
            text(
                "INSERT INTO conversations (owner_id, peer_id, last_message_id) VALUES "
                "('a', 'b', 4), ('b', 'a', 4), ('c', 'a', 5)"
            )
        )
    assert "ix_messages_sender_id_sent_at" in _indexes(engine)
    migrate(engine)

    def counters() -> dict[tuple[str, str], int]:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT owner_id, peer_id, unread_count FROM conversations"))
            return {(o, p): n for o, p, n in found}

    assert counters() == {("a", "b"): 1, ("b", "a"): 2, ("c", "a"): 0}
    indexes = _indexes(engine)
    assert {
        "ix_messages_recipient_id_blocked_read_at_id",
        "ix_messages_sender_id_recipient_id_blocked_id",
    } <= indexes
    assert not {"ix_messages_sender_id_sent_at", "ix_messages_sender_id_recipient_id_id"} & indexes

    command.downgrade(alembic_config(engine), "0004")
    assert "ix_messages_sender_id_sent_at" in _indexes(engine)
    assert "unread_count" not in {c["name"] for c in inspect(engine).get_columns("conversations")}
    migrate(engine)
    assert counters() == {("a", "b"): 1, ("b", "a"): 2, ("c", "a"): 0}
