"""``python -m bench.migration`` on a small seeded MariaDB database: down to 0004 and back to head
with the probe writing and reading throughout; the schema and the unread counters come back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import inspect

from bench import migration
from bench.__main__ import main as bench_main
from messenger.db import create_db_engine
from tests.bench.test_seed import SMALL, seed_argv
from tests.conftest import BACKENDS, fresh_database

pytestmark = [
    pytest.mark.mariadb,
    pytest.mark.skipif("mariadb" not in BACKENDS, reason="MESSENGER_TEST_BACKENDS leaves out mariadb"),
]


def test_migration_round_trip_with_the_probe(tmp_path: Path) -> None:
    with fresh_database("mariadb", tmp_path, "mig") as url:
        assert bench_main(seed_argv(url, tmp_path / "manifest.json", **SMALL)) == 0
        engine = create_db_engine(url)
        try:

            def state() -> tuple[set[str], int]:
                indexes = {ix["name"] for ix in inspect(engine).get_indexes("messages") if ix["name"]}
                with engine.connect() as conn:
                    # the probe's raw inserts leave its own conversation out of the count
                    unread = conn.exec_driver_sql(
                        "SELECT SUM(unread_count) FROM conversations WHERE owner_id NOT LIKE 'probe-%%'"
                    ).scalar_one()
                return indexes, int(unread)

            before = state()
            out = tmp_path / "migration.json"
            assert migration.main(["--database-url", url, "--start", "0004", "--json", str(out)]) == 0
            figures = json.loads(out.read_text())
            assert figures["upgrade_to"] == "0005"
            assert figures["probe_error_count"] == 0
            assert figures["probe_ops_during_upgrade"] > 0
            assert figures["messages"] == SMALL["messages"]
            after = state()
            assert after == before
        finally:
            engine.dispose()
