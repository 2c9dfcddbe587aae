"""``fanout``: a mass message to a quick-sized list, counted in the database and at the online
members (not timed: the rows are there, whatever the figures)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from bench.scenarios.fanout import QUICK, SCENARIO, Plan
from bench.stacks import StackOptions, running
from bench.suite import Progress


@pytest.mark.parametrize(
    "stack_name", ["embedded", pytest.param("production", marks=[pytest.mark.mariadb, pytest.mark.redis])]
)
def test_a_mass_message_reaches_every_member_who_does_not_block_the_creator_once(
    stack_name: str, bench_args: Callable[..., argparse.Namespace], stack_options: StackOptions
) -> None:
    with running(stack_name, stack_options) as stack:
        result = SCENARIO.run(stack, bench_args("fanout", "--probe-rate", "20"), Progress(False))
    failed = [c.what for c in result.checks if not c.ok]
    assert not failed, failed
    checked = " | ".join(c.what for c in result.checks)
    members, online, _ = QUICK
    expected = members - members // 100  # 1% block the creator
    assert f"({expected:,} copies, {expected:,} recipients, {expected:,} expected)" in checked
    assert "(0 missing)" in checked and "no copy to a blocking member (0)" in checked
    copies_per_s = result.figure("copies stored per second")
    assert copies_per_s is not None and copies_per_s > 0
    lag = result.figure("online: received after its copy was stored, max")
    assert lag is not None
    assert result.series["latency_ms"]["1:1 probe during the fan-out"] is not None
    assert result.params["members"] == members and result.params["online"] == online


def test_the_plan_spreads_online_members_and_has_some_of_them_block_the_creator() -> None:
    plan = Plan.make(members=2_000, online=20, blocked_pct=1.0)
    assert len(plan.members) == 2_000 and len(set(plan.members)) == 2_000
    assert len(plan.online) == 20 and plan.online == sorted(set(plan.online))
    assert plan.online[-1] >= 1_900  # spread over the whole list, the last pages watched too
    assert len(plan.blocked) == 20
    assert 1 <= len(set(plan.online) & plan.blocked) < 20
    assert plan.expected_copies == 1_980
