"""``rest``: history pages and HTTP sends are answered without errors and every 201 send is stored
exactly once; the scenario reports what it counted, not how fast."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from bench.scenarios.rest import SCENARIO
from bench.stacks import StackOptions, running
from bench.suite import Progress


@pytest.mark.parametrize(
    "stack_name", ["embedded", pytest.param("production", marks=[pytest.mark.mariadb, pytest.mark.redis])]
)
def test_rest_quick(
    stack_name: str, stack_options: StackOptions, bench_args: Callable[..., argparse.Namespace]
) -> None:
    args = bench_args("rest", "--stack", stack_name)
    with running(stack_name, stack_options) as stack:
        result = SCENARIO.run(stack, args, Progress(enabled=False))

    assert result.ok, [c.what for c in result.checks if not c.ok]
    for metric in ("GET history", "POST send"):
        assert (result.figure(metric) or 0) > 0, metric
        assert result.figure(f"{metric} p50") is not None
        assert result.figure(f"{metric} p99") is not None
        assert result.series["latency_ms"][metric]
    assert result.figure("errors") == 0
    created = result.figure("POST 201s")
    assert created is not None and created > 0
    assert result.figure("POST sends stored") == created
    assert set(result.series["throughput"]) == {"GET req/s", "POST req/s"}
    assert any(name.startswith("load client") for name in result.cpu)
