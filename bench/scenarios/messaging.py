"""``relay`` and ``pipeline``: messages/s and latency through the broker alone, and through the
whole product, with the same load generator (:mod:`bench.load`) in the same run.

Both measure two ways:

- **latency at fixed rates** (``--rates``, default 1,000 and 5,000 messages/s, ``--fixed-s``
  each): p50/p99/p99.9 from the publish call to the subscriber's receipt, every message counted
  by client id;
- **the sustained rate**: steps of ``--step-s`` at rising offered rates (from ``--start-rate``,
  x1.5 per step, then halving the gap after the first step that fails, ``--refine`` times). A
  step *holds* when every message arrives and its p99 stays within ``--bound-ms``; the figure is
  the delivered rate of the fastest step that held.

``pipeline`` first measures ``relay`` on the same stack (unless ``--no-relay``), then ``message``
commands from ``--pairs`` members to as many others, stored and delivered by the handler(s), and
prints the pipeline/relay ratio. At the end it counts this run's rows in the database: every
message the broker acknowledged must be stored exactly once.
"""

from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select

from acl.principal import Role
from acl.tokens import issue_token
from bench.load import Identity, LoadError, Publishers, StepReport, Subscribers
from bench.scenarios import Scenario
from bench.stacks import Stack, bench_engine
from bench.suite import CpuMeter, Progress, Result, percentile
from messenger.models import Message

TOKEN_TTL = timedelta(hours=6)
#: The search gives up below this rate (msg/s).
MIN_RATE = 50.0
#: A fixed rate more than this many times the sustained one is not run.
SKIP_ABOVE = 3.0


@dataclass(frozen=True)
class Sizes:
    """How big a run is; ``--quick`` takes :data:`QUICK` instead of the options."""

    pairs: int
    rates: list[float]
    fixed_s: float
    step_s: float
    start_rate: float
    max_steps: int

    @classmethod
    def of(cls, args: argparse.Namespace) -> Sizes:
        if args.quick:
            return QUICK
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        return cls(args.pairs, rates, args.fixed_s, args.step_s, args.start_rate, args.max_steps)


QUICK = Sizes(pairs=4, rates=[200.0, 500.0], fixed_s=1.0, step_s=1.0, start_rate=300.0, max_steps=2)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--pairs", type=int, default=20, help="sender/recipient pairs (default 20)")
    group.add_argument(
        "--load-procs",
        type=int,
        default=2,
        help="publisher processes, and as many subscriber ones (default 2)",
    )
    group.add_argument(
        "--rates", default="1000,5000", help="fixed offered rates, msg/s, for the latency figures (1000,5000)"
    )
    group.add_argument("--fixed-s", type=float, default=10.0, help="seconds per fixed rate (10)")
    group.add_argument("--step-s", type=float, default=6.0, help="seconds per step of the search (6)")
    group.add_argument("--start-rate", type=float, default=1000.0, help="first step of the search (1000)")
    group.add_argument("--max-steps", type=int, default=12, help="steps of the search at most (12)")
    group.add_argument("--refine", type=int, default=2, help="steps after the first failing one (2)")
    group.add_argument(
        "--bound-ms", type=float, default=100.0, help="a step holds if its p99 stays within this (100 ms)"
    )
    group.add_argument("--no-relay", action="store_true", help="pipeline: skip the relay ceiling")


@dataclass
class Step:
    """One step's figures."""

    offered: float
    sent: int
    acked: int
    delivered: int
    missing: int
    duplicates: int
    late: int
    errors: int
    lost_connections: int
    rate: float
    latencies_ms: list[float]
    holds: bool

    def pct(self, p: float) -> float | None:
        return percentile(self.latencies_ms, p)


