"""``data``: on a tiny seed made here and on the empty database it builds beside it, every part
counts correctly (each pipeline message stored once, the catch-up reads exactly the unread, the
mass message's copies and skips add up to the list, every first connect is accepted), the seeded
database is left as it was for the next run, and the table gets its seeded/empty column. Nothing
here asserts a speed.

Both databases are of their own on the test MariaDB server (``<test db>_data_<hex>`` and
``<test db>_data_empty_<hex>``) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bench.__main__ import main as bench_main
from bench.scenarios import data
from bench.stacks import StackOptions
from bench.suite import Progress, Result
from messenger.db import create_db_engine
from tests.bench.test_seed import SMALL, seed_argv
from tests.conftest import fresh_database

#: a few creators, a list, a catch-up member with several pages of unread, blocks among the
#: list's members: every part has something to count
SHAPE = {**SMALL, "catchup_unread": 60}
PAGE = 8


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """(manifest, seeded URL, empty URL): a tiny seed through ``python -m bench seed``."""
    tmp = tmp_path_factory.mktemp("data")
    with fresh_database("mariadb", tmp, "data") as url, fresh_database("mariadb", tmp, "data_empty") as empty:
        manifest = tmp / "manifest.json"
        assert bench_main(seed_argv(url, manifest, loader="json", **SHAPE)) == 0
        yield manifest, url, empty


def _scalar(url: str, sql: str, **params: object) -> Any:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


@pytest.mark.mariadb
@pytest.mark.redis
@pytest.mark.timeout(600)
def test_data_quick_counts_on_both_databases(
    seeded: tuple[Path, str, str],
    stack_options: StackOptions,
    bench_args: Callable[..., argparse.Namespace],
) -> None:
    manifest_path, url, empty_url = seeded
    manifest = json.loads(manifest_path.read_text())
    args = bench_args(
        "data",
        "--seed-manifest",
        str(manifest_path),
        "--empty-database-url",
        empty_url,
        "--catchup-page",
        str(PAGE),
        "--data-connects",
        "30",
    )
    results = data.run_stacks(args, stack_options, Progress(enabled=False))

    assert [r.stack for r in results] == ["empty", "seeded", "seeded/empty"]
    for r in results:
        assert r.ok, (r.stack, [c.what for c in r.checks if not c.ok])
    empty, seeded_result, ratio = results
    unread = manifest["catchup_member"]["unread"]
    members = manifest["largest_list"]["members"]
    for r in (empty, seeded_result):
        assert {c.what.split(" (")[0] for c in r.checks} >= {
            "pipeline",
            "history page",
            "conversations, worst-case member",
            "conversations, heaviest creator",
            "catch-up",
            "catch-up again",
            "first connects",
            "mass message",
        }
        assert r.figure("catch-up: unread read") == unread
        assert r.figure("catch-up: pages") == -(-unread // PAGE)
        stored, skipped = (
            int(n.replace(",", "")) for n in str(_row(r, "mass message: stored / skipped")).split(" / ")
        )
        assert stored + skipped == members
        assert (r.figure("pipeline: rows stored") or 0) > 0
        delivered, sent = str(_row(r, "pipeline: delivered/sent")).split("/")
        assert delivered == sent
        assert r.series["latency_ms"]["pipeline"]
    # the same blocks on both: the same copies
    assert _row(empty, "mass message: stored / skipped") == _row(
        seeded_result, "mass message: stored / skipped"
    )
    targeted = [row for row in ratio.rows if row.target]
    assert targeted and all(row.target == data.TARGET for row in targeted)
    assert all(row.met is not None for row in targeted)

    # the seeded database is kept, and as its manifest says for the next run: nothing marked read
    catchup = manifest["catchup_member"]["id"]
    assert (
        _scalar(
            url,
            "SELECT COUNT(*) FROM messages WHERE recipient_id = :u AND read_at IS NULL AND blocked = 0",
            u=catchup,
        )
        == unread
    )
    worst = manifest["worst_case_member"]
    assert (
        _scalar(
            url,
            "SELECT unread_count FROM conversations WHERE owner_id = :u AND peer_id = :p",
            u=worst["id"],
            p=worst["unread_from"],
        )
        == worst["unread"]
    )
    # no token of the run changed a stored role (the gateway keeps it equal to the token's)
    assert _scalar(url, "SELECT COUNT(*) FROM users WHERE role = 'creator'") == SHAPE["creators"]
    # the empty database holds the working set only
    assert _scalar(empty_url, "SELECT COUNT(*) FROM messages") < manifest["counts"]["messages"]


def _row(result: Result, metric: str) -> object:
    return next(r.value for r in result.rows if r.metric == metric)


def test_pipeline_pairs_give_each_publisher_process_a_user_once() -> None:
    peers = [{"id": f"m{n}", "messages": 100 - n} for n in range(10)]
    manifest = {
        "heavy_senders": [
            {"id": "c1", "role": "creator", "top_peers": [{"id": "worst", "messages": 1000}, *peers]},
            {"id": "c2", "role": "creator", "top_peers": [{"id": "c1", "messages": 50}, *peers]},
            {"id": "c3", "role": "creator", "top_peers": [{"id": "x3", "messages": 5}]},
        ]
    }
    for procs in (1, 2, 3):
        pairs = data.pipeline_pairs(manifest, {"worst"}, procs)
        for i in range(procs):
            users = [p.sender for p in pairs[i::procs]]
            assert len(users) == len(set(users))
        assert all(p.peer != "worst" and p.sender != "worst" for p in pairs)
        forward = [p for p in pairs if p.sender.startswith("c")]
        assert {p.sender for p in forward} == ({"c1", "c2"} if procs > 1 else {"c1", "c2", "c3"})
        assert len({p.peer for p in forward}) == len(forward)  # a peer serves one sender
        assert {(p.peer, p.sender) for p in pairs if not p.sender.startswith("c")} == {
            (p.sender, p.peer) for p in forward
        }


def test_the_empty_database_is_never_the_seeded_one() -> None:
    url = "mysql+pymysql://root@127.0.0.1:3306/messenger_seed"
    with pytest.raises(data.DataError, match="must not be the seeded one"):
        data.recreate(url, url)


def test_ratios_hold_cpu_and_p99_to_the_target() -> None:
    empty, seeded = Result("data", "empty"), Result("data", "seeded")
    for r, cpu, p99 in ((empty, 1.0, 10.0), (seeded, 1.1, 13.0)):
        r.row("pipeline: stack CPU/message", cpu, "ms")
        r.row("pipeline: p99", p99, "ms")
        r.row("pipeline: p50", 5.0, "ms")
    ratio = {row.metric: row for row in data.compare(empty, seeded).rows}
    assert ratio["pipeline: stack CPU/message"].met is True
    assert ratio["pipeline: p99"].met is False
    assert ratio["pipeline: p50"].target == "" and ratio["pipeline: p50"].met is None
