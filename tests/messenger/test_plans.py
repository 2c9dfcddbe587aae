"""Plan tests: every hot query keeps its index, and reads no more rows, however skewed the history.

A database of its own (per backend) holds a skewed history: a few creators who have sent tens of
thousands of messages, many members with a few, a member with thousands of read messages and of
messages from a sender they blocked, heavy tippers, blockers and revoked users. Each test runs a
repository function (the real statements, captured) and checks, on MariaDB and on SQLite, the
index each table is read through and, on MariaDB, how many rows were read in all.

Twice: with *stale* statistics (MariaDB: analyzed while every sender was light, automatic
recalculation off; SQLite: never analyzed) and *analyzed* (``ANALYZE TABLE``/``ANALYZE`` after the
skewed load). An optimizer that follows the statistics to the sender-alone index reads a heavy
sender's whole history for one lookup.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, text, update
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Principal, Role
from handler.processor import CommandProcessor, Inbound
from messenger.db import create_db_engine, migrate, session_factory, unit_of_work
from messenger.models import (
    BlockedUser,
    ListMember,
    MassMessage,
    MemberList,
    Message,
    Tip,
    TokenRevocation,
    User,
)
from messenger.repositories import (
    blocks,
    client_ids,
    conversations,
    lists,
    mass_messages,
    messages,
    revocations,
    tips,
    users,
)
from messenger.repositories.messages import NewMessage
from tests.conftest import BACKENDS, fresh_database
from tests.messenger.plans import assert_plans, capture

#: how skewed: each heavy creator's history, over this many peers
HEAVY_MESSAGES = 12_000
HEAVY_PEERS = 1_200
LIGHT_SENDERS = 400
#: the flooded member: read messages, messages from a sender they blocked, unread ones
FLOOD_READ = 4_000
FLOOD_BLOCKED = 3_000
FLOOD_UNREAD = 30
HEAVY_ROWS = 3_000  # tips, mass messages, blocks, revocations of the heavy user of each kind

UQ_MESSAGES = "uq_messages_sender_id_client_msg_id_recipient_id"
IX_UNREAD = "ix_messages_recipient_id_blocked_read_at_id"
IX_HISTORY = "ix_messages_sender_id_recipient_id_blocked_id"
IX_INBOX = "ix_messages_recipient_id_id"


@dataclass
class Skewed:
    sessions: sessionmaker[Session]
    heavy: list[str]  # creators with HEAVY_MESSAGES messages each
    peers: list[str]  # members each heavy creator talks to
    light: list[str]  # senders with two messages each
    flooded: str
    spammer: str  # blocked by ``flooded``, has sent them FLOOD_BLOCKED messages
    tipper: str
    blocker: str
    revoked: str
    list_id: str


def _load(sessions: sessionmaker[Session], rows: list[NewMessage]) -> None:
    for start in range(0, len(rows), 5_000):
        with unit_of_work(sessions) as session:
            messages.store_many(session, rows[start : start + 5_000], stored={})


def _fill_light(sessions: sessionmaker[Session], p: str) -> Skewed:
    heavy = [f"{p}c{i}" for i in range(3)]
    peers = [f"{p}m{i:05d}" for i in range(HEAVY_PEERS)]
    light = [f"{p}l{i:04d}" for i in range(LIGHT_SENDERS)]
    flooded, spammer, tipper, blocker, revoked = (f"{p}{n}" for n in ("flood", "spam", "tip", "blk", "rev"))
    everyone = [*heavy, *peers, *light, flooded, spammer, tipper, blocker, revoked]
    with unit_of_work(sessions) as session:
        session.execute(
            insert(User), [{"id": u, "role": "creator" if u in heavy else "member"} for u in everyone]
        )
    # one message per sender, as when the statistics were last gathered: the sender alone looks
    # as selective as the whole unique key (the state that made MariaDB read a sender's history)
    _load(
        sessions,
        [
            NewMessage(s, peers[i % len(peers)], "l0", "hi")
            for i, s in enumerate([*light, *heavy, flooded, tipper])
        ],
    )
    return Skewed(sessions, heavy, peers, light, flooded, spammer, tipper, blocker, revoked, f"{p}list")


def _fill_heavy(d: Skewed) -> None:
    per_peer = HEAVY_MESSAGES // HEAVY_PEERS
    _load(
        d.sessions,
        [
            NewMessage(c, peer, f"h{i * per_peer + k}", "hello")
            for c in d.heavy
            for i, peer in enumerate(d.peers)
            for k in range(per_peer)
        ],
    )
    _load(d.sessions, [NewMessage(d.heavy[0], d.flooded, f"f{k}", "read me") for k in range(FLOOD_READ)])
    _load(
        d.sessions,
        [NewMessage(d.spammer, d.flooded, f"s{k}", "spam", blocked=True) for k in range(FLOOD_BLOCKED)],
    )
    now = datetime.now(UTC)
    with unit_of_work(d.sessions) as session:
        session.execute(
            update(Message)
            .where(Message.recipient_id == d.flooded, Message.blocked.is_(False))
            .values(read_at=now)
        )
    _load(d.sessions, [NewMessage(s, d.flooded, "u", "unread") for s in d.light[:FLOOD_UNREAD]])
    # the heaviest creator has one unread reply from each of its peers
    _load(d.sessions, [NewMessage(p, d.heavy[0], "reply", "thanks") for p in d.peers])
    with unit_of_work(d.sessions) as session:
        session.execute(
            text(
                "INSERT INTO conversations (owner_id, peer_id, last_message_id, unread_count) "
                "SELECT owner_id, peer_id, MAX(id), SUM(unread) FROM ("
                " SELECT sender_id AS owner_id, recipient_id AS peer_id, id, 0 AS unread FROM messages"
                " UNION ALL SELECT recipient_id, sender_id, id,"
                " CASE WHEN read_at IS NULL THEN 1 ELSE 0 END FROM messages WHERE blocked = 0"
                ") AS sides GROUP BY owner_id, peer_id"
            )
        )
        session.execute(
            insert(BlockedUser),
            [{"blocker_id": d.blocker, "blocked_id": p} for p in d.peers]
            + [{"blocker_id": d.flooded, "blocked_id": d.spammer}],
        )
        session.execute(
            insert(Tip),
            [
                {
                    "payer_id": d.tipper,
                    "payee_id": d.heavy[k % 3],
                    "client_msg_id": f"t{k}",
                    "amount": 100,
                    "currency": "USD",
                    "body": "tip",
                    "status": "succeeded",
                }
                for k in range(HEAVY_ROWS)
            ],
        )
        session.execute(
            insert(MassMessage),
            [
                {
                    "sender_id": d.heavy[0],
                    "client_msg_id": f"mm{k}",
                    "list_id": d.list_id,
                    "body": "news",
                    "status": "sent",
                }
                for k in range(HEAVY_ROWS)
            ],
        )
        session.execute(insert(MemberList), [{"id": d.list_id, "owner_id": d.heavy[0], "name": "all"}])
        session.execute(insert(ListMember), [{"list_id": d.list_id, "member_id": p} for p in d.peers])
        cutoff = now - timedelta(days=1)
        session.execute(
            insert(TokenRevocation),
            [
                {"user_id": d.revoked, "issued_before": cutoff - timedelta(seconds=k), "created_by": "admin"}
                for k in range(HEAVY_ROWS)
            ]
            + [{"jti": f"{d.revoked}-jti-{k}", "created_by": "admin"} for k in range(HEAVY_ROWS)],
        )


_TABLES = (
    "messages",
    "conversations",
    "blocked_users",
    "tips",
    "mass_messages",
    "list_members",
    "token_revocations",
    "users",
)


@pytest.fixture(scope="module", params=BACKENDS)
def skewed_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Skewed]:
    with fresh_database(request.param, tmp_path_factory.mktemp("plans"), "plans") as url:
        engine = create_db_engine(url)
        try:
            migrate(engine)
            sessions = session_factory(engine)
            data = _fill_light(sessions, "p-")
            _analyze(engine)
            if engine.dialect.name != "sqlite":
                with engine.begin() as conn:
                    for table in _TABLES:
                        conn.execute(text(f"ALTER TABLE {table} STATS_AUTO_RECALC=0"))
            _fill_heavy(data)
            yield data
        finally:
            engine.dispose()


def _analyze(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))
        else:
            for table in _TABLES:
                conn.execute(text(f"ANALYZE TABLE {table}")).all()


@pytest.fixture(scope="module", params=["stale", "analyzed"])
def db(request: pytest.FixtureRequest, skewed_db: Skewed) -> Iterator[Skewed]:
    """The skewed database, with stale statistics, then analyzed after the skewed load."""
    if request.param == "analyzed":
        _analyze(skewed_db.sessions.kw["bind"])
    elif skewed_db.sessions.kw["bind"].dialect.name == "sqlite":
        with skewed_db.sessions.kw["bind"].begin() as conn:  # stale: no statistics at all
            conn.execute(text("DROP TABLE IF EXISTS sqlite_stat1"))
    yield skewed_db


@pytest.fixture
def session(db: Skewed) -> Iterator[Session]:
    """A transaction that is rolled back: a test may write, the next one sees the same data."""
    s = db.sessions()
    try:
        yield s
    finally:
        s.rollback()
        s.close()


# --- the idempotency lookups ------------------------------------------------------------------------


def test_idempotency_lookup_reads_the_unique_key_not_the_history(db: Skewed, session: Session) -> None:
    """A batch of 200 commands from the heaviest senders, half of them repeats: one unique-key
    lookup each, not every message those senders ever sent."""
    pairs = [(c, f"h{k}") for c in db.heavy for k in range(33)] + [
        (c, f"new-{uuid.uuid4().hex}") for c in db.heavy for _ in range(33)
    ]
    with capture(session) as cap:
        found = messages.by_client_ids(session, pairs)
    assert len(found) == 3 * 33  # the repeats, not the new ids
    assert_plans(cap, {}, every=UQ_MESSAGES, max_reads=20 * len(pairs))


def test_store_many_lookup_by_full_key(db: Skewed, session: Session) -> None:
    keys = [(c, f"h{k}", db.peers[0]) for c in db.heavy for k in range(50)]
    with capture(session) as cap:
        messages.by_keys(session, keys)
    assert_plans(cap, {"m": UQ_MESSAGES}, max_reads=20 * len(keys))


@pytest.mark.parametrize("kind", ["message", "tip", "mass"])
def test_client_ids_used_elsewhere(db: Skewed, session: Session, kind: str) -> None:
    senders = [db.heavy[0], db.tipper]
    pairs = [(s, f"{prefix}{k}") for s in senders for prefix in ("h", "mm", "t") for k in range(40)]
    with capture(session) as cap:
        client_ids.used_elsewhere(session, pairs, kind=kind)  # type: ignore[arg-type]
    assert_plans(cap, {}, max_reads=30 * len(pairs))
    indexes = {index for _sql, accesses in cap.plans() for table, index, _ in accesses if table == "t"}
    wanted = {
        "message": UQ_MESSAGES,
        "tip": "uq_tips_payer_id_client_msg_id",
        "mass": "uq_mass_messages_sender_id_client_msg_id",
    }
    assert indexes == {v for k, v in wanted.items() if k != kind}


def test_tip_and_mass_message_lookups(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        tips.by_client_ids(session, [(db.tipper, f"t{k}") for k in range(100)])
    assert_plans(cap, {"t": "uq_tips_payer_id_client_msg_id"}, max_reads=2_000)
    with capture(session) as cap:
        mass_messages.by_client_ids(session, [(db.heavy[0], f"mm{k}") for k in range(100)])
    assert_plans(cap, {"t": "uq_mass_messages_sender_id_client_msg_id"}, max_reads=2_000)


def test_fanout_copies_skip_through_the_unique_key(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        messages.store_copies(session, db.heavy[0], "mm1", "news", db.list_id, db.peers[:500])
    assert_plans(cap, {"m": UQ_MESSAGES}, max_reads=20 * 500)


# --- blocks, conversations, fan-out pages -----------------------------------------------------------


def test_block_checks_read_the_primary_key(db: Skewed, session: Session) -> None:
    pairs = [(db.blocker, p) for p in db.peers[:300]] + [(p, db.heavy[0]) for p in db.peers[:300]]
    with capture(session) as cap:
        refused = blocks.blocked_pairs(session, pairs)
    assert len(refused) == 300
    assert_plans(cap, {"b": "PRIMARY"}, max_reads=10 * len(pairs))


def test_conversation_upsert_reads_the_primary_key(db: Skewed, session: Session) -> None:
    sides = [(db.heavy[0], p, 10**9 + i, False) for i, p in enumerate(db.peers[:300])]
    with capture(session) as cap:
        conversations.touch(session, sides)
    assert_plans(cap, {}, max_reads=10 * len(sides))


def test_fanout_member_page_reads_the_primary_key(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        page = lists.member_ids(session, db.list_id, after=db.peers[100], limit=500)
    assert len(page) == 500
    assert_plans(cap, {"list_members": "PRIMARY"}, max_reads=3 * 500)


def test_fanout_users_ensured_through_the_primary_key(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        users.ensure_many(session, [*db.peers[:400], *(f"new-{i}-{uuid.uuid4().hex}" for i in range(100))])
    assert_plans(cap, {"u": "PRIMARY"}, max_reads=10 * 500, tables={"u", "users", "j", "json_each"})


# --- pages: history, unread, sync, conversations ----------------------------------------------------


@pytest.mark.parametrize("newest_first", [True, False])
def test_history_page_of_a_heavy_conversation(db: Skewed, session: Session, newest_first: bool) -> None:
    with capture(session) as cap:
        rows = messages.conversation(session, db.flooded, db.heavy[0], limit=50, newest_first=newest_first)
    assert len(rows) == 50
    assert_plans(cap, {"messages": IX_HISTORY}, max_reads=4 * 50 + 20)
    middle = rows[25].id
    with capture(session) as cap:
        rows = messages.conversation(session, db.flooded, db.heavy[0], before=middle, after=middle - 1000)
    assert_plans(cap, {"messages": IX_HISTORY}, max_reads=4 * 50 + 20)


def test_history_page_hides_a_blocked_flood_without_reading_it(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        rows = messages.conversation(session, db.flooded, db.spammer, limit=50)
    assert rows == []
    assert_plans(cap, {"messages": IX_HISTORY}, max_reads=200)


def test_unread_page_skips_read_and_blocked_history(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        rows = messages.unread(session, db.flooded, limit=100)
    assert len(rows) == FLOOD_UNREAD
    assert_plans(cap, {"messages": IX_UNREAD}, max_reads=3 * 100 + 20)
    with capture(session) as cap:
        rows = messages.unread(session, db.flooded, after=rows[5].id, limit=100, unread_only=True)
    assert len(rows) == FLOOD_UNREAD - 6
    assert_plans(cap, {"messages": IX_UNREAD}, max_reads=3 * 100 + 20)


def test_sync_page_after_an_id(db: Skewed, session: Session) -> None:
    first = messages.unread(session, db.peers[7], after=0, limit=1)[0].id
    with capture(session) as cap:
        rows = messages.unread(session, db.peers[7], after=first, limit=20)
    assert len(rows) == 20
    assert_plans(cap, {"messages": IX_INBOX}, max_reads=3 * 20 + 20)


def test_mark_read_reads_only_what_it_marks(db: Skewed, session: Session) -> None:
    top = messages.unread(session, db.flooded, limit=100)[-1].id
    with capture(session) as cap:
        marked = messages.mark_read(session, db.flooded, top)
    assert sum(1 for _ in marked) == FLOOD_UNREAD
    assert_plans(cap, {"messages": IX_UNREAD}, max_reads=10 * FLOOD_UNREAD + 50)


def test_conversation_list_with_unread_counts(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        rows = conversations.page(session, db.heavy[0], limit=50)
    assert len(rows) == 50
    assert_plans(cap, {"conversations": "ix_conversations_owner_id_last_message_id"}, max_reads=3 * 50 + 10)
    with capture(session) as cap:
        rows = conversations.page(session, db.flooded, limit=50)
    assert {r.peer_id: r.unread_count for r in rows}[db.heavy[0]] == 0
    assert_plans(cap, {"conversations": "ix_conversations_owner_id_last_message_id"}, max_reads=3 * 50 + 10)


# --- tips, mass messages, the gateway ---------------------------------------------------------------


def test_tip_and_mass_message_pages(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        assert len(tips.sent(session, db.tipper, limit=50)) == 50
    assert_plans(cap, {"tips": "ix_tips_payer_id_id"}, max_reads=3 * 50 + 10)
    with capture(session) as cap:
        assert len(tips.received(session, db.heavy[1], limit=50)) == 50
    assert_plans(cap, {"tips": "ix_tips_payee_id_id"}, max_reads=3 * 50 + 10)
    with capture(session) as cap:
        assert len(mass_messages.sent_by(session, db.heavy[0], limit=50)) == 50
    assert_plans(cap, {"mass_messages": "ix_mass_messages_sender_id_id"}, max_reads=3 * 50 + 10)


def test_gateway_user_and_revocation_reads(db: Skewed, session: Session) -> None:
    with capture(session) as cap:
        assert users.get(session, db.heavy[0]) is not None
    assert_plans(cap, {"users": "PRIMARY"}, max_reads=5)
    now = datetime.now(UTC)
    for principal, revoked in [
        (Principal(db.revoked, Role.MEMBER, jti="fresh", issued_at=now), False),
        (Principal(db.revoked, Role.MEMBER, jti=f"{db.revoked}-jti-7", issued_at=now), True),
        (Principal(db.revoked, Role.MEMBER, jti="old", issued_at=now - timedelta(days=30)), True),
        (Principal(db.heavy[0], Role.CREATOR, jti=None, issued_at=now), False),
    ]:
        with capture(session) as cap:
            assert revocations.is_revoked(session, principal) is revoked
        assert_plans(cap, {}, max_reads=20)
        tables = {t for _sql, accesses in cap.plans() for t, _i, _d in accesses}
        assert tables, "the revocation check read no table"


# --- a whole batch --------------------------------------------------------------------------------


def test_a_batch_costs_its_size_not_its_senders_history(db: Skewed) -> None:
    """The handler's unit of work for 300 commands from the three heaviest senders, a third of
    them redeliveries, the rest ids never used before: every statement on its index, and the rows
    read bounded by the batch's size (the history is 40 times larger). Nothing is kept."""
    per_peer = HEAVY_MESSAGES // HEAVY_PEERS
    batch = []
    for c in db.heavy:
        for i in range(100):
            repeat = i % 3 == 0
            client_id = f"h{i * per_peer}" if repeat else f"batch-{uuid.uuid4().hex}"
            command = {
                "type": "message",
                "id": client_id,
                "to": db.peers[i],
                "body": "hello" if repeat else "new",
            }
            batch.append(Inbound(f"inbound/{c}", json.dumps(command).encode()))
    engine: Engine = db.sessions.kw["bind"]
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            sessions = sessionmaker(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            )
            probe = Session(bind=conn)
            with capture(probe) as cap:
                out = CommandProcessor(sessions).process(batch)
            acks = [o for o in out if b'"ack"' in o.payload]
            assert len(acks) == len(batch)
            assert_plans(cap, {"b": "PRIMARY"}, max_reads=40 * len(batch))
        finally:
            outer.rollback()


# --- migrations -----------------------------------------------------------------------------------


def test_unread_backfill_counts_each_conversation_through_its_peer_range(
    db: Skewed, session: Session
) -> None:
    """Migration 0005 fills the counters conversation by conversation; for the heaviest
    creator's conversations (a peer each, an unread reply from every peer) each count reads that
    peer's range, not every unread message the creator has."""
    migration = importlib.import_module("messenger.migrations.versions.0005_unread_counts_stable_plans")
    statement = migration.backfill_statement(session.get_bind().dialect.name)
    owner = db.heavy[0]
    with capture(session) as cap:
        updated = session.execute(text(f"{statement} WHERE owner_id = :owner"), {"owner": owner})
    assert updated.rowcount >= HEAVY_PEERS  # type: ignore[attr-defined]
    assert_plans(
        cap,
        {"m": "ix_messages_recipient_id_sender_id_read_at"},
        max_reads=10 * HEAVY_PEERS,
    )
    counts = dict(
        session.execute(
            text("SELECT peer_id, unread_count FROM conversations WHERE owner_id = :o"), {"o": owner}
        ).all()
    )
    assert all(counts[p] == 1 for p in db.peers)
