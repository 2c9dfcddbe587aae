"""``python -m bench seed``: a small dataset on each backend holds the shape it promises (counts,
heaviest creator, largest list, designated unread counts, conversations consistent with the
messages, blocks, tips); the load refuses a loaded database and re-adds the indexes it dropped
when it is interrupted. Nothing here asserts a speed.

Each MariaDB load gets a database of its own (``<test db>_seed_<hex>``), dropped afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from bench import seed
from bench.__main__ import main as bench_main
from bench.suite import Progress
from messenger.db import create_db_engine, migrate
from messenger.models import Base
from tests.conftest import BACKENDS, fresh_database

UNTIL = "2026-01-01"
#: small enough for CI, large enough for every part of the shape to show (several creators, a
#: catch-up member with ten peers, blocks and tips)
SMALL = {
    "messages": 20_000,
    "users": 1_500,
    "creators": 40,
    "largest_sent": 2_000,
    "largest_peers": 200,
    "largest_list": 150,
    "catchup_unread": 200,
    "worst_unread": 300,
    "seed": 7,
}
MARIADB = [pytest.param("mariadb", marks=pytest.mark.mariadb)] if "mariadb" in BACKENDS else []
SQLITE = ["sqlite"] if "sqlite" in BACKENDS else []
LOADS = [(b, "json") for b in SQLITE] + [
    pytest.param(("mariadb", loader), marks=pytest.mark.mariadb, id=f"mariadb-{loader}")
    for loader in ("infile", "json")
    if MARIADB
]


def seed_argv(url: str, manifest: Path, loader: str = "auto", **shape: int) -> list[str]:
    """``python -m bench seed`` arguments for a load into ``url``."""
    args = ["seed", "--database-url", url, "--manifest", str(manifest), "--until", UNTIL, "--loader", loader]
    for name, value in shape.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return [*args, "--no-progress"]


def local_infile(url: str) -> bool:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT @@local_infile")).scalar())
    finally:
        engine.dispose()


@dataclass
class Seeded:
    url: str
    engine: Engine
    manifest: dict[str, Any]
    loader: str

    def scalar(self, sql: str, **params: object) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture(scope="module", params=LOADS, ids=lambda p: f"{p[0]}-{p[1]}")
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """The small dataset, loaded once per backend and loader through ``python -m bench seed``."""
    backend, loader = request.param
    tmp_path = tmp_path_factory.mktemp("seed")
    with fresh_database(backend, tmp_path, "seed") as url:
        if loader == "infile" and not local_infile(url):
            pytest.skip("the MariaDB server has local_infile off")
        manifest_path = tmp_path / "manifest.json"
        assert bench_main(seed_argv(url, manifest_path, loader, **SMALL)) == 0
        engine = create_db_engine(url)
        try:
            yield Seeded(url, engine, json.loads(manifest_path.read_text()), loader)
        finally:
            engine.dispose()


def test_counts_match_the_parameters_and_the_manifest(seeded: Seeded) -> None:
    m = seeded.manifest
    assert m["loader"] == seeded.loader
    assert seeded.scalar("SELECT COUNT(*) FROM messages") == SMALL["messages"]
    assert seeded.scalar("SELECT MIN(id) FROM messages") == 1
    assert seeded.scalar("SELECT MAX(id) FROM messages") == SMALL["messages"]
    assert seeded.scalar("SELECT COUNT(*) FROM users") == SMALL["users"]
    assert seeded.scalar("SELECT COUNT(*) FROM users WHERE role = 'creator'") == SMALL["creators"]
    assert (
        seeded.scalar("SELECT COUNT(*) FROM users WHERE role = 'member'")
        == SMALL["users"] - SMALL["creators"]
    )
    for table in seed.TABLES:
        assert seeded.scalar(f"SELECT COUNT(*) FROM {table}") == m["counts"][table], table  # noqa: S608
    for table in ("blocked_users", "tips", "member_lists", "conversations"):
        assert m["counts"][table] > 0, table
    assert m["shape"] == {**m["shape"], **SMALL}


def test_every_row_refers_to_existing_users(seeded: Seeded) -> None:
    """Foreign keys were not checked during the load: the rows must hold them anyway."""
    for table, column in [
        ("messages", "sender_id"),
        ("messages", "recipient_id"),
        ("conversations", "owner_id"),
        ("conversations", "peer_id"),
        ("blocked_users", "blocker_id"),
        ("blocked_users", "blocked_id"),
        ("tips", "payer_id"),
        ("tips", "payee_id"),
        ("member_lists", "owner_id"),
        ("list_members", "member_id"),
    ]:
        orphans = seeded.scalar(
            f"SELECT COUNT(*) FROM {table} AS t LEFT JOIN users AS u ON u.id = t.{column} "  # noqa: S608
            "WHERE u.id IS NULL"
        )
        assert orphans == 0, (table, column)
    assert (
        seeded.scalar(
            "SELECT COUNT(*) FROM list_members AS lm LEFT JOIN member_lists AS l ON l.id = lm.list_id "
            "WHERE l.id IS NULL"
        )
        == 0
    )


def test_the_heaviest_creator_sends_most_and_has_most_conversations(seeded: Seeded) -> None:
    heaviest = seeded.manifest["heaviest_creator"]
    senders = seeded.rows(
        "SELECT sender_id, COUNT(*) AS n FROM messages GROUP BY sender_id ORDER BY n DESC, sender_id LIMIT 2"
    )
    assert senders[0] == (heaviest["id"], SMALL["largest_sent"])
    assert senders[1][1] < SMALL["largest_sent"]
    assert seeded.scalar("SELECT role FROM users WHERE id = :id", id=heaviest["id"]) == "creator"

    owners = seeded.rows(
        "SELECT owner_id, COUNT(*) AS n FROM conversations "
        "GROUP BY owner_id ORDER BY n DESC, owner_id LIMIT 2"
    )
    assert owners[0] == (heaviest["id"], SMALL["largest_peers"])
    assert owners[1][1] < SMALL["largest_peers"]
    peers = seeded.scalar(
        "SELECT COUNT(*) FROM (SELECT recipient_id AS peer FROM messages WHERE sender_id = :c "
        "UNION SELECT sender_id FROM messages WHERE recipient_id = :c) AS p",
        c=heaviest["id"],
    )
    assert peers == heaviest["conversations"] == SMALL["largest_peers"]
    # a power law: the heaviest creator sends more than the lightest few together
    volumes = [
        n
        for _, n in seeded.rows(
            "SELECT m.sender_id, COUNT(*) AS n FROM messages AS m JOIN users AS u ON u.id = m.sender_id "
            "WHERE u.role = 'creator' GROUP BY m.sender_id ORDER BY n DESC"
        )
    ]
    assert len(volumes) == SMALL["creators"]
    assert volumes[0] > sum(volumes[-3:])


def test_the_largest_list_belongs_to_the_heaviest_creator(seeded: Seeded) -> None:
    m = seeded.manifest
    largest = seeded.rows(
        "SELECT list_id, COUNT(*) AS n FROM list_members GROUP BY list_id ORDER BY n DESC, list_id LIMIT 2"
    )
    assert largest[0] == (m["largest_list"]["id"], SMALL["largest_list"])
    assert largest[1][1] < SMALL["largest_list"]
    owner = seeded.scalar("SELECT owner_id FROM member_lists WHERE id = :id", id=largest[0][0])
    assert owner == m["heaviest_creator"]["id"] == m["largest_list"]["owner"]
    without_list = seeded.scalar(
        "SELECT COUNT(*) FROM users AS u LEFT JOIN member_lists AS l ON l.owner_id = u.id "
        "WHERE u.role = 'creator' AND l.id IS NULL"
    )
    assert without_list == 0


def test_the_designated_members_have_exactly_their_unread(seeded: Seeded) -> None:
    m = seeded.manifest
    unread_from = (
        "SELECT sender_id, COUNT(*) FROM messages WHERE recipient_id = :u AND read_at IS NULL "
        "AND blocked = 0 GROUP BY sender_id"
    )
    catchup = dict(seeded.rows(unread_from, u=m["catchup_member"]["id"]))
    assert sum(catchup.values()) == SMALL["catchup_unread"] == m["catchup_member"]["unread"]
    assert len(catchup) == SMALL["catchup_unread"] // 20  # many peers, creators and members
    assert any(peer.startswith("c") for peer in catchup) and any(peer.startswith("m") for peer in catchup)
    worst = dict(seeded.rows(unread_from, u=m["worst_case_member"]["id"]))
    assert worst == {m["heaviest_creator"]["id"]: SMALL["worst_unread"]}
    assert m["worst_case_member"]["unread"] == SMALL["worst_unread"]
    assert m["worst_case_member"]["unread_from"] == m["heaviest_creator"]["id"]
    # most messages are read, a few recent ones are not
    read = seeded.scalar("SELECT COUNT(*) FROM messages WHERE read_at IS NOT NULL")
    assert SMALL["messages"] * 0.6 < read < SMALL["messages"]


def test_conversations_agree_with_the_messages(seeded: Seeded) -> None:
    """last_message_id is the newest message the owner can see (a blocked one counts only for its
    sender); unread_count is what the peer sent that the owner has not read."""
    expected_last = set(
        seeded.rows(
            "SELECT owner_id, peer_id, MAX(id) FROM ("
            " SELECT sender_id AS owner_id, recipient_id AS peer_id, id FROM messages"
            " UNION ALL SELECT recipient_id, sender_id, id FROM messages WHERE blocked = 0"
            ") AS sides GROUP BY owner_id, peer_id"
        )
    )
    stored = seeded.rows("SELECT owner_id, peer_id, last_message_id, unread_count FROM conversations")
    assert {(o, p, last) for o, p, last, _ in stored} == expected_last
    unread = {
        (owner, peer): n
        for owner, peer, n in seeded.rows(
            "SELECT recipient_id, sender_id, COUNT(*) FROM messages "
            "WHERE read_at IS NULL AND blocked = 0 GROUP BY recipient_id, sender_id"
        )
    }
    assert {(o, p): n for o, p, _, n in stored if n} == unread
    assert sum(unread.values()) > SMALL["catchup_unread"] + SMALL["worst_unread"]


def test_blocked_messages_come_only_from_blocked_senders_after_the_block(seeded: Seeded) -> None:
    with_block = (
        "FROM messages AS m JOIN blocked_users AS b "
        "ON b.blocker_id = m.recipient_id AND b.blocked_id = m.sender_id AND m.sent_at > b.created_at"
    )
    blocked = seeded.scalar("SELECT COUNT(*) FROM messages WHERE blocked = 1")
    assert blocked > 0
    assert seeded.scalar(f"SELECT COUNT(*) {with_block} WHERE m.blocked = 1") == blocked
    assert seeded.scalar(f"SELECT COUNT(*) {with_block} WHERE m.blocked = 0") == 0
    never_seen = seeded.scalar(
        "SELECT COUNT(*) FROM messages "
        "WHERE blocked = 1 AND (read_at IS NOT NULL OR delivered_at IS NOT NULL)"
    )
    assert never_seen == 0
    # every block stopped something; blockers are members blocking creators
    stopped = seeded.rows(f"SELECT DISTINCT m.recipient_id, m.sender_id {with_block} WHERE m.blocked = 1")
    assert len(stopped) == seeded.manifest["blocks"]["count"] == seeded.manifest["counts"]["blocked_users"]
    assert all(blocker.startswith("m") and blocked_id.startswith("c") for blocker, blocked_id in stopped)


def test_every_tip_has_its_message(seeded: Seeded) -> None:
    tips = seeded.scalar("SELECT COUNT(*) FROM tips")
    assert tips > 0
    assert seeded.scalar("SELECT COUNT(*) FROM tips WHERE status <> 'succeeded'") == 0
    matching = seeded.scalar(
        "SELECT COUNT(*) FROM tips AS t JOIN messages AS m ON m.id = t.message_id "
        "WHERE m.sender_id = t.payer_id AND m.recipient_id = t.payee_id "
        "AND m.client_msg_id = t.client_msg_id AND m.tip_amount = t.amount "
        "AND m.tip_currency = t.currency AND m.tip_status = 'succeeded' "
        "AND m.body = t.body"
    )
    assert matching == tips
    assert seeded.scalar("SELECT COUNT(*) FROM messages WHERE tip_amount IS NOT NULL") == tips
    payees = seeded.rows("SELECT DISTINCT u.role FROM tips AS t JOIN users AS u ON u.id = t.payee_id")
    assert payees == [("creator",)]


def test_messages_are_in_time_order_with_unique_client_ids(seeded: Seeded) -> None:
    out_of_order = seeded.scalar(
        "SELECT COUNT(*) FROM messages AS a JOIN messages AS b ON b.id = a.id + 1 "
        "WHERE b.sent_at <= a.sent_at"
    )
    assert out_of_order == 0
    first, last = seeded.rows("SELECT MIN(sent_at), MAX(sent_at) FROM messages")[0]
    assert "2025-01-01 00:00:00" < str(first) < str(last) < f"{UNTIL} 00:00:00"
    duplicates = seeded.scalar(
        "SELECT COUNT(*) FROM (SELECT sender_id, client_msg_id, recipient_id FROM messages "
        "GROUP BY sender_id, client_msg_id, recipient_id HAVING COUNT(*) > 1) AS d"
    )
    assert duplicates == 0


def test_the_indexes_are_back(seeded: Seeded) -> None:
    with seeded.engine.connect() as conn:
        assert seed.missing_indexes(conn) == []


def test_a_loaded_database_is_refused(
    seeded: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = seeded.scalar("SELECT COUNT(*) FROM messages")
    assert bench_main(seed_argv(seeded.url, tmp_path / "again.json", **SMALL)) == 1
    assert "already has rows" in capsys.readouterr().err
    assert seeded.scalar("SELECT COUNT(*) FROM messages") == before
    assert not (tmp_path / "again.json").exists()


def test_the_same_seed_gives_the_same_rows() -> None:
    until = datetime(2026, 1, 1, tzinfo=UTC)

    def rows(**changes: int) -> list[seed.Row]:
        shape = seed.Shape(**{**SMALL, **changes})  # type: ignore[arg-type]
        stream = seed.Stream(seed.build_plan(shape, until))
        return [row for chunk in stream.messages(5_000) for row in chunk] + stream.blocked_users()

    first = rows()
    assert rows() == first
    assert rows(seed=8) != first


def test_the_loaded_columns_cover_the_models() -> None:
    """Every column a table requires (NOT NULL, no server default) is loaded, and every loaded
    column exists: a column added to the models without the seed fails here."""
    for table in seed.LOADED:
        model = Base.metadata.tables[table.name]
        loaded = {name for name, _ in table.columns}
        assert loaded <= set(model.columns.keys()), table.name
        required = {c.name for c in model.columns if not c.nullable and c.server_default is None}
        assert required <= loaded, (table.name, required - loaded)


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--users", "100", "--largest-list", "500"], "raise --users"),
        (["--largest-sent", "10"], "--largest-sent"),
        (["--messages", "1100"], "--messages 1,100 is too few"),
    ],
)
def test_a_shape_that_cannot_hold_is_refused(
    flags: list[str], complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'refused.db'}"
    manifest = tmp_path / "refused.json"
    args = ["seed", "--database-url", url, "--manifest", str(manifest), "--scale", "0.001", *flags]
    assert bench_main([*args, "--no-progress"]) != 0
    assert not manifest.exists()
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize("backend", SQLITE + MARIADB)
def test_an_interrupted_load_adds_the_indexes_back(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: seed.Stream, size: int) -> Iterator[list[seed.Row]]:
        yield next(original(self, 100))
        raise KeyboardInterrupt  # as SIGTERM does (python -m bench seed turns it into this)

    original = seed.Stream.messages
    with fresh_database(backend, tmp_path, "seed") as url:
        engine = seed.seed_engine(url)
        try:
            migrate(engine)
            plan = seed.build_plan(seed.Shape().scaled(0.0005), datetime(2026, 1, 1, tzinfo=UTC))
            monkeypatch.setattr(seed.Stream, "messages", interrupted)
            loader = seed.choose_loader(engine, "auto")
            try:
                with pytest.raises(KeyboardInterrupt):
                    seed.load(engine, plan, loader, Progress(enabled=False))
            finally:
                loader.close()
            with engine.connect() as conn:
                assert seed.missing_indexes(conn) == []
                assert conn.execute(text("SELECT COUNT(*) FROM messages")).scalar() == 100
        finally:
            engine.dispose()


def test_scale_and_restore_indexes(tmp_path: Path) -> None:
    """``--scale`` shrinks the full size; ``--restore-indexes`` adds back what a killed load left
    dropped."""
    url = f"sqlite:///{tmp_path / 'scaled.db'}"
    manifest = tmp_path / "scaled.json"
    assert (
        bench_main(
            ["seed", "--database-url", url, "--scale", "0.001", "--manifest", str(manifest), "--no-progress"]
        )
        == 0
    )
    document = json.loads(manifest.read_text())
    assert document["counts"]["messages"] == 10_000
    assert document["counts"]["users"] == 1_000
    assert document["largest_list"]["members"] == 100
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            dropped = seed.drop_indexes(conn, ["messages"])
            assert dropped and seed.missing_indexes(conn) == dropped
        assert bench_main(["seed", "--database-url", url, "--restore-indexes"]) == 0
        with engine.connect() as conn:
            assert seed.missing_indexes(conn) == []
    finally:
        engine.dispose()
