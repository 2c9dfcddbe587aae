"""``relay`` and ``pipeline``: the load generator counts every message by client id, and the
scenarios report what they counted (not how fast: no figure here is held to a speed)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.load import StepReport
from bench.scenarios.messaging import analyse, run_pipeline, run_relay
from bench.stacks import StackOptions, running
from bench.suite import Progress, Result, meets, print_table, write_plot

MS = 1_000_000


def report(receipts: list[tuple[str, int, int]], *, sent: int, t0: int = 1_000 * MS) -> StepReport:
    r = StepReport(offered_rate=100.0, duration_s=1.0, t0_ns=t0, sent=sent, acked=sent)
    for cid, sent_at, received_at in receipts:
        r.ids.append(cid)
        r.sent_ns.append(sent_at)
        r.recv_ns.append(received_at)
    return r


def test_a_step_counts_duplicates_once_and_leaves_out_stragglers_of_an_earlier_step() -> None:
    t0 = 1_000 * MS
    step = analyse(
        report(
            [
                ("a", t0, t0 + 2 * MS),
                ("b", t0 + 10 * MS, t0 + 14 * MS),
                ("b", t0 + 10 * MS, t0 + 30 * MS),  # a QoS 1 redelivery
                ("old", t0 - 50 * MS, t0 + 1 * MS),  # sent before this step began
                ("c", t0 + 20 * MS, t0 + 26 * MS),
            ],
            sent=3,
        ),
        bound_ms=100,
    )
    assert (step.delivered, step.missing, step.duplicates, step.late) == (3, 0, 1, 1)
    assert step.latencies_ms == [2.0, 4.0, 6.0]
    assert step.rate == pytest.approx(3 / 0.026)
    assert step.holds


def test_a_step_with_a_missing_message_or_a_slow_tail_does_not_hold() -> None:
    t0 = 1_000 * MS
    missing = analyse(report([("a", t0, t0 + MS)], sent=2), bound_ms=100)
    assert (missing.delivered, missing.missing, missing.holds) == (1, 1, False)
    slow = analyse(report([("a", t0, t0 + MS), ("b", t0, t0 + 150 * MS)], sent=2), bound_ms=100)
    assert slow.missing == 0 and not slow.holds
    nothing = analyse(report([], sent=0), bound_ms=100)
    assert not nothing.holds and nothing.rate == 0


def test_targets_are_read_from_their_text() -> None:
    assert meets(5_000, ">= 5,000 msg/s") and not meets(4_999.9, ">= 5,000")
    assert meets(25, "<= 25 ms") and not meets(25.1, "<= 25 ms")
    with pytest.raises(ValueError, match="unreadable target"):
        meets(1, "about 3")


def test_the_table_shows_each_stack_and_flags_a_missed_target_and_a_failed_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = Result("pipeline", "embedded"), Result("pipeline", "production")
    a.row("sustained", 900.0, "msg/s")
    b.row("sustained", 4_200.0, "msg/s", ">= 5,000")
    b.check("every message stored", False)
    print_table([a, b])
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("sustained"))
    assert "900 msg/s" in line and "4,200 msg/s MISSED" in line and ">= 5,000" in line
    assert "[production] FAILED: every message stored" in out
    assert not b.ok and a.ok


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    r = Result("relay", "embedded")
    r.series = {
        "latency_ms": {"at 1,000/s": [1.0, 2.0, 3.5]},
        "throughput": {"step": [[0.0, 10.0], [0.5, 20.0]]},
    }
    write_plot([r], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to plot"):
        write_plot([Result("connect", "embedded")], tmp_path / "none.png")


def rows(result: Result) -> dict[str, object]:
    return {r.metric: r.value for r in result.rows}


def test_pipeline_on_the_embedded_stack_stores_and_delivers_every_message(
    bench_args: Callable[..., argparse.Namespace], stack_options: StackOptions
) -> None:
    with running("embedded", stack_options) as stack:
        result = run_pipeline(stack, bench_args("pipeline"), Progress(False))
    failed = [c.what for c in result.checks if not c.ok]
    assert not failed, failed
    figures = rows(result)
    # quick: two 1 s search steps from 300/s, then 1 s at 200/s and at 500/s; the check above
    # held, so every one of them is stored exactly once
    stored = figures["pipeline messages stored"]
    assert isinstance(stored, int) and stored >= 300 + 150 + 200 + 500
    for mode in ("relay", "pipeline"):
        for rate in ("200", "500"):
            assert isinstance(figures[f"{mode} at {rate}/s: p99"], float)
    assert "pipeline/relay (sustained)" in figures or figures["pipeline sustained (p99 <= 100 ms)"] is None
    assert len(result.series["latency_ms"]["pipeline at 500/s"]) == 500
    assert {"messenger serve", "bench publisher 1", "bench subscriber 1"} <= set(result.cpu)


@pytest.mark.mariadb
@pytest.mark.redis
def test_pipeline_on_the_production_stack_stores_and_delivers_every_message(
    bench_args: Callable[..., argparse.Namespace], stack_options: StackOptions
) -> None:
    with running("production", stack_options) as stack:
        result = run_pipeline(stack, bench_args("pipeline", "--no-relay"), Progress(False))
    failed = [c.what for c in result.checks if not c.ok]
    assert not failed, failed
    figures = rows(result)
    assert not any(metric.startswith("relay") for metric in figures)
    stored = figures["pipeline messages stored"]
    assert isinstance(stored, int) and stored >= 200 + 500 + 300
    assert {"mosquitto", "handler-1", "handler-2", "mariadbd"} <= set(result.cpu)


def test_relay_through_the_command_line_writes_the_table_the_json_and_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "relay.json", tmp_path / "relay.png"
    code = main(["relay", "--quick", "--stack", "embedded", "--json", str(out), "--plot", str(png)])
    assert code == 0, capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["versions"]["amqtt"] and saved["machine"]["cpus"]
    (result,) = saved["results"]
    assert result["scenario"] == "relay" and result["stack"] == "embedded" and result["ok"]
    delivered = {r["metric"]: r["value"] for r in result["rows"]}
    assert delivered["relay at 500/s: delivered/s"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "== relay ==" in capsys.readouterr().out


def test_a_stack_that_refuses_the_load_fails_the_run_instead_of_hanging(
    bench_args: Callable[..., argparse.Namespace], stack_options: StackOptions
) -> None:
    with running("embedded", stack_options) as stack:
        stack.secret = "not-the-secret-the-stack-checks-tokens-with"
        result = run_relay(stack, bench_args("relay"), Progress(False))
    assert not result.ok
    (failure,) = [c.what for c in result.checks if not c.ok]
    assert "0/4 connected" in failure and "CONNECT" in failure
