"""The benchmark suite's tests: each scenario runs briefly (``--quick``) on a real stack and must
count correctly. Nothing here asserts a speed.

The production stack gets a database of its own on the test MariaDB server (``<db>_bench``):
background workers take any queued work in their database, so it must not be the test one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest
from sqlalchemy import make_url

from bench.__main__ import parser, scenarios
from bench.stacks import StackOptions, ensure_database
from tests.conftest import MARIADB_URL, REDIS_URL

BENCH_DATABASE_URL = make_url(MARIADB_URL).set(database=f"{make_url(MARIADB_URL).database}_bench")


@pytest.fixture(scope="session")
def stack_options() -> StackOptions:
    url = BENCH_DATABASE_URL.render_as_string(hide_password=False)
    ensure_database(url)
    return StackOptions(database_url=url, redis_url=REDIS_URL, handlers=2)


@pytest.fixture
def bench_args() -> Callable[..., argparse.Namespace]:
    """The namespace ``python -m bench SCENARIO --quick ARGS...`` would give a scenario."""

    def make(scenario: str, *argv: str) -> argparse.Namespace:
        return parser(scenarios()).parse_args([scenario, "--quick", *argv])

    return make