def analyse(report: StepReport, bound_ms: float) -> Step:
    """Figures of a step from the raw receipts. Messages sent before the step (stragglers of an
    overloaded earlier step) are counted as ``late`` and left out."""
    seen: set[str] = set()
    latencies: list[float] = []
    duplicates = late = 0
    last = report.t0_ns
    for cid, sent, recv in zip(report.ids, report.sent_ns, report.recv_ns, strict=True):
        if sent < report.t0_ns:
            late += 1
            continue
        if cid in seen:
            duplicates += 1
            continue
        seen.add(cid)
        latencies.append((recv - sent) / 1e6)
        last = max(last, recv)
    latencies.sort()
    elapsed = (last - report.t0_ns) / 1e9
    delivered = len(seen)
    missing = report.sent - delivered
    p99 = percentile(latencies, 0.99)
    return Step(
        offered=report.offered_rate,
        sent=report.sent,
        acked=report.acked,
        delivered=delivered,
        missing=missing,
        duplicates=duplicates,
        late=late,
        errors=report.errors + report.foreign,
        lost_connections=report.lost_connections,
        rate=delivered / elapsed if elapsed > 0 else 0.0,
        latencies_ms=latencies,
        holds=missing == 0
        and report.errors + report.foreign + report.lost_connections == 0
        and p99 is not None
        and p99 <= bound_ms,
    )


class Run:
    """The clients of one scenario run on one stack, and the steps measured with them."""

    def __init__(self, stack: Stack, args: argparse.Namespace, progress: Progress, result: Result) -> None:
        self.stack = stack
        self.args = args
        self.progress = progress
        self.result = result
        self.quick = bool(args.quick)
        self.sizes = Sizes.of(args)
        self.tag = secrets.token_hex(3)
        self.senders = [f"bs{i}-{self.tag}" for i in range(self.sizes.pairs)]
        self.recipients = [f"br{i}-{self.tag}" for i in range(self.sizes.pairs)]
        self.procs = max(1, args.load_procs)
        self.cpu = CpuMeter({})  # one per mode, made in publishers()
        self.timeline: dict[str, list[list[float]]] = {}
        self.subscribers: Subscribers | None = None
        self.cpu_by_mode: dict[str, dict[str, float]] = {}
        #: the current mode's client ids received, all receipts of them, and their prefix
        self.seen: set[str] = set()
        self.receipts = 0
        self.prefix = ""

    def token(self, user: str, role: Role = Role.MEMBER) -> str:
        return issue_token(self.stack.secret, user, role=role, ttl=TOKEN_TTL)

    def start(self) -> Subscribers:
        self.progress.step(f"connecting {len(self.recipients)} subscribers")
        idents = [Identity(uid, self.token(uid)) for uid in self.recipients]
        self.subscribers = Subscribers(self.stack.mqtt_port, idents, self.procs, self.tag)
        return self.subscribers

    def publishers(self, mode: str) -> Publishers:
        if mode == "relay":
            # the service account publishes delivered-message payloads straight to the recipients
            users = [f"bench-relay{i}-{self.tag}" for i in range(len(self.senders))]
            idents = [
                Identity(u, self.token(u, Role.SERVICE), peer=r)
                for u, r in zip(users, self.recipients, strict=True)
            ]
        else:
            idents = [
                Identity(s, self.token(s), peer=r) for s, r in zip(self.senders, self.recipients, strict=True)
            ]
        pubs = Publishers(self.stack.mqtt_port, mode, idents, self.procs, f"{mode[0]}{self.tag}")
        # each mode its own CPU split: the relay's would hide the handlers' share
        self.cpu = CpuMeter(self.stack.pids() | (self.subscribers.pids() if self.subscribers else {}))
        self.cpu.add(pubs.pids())
        return pubs

    def step(self, pubs: Publishers, mode: str, label: str, rate: float, duration: float) -> Step:
        assert self.subscribers is not None  # noqa: S101 - start() first
        subscribers = self.subscribers
        self.progress.step(f"{mode}: {label}")

        def on_progress(sent: int, received: int, total: int) -> None:
            self.progress.update(received, total, f"sent {sent:,} received {received:,} of {total:,}")

        self.cpu.start()
        try:
            report = pubs.run_step(subscribers, rate, duration, max(10.0, 2 * duration), on_progress)
        finally:
            self.cpu.stop()
        self._count(report)
        step = analyse(report, self.args.bound_ms)
        self._timeline(f"{mode} {label}", report)
        verdict = "holds" if step.holds else "does not hold"
        self.result.notes.append(
            f"{mode} {label}: offered {rate:,.0f}/s -> delivered {step.delivered:,}/{step.sent:,}"
            f" at {step.rate:,.0f}/s, p50 {_ms(step.pct(0.5))} p99 {_ms(step.pct(0.99))} ms"
            f", {step.duplicates} duplicates, {step.errors} errors, {step.lost_connections} connections"
            f" lost: {verdict}"
        )
        return step

    def _timeline(self, label: str, report: StepReport) -> None:
        """Receipts per 0.5 s since the step's start, for the plot."""
        buckets: dict[int, int] = {}
        for recv in report.recv_ns:
            b = int((recv - report.t0_ns) / 5e8)
            if b >= 0:
                buckets[b] = buckets.get(b, 0) + 1
        self.timeline[label] = [[b / 2, n * 2] for b, n in sorted(buckets.items())]

    def measure(self, mode: str) -> dict[str, float | None]:
        """The search for the sustained rate, then the fixed rates (ascending: a rate the stack
        cannot keep up with leaves a backlog behind it), then a drain: every message sent in
        this mode must arrive once. Rows and checks go into the result."""
        args, sizes = self.args, self.sizes
        self.seen, self.receipts, self.prefix = set(), 0, f"{mode[0]}{self.tag}"
        pubs = self.publishers(mode)
        figures: dict[str, float | None] = {}
        sent = 0
        try:
            best: Step | None = None
            failed: Step | None = None
            refine = 0
            rate = sizes.start_rate
            for n in range(sizes.max_steps):
                step = self.step(pubs, mode, f"search step {n + 1} ({rate:,.0f}/s)", rate, sizes.step_s)
                sent += step.sent
                if step.holds:
                    best = step if best is None or step.rate > best.rate else best
                else:
                    failed = step if failed is None or step.offered < failed.offered else failed
                if failed is None:
                    rate *= 1.5
                elif best is None:  # the first rate was already too fast: halve until one holds
                    rate = failed.offered / 2
                    if rate < MIN_RATE:
                        break
                else:
                    if refine >= args.refine:
                        break
                    refine += 1
                    rate = (best.offered + failed.offered) / 2
            sustained = best.rate if best is not None else None
            target = ">= 5,000" if mode == "pipeline" and self.stack.name == "production" else ""
            self.result.row(f"{mode} sustained (p99 <= {args.bound_ms:g} ms)", sustained, "msg/s", target)
            if best is not None:
                self.result.row(f"{mode} sustained: p99", best.pct(0.99), "ms")
            if failed is None and sizes.max_steps and not self.quick:
                self.result.notes.append(
                    f"{mode}: every search step held; the sustained figure is a floor (raise --max-steps)"
                )
            latency_series = self.result.series.setdefault("latency_ms", {})
            for fixed in sorted(sizes.rates):
                if sustained is not None and fixed > SKIP_ABOVE * sustained and not self.quick:
                    self.result.notes.append(
                        f"{mode} at {fixed:,.0f}/s: not run, more than {SKIP_ABOVE:g}x the sustained"
                        f" {sustained:,.0f}/s: it would only measure how a queue grows"
                    )
                    continue
                step = self.step(pubs, mode, f"{fixed:,.0f}/s fixed", fixed, sizes.fixed_s)
                sent += step.sent
                name = f"{mode} at {fixed:,.0f}/s"
                target = "<= 25 ms" if mode == "pipeline" and fixed == 1000 else ""
                self.result.row(f"{name}: p50", step.pct(0.5), "ms")
                self.result.row(
                    f"{name}: p99", step.pct(0.99), "ms", target if self.stack.name == "production" else ""
                )
                self.result.row(f"{name}: p99.9", step.pct(0.999), "ms")
                self.result.row(f"{name}: delivered/s", step.rate, "msg/s")
                figures[f"p99@{fixed:g}"] = step.pct(0.99)
                latency_series[name] = _sample(step.latencies_ms)
            self._drain(mode, sent, sustained)
            self.result.row(f"{mode}: duplicates (QoS 1 redeliveries)", self.receipts - len(self.seen))
            counted = f"{len(self.seen):,} of {sent:,} sent"
            self.result.check(f"{mode}: every message delivered ({counted})", len(self.seen) == sent)
            figures["sustained"] = sustained
            figures["sent"] = sent
            self.result.series.setdefault("throughput", {}).update(self.timeline)
            self.timeline = {}
        finally:
            pubs.close()
            self.cpu_by_mode[mode] = self.cpu.shares()
        return figures

    def _drain(self, mode: str, sent: int, sustained: float | None) -> None:
        """Collect what an overloaded step left queued until every message of this mode has
        arrived once (bounded: the backlog at the sustained rate, plus 30 s, at most 5 minutes).
        Counted by client id, so duplicates and stragglers of another mode cannot end it early."""
        assert self.subscribers is not None  # noqa: S101 - start() first
        subscribers = self.subscribers
        backlog = max(0, sent - len(self.seen))
        timeout = min(300.0, 30.0 + backlog / max(sustained or 0.0, 100.0))
        self.progress.step(f"{mode}: draining {backlog:,} queued messages")
        deadline = time.monotonic() + timeout
        while True:
            report = StepReport(offered_rate=0.0, duration_s=0.0, t0_ns=0)
            subscribers.collect(report)
            self._count(report)
            if len(self.seen) >= sent or time.monotonic() > deadline:
                break
            self.progress.update(len(self.seen), sent, "draining")
            time.sleep(0.5)
        time.sleep(0.2)  # redeliveries just behind the last message
        report = StepReport(offered_rate=0.0, duration_s=0.0, t0_ns=0)
        subscribers.collect(report)
        self._count(report)

    def _count(self, report: StepReport) -> None:
        """Every receipt of this mode's messages, whichever step collected it."""
        ours = [cid for cid in report.ids if cid.startswith(self.prefix)]
        self.seen.update(ours)
        self.receipts += len(ours)

    def close(self) -> None:
        if self.subscribers is not None:
            self.subscribers.close()
        # the table's split is the last mode's (pipeline's, after relay's); the others go in notes
        for mode, shares in self.cpu_by_mode.items():
            self.result.cpu = shares
            split = ", ".join(f"{name} {share:.0%}" for name, share in shares.items())
            self.result.notes.append(f"CPU during {mode} (share of one core): {split}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sample(values: list[float], limit: int = 20_000) -> list[float]:
    if len(values) <= limit:
        return [round(v, 3) for v in values]
    stride = len(values) / limit
    return [round(values[int(i * stride)], 3) for i in range(limit)]


def stored(stack: Stack, tag: str) -> tuple[int, int]:
    """Rows and distinct client ids of this run's pipeline messages in the stack's database."""
    engine = bench_engine(stack)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                select(func.count(), func.count(func.distinct(Message.client_msg_id))).where(
                    Message.client_msg_id.like(f"p{tag}%")
                )
            ).one()
    finally:
        engine.dispose()
    return int(rows), int(distinct)


def run_relay(stack: Stack, args: argparse.Namespace, progress: Progress) -> Result:
    result = Result("relay", stack.name, stack.describe(), params=_params(args))
    run = Run(stack, args, progress, result)
    try:
        run.start()
        run.measure("relay")
    except LoadError as exc:
        result.check(f"the load ran ({exc})", False)
    finally:
        run.close()
    return result


def run_pipeline(stack: Stack, args: argparse.Namespace, progress: Progress) -> Result:
    result = Result("pipeline", stack.name, stack.describe(), params=_params(args))
    run = Run(stack, args, progress, result)
    try:
        run.start()
        relay = None if args.no_relay else run.measure("relay")
        pipeline = run.measure("pipeline")
        if relay and relay["sustained"] and pipeline["sustained"]:
            target = ">= 0.6" if stack.name == "production" else ""
            result.row("pipeline/relay (sustained)", pipeline["sustained"] / relay["sustained"], "", target)
        rows, distinct = stored(stack, run.tag)
        sent = int(pipeline["sent"] or 0)
        result.row("pipeline messages stored", rows, "rows")
        result.check(
            f"every pipeline message stored exactly once ({rows:,} rows for {sent:,} sent)",
            rows == distinct == sent,
        )
    except LoadError as exc:
        result.check(f"the load ran ({exc})", False)
    finally:
        run.close()
    return result


def _params(args: argparse.Namespace) -> dict[str, object]:
    keys = (
        "quick",
        "pairs",
        "load_procs",
        "rates",
        "fixed_s",
        "step_s",
        "start_rate",
        "max_steps",
        "refine",
        "bound_ms",
    )
    return {k: getattr(args, k) for k in keys}


RELAY = Scenario(
    "relay",
    "the broker's ceiling: publish straight to subscribers (no handler, no database)",
    add_arguments,
    run_relay,
)
PIPELINE = Scenario(
    "pipeline",
    "message commands stored and delivered by the handler; ratio to relay",
    lambda _g: None,
    run_pipeline,
)
