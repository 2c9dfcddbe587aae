"""rest: requests/s and latency of the REST API, on the stack's ``api_url`` (loopback).

Two phases, each a warm-up and then a fixed window, driven by ``--rest-procs`` load processes
(multiprocessing, spawn), each an asyncio loop with ``--rest-concurrency`` keep-alive workers:

  GET  /v1/messages?with=PEER&limit=50   the newest page of a conversation of ``--rest-seed``
                                         messages, read by one user
  POST /v1/messages                      {"to", "body", "client_id"} from ``--rest-senders``
                                         distinct users to one recipient (201 each)

The conversation is seeded before the clock starts, straight into the stack's database through
the product's own send path (``actions.send_messages``: real rows, conversations kept up to
date) rather than over HTTP, which would take longer than the measurement. The users are created
there too. The stacks run with the send rate limit off. After the POST phase the database must
hold exactly one row per 201 answer (the run's client ids carry a per-run prefix).

Requests/s counts 2xx answers completed inside the measured window; latency is that of those
answers; "stack CPU/request" is the CPU time of the stack's processes (database included, load
generator not) in the window per such answer. Non-2xx answers and failed requests are counted
for the whole phase, warm-up included.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from acl.tokens import issue_token
from bench.restload import LoadError, LoadProcesses, Phase, Tally
from bench.scenarios import Scenario
from bench.stacks import Stack
from bench.suite import CpuMeter, Progress, Result, percentile
from messenger import actions
from messenger.db import create_db_engine, session_factory, unit_of_work
from messenger.models import Message
from messenger.repositories import users

#: points kept per latency series for the plot (the percentiles use every point)
MAX_SERIES_POINTS = 20_000
#: seeded messages stored per transaction
SEED_BATCH = 500
PAGE = 50


# --- options --------------------------------------------------------------------------------------


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--rest-duration", type=float, help="measured seconds per phase (default 15; --quick 2)"
    )
    group.add_argument("--rest-warmup", type=float, help="warm-up seconds per phase (default 2; --quick 0.5)")
    group.add_argument(
        "--rest-concurrency", type=int, default=16, help="keep-alive workers per load process (default 16)"
    )
    group.add_argument("--rest-procs", type=int, default=2, help="load generator processes (default 2)")
    group.add_argument(
        "--rest-seed", type=int, help="messages in the conversation read by GET (default 1,000; --quick 100)"
    )
    group.add_argument("--rest-senders", type=int, default=32, help="distinct POST senders (default 32)")
    group.add_argument("--rest-timeout", type=float, default=10.0, help="per-request timeout, s (default 10)")


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    concurrency: int
    procs: int
    seed: int
    senders: int
    timeout: float

    @classmethod
    def of(cls, args: argparse.Namespace) -> Options:
        quick = bool(getattr(args, "quick", False))

        def pick(value: Any, full: Any, small: Any) -> Any:
            return value if value is not None else small if quick else full

        options = cls(
            duration=float(pick(args.rest_duration, 15.0, 2.0)),
            warmup=float(pick(args.rest_warmup, 2.0, 0.5)),
            concurrency=args.rest_concurrency,
            procs=args.rest_procs,
            seed=int(pick(args.rest_seed, 1000, 100)),
            senders=args.rest_senders,
            timeout=args.rest_timeout,
        )
        if min(options.concurrency, options.procs, options.seed, options.senders) < 1:
            raise ValueError("--rest-concurrency, --rest-procs, --rest-seed and --rest-senders must be >= 1")
        if options.duration <= 0 or options.warmup < 0 or options.timeout <= 0:
            raise ValueError("--rest-duration and --rest-timeout must be positive, --rest-warmup >= 0")
        return options


# --- the scenario ---------------------------------------------------------------------------------


@dataclass
class Merged:
    ok: int
    latencies_ms: list[float]
    per_second: list[int]
    errors: Counter[str]
    samples: dict[str, str]
    created: int
    timeouts: int
    requests: int

    @classmethod
    def of(cls, tallies: list[Tally]) -> Merged:
        errors: Counter[str] = Counter()
        samples: dict[str, str] = {}
        for t in tallies:
            errors.update(t.errors)
            for key, sample in t.samples.items():
                samples.setdefault(key, sample)
        return cls(
            ok=sum(t.ok for t in tallies),
            latencies_ms=sorted(ms for t in tallies for ms in t.latencies_ms),
            per_second=[sum(counts) for counts in zip(*(t.per_second for t in tallies), strict=True)],
            errors=errors,
            samples=samples,
            created=sum(t.created for t in tallies),
            timeouts=sum(t.timeouts for t in tallies),
            requests=sum(t.requests for t in tallies),
        )


def seed(database_url: str, people: list[str], reader: str, peer: str, count: int, run: str) -> None:
    """Create ``people`` and store ``count`` messages between ``reader`` and ``peer`` (alternating),
    through the product's send path, a batch per transaction."""
    engine = create_db_engine(database_url)
    try:
        sessions = session_factory(engine)
        with unit_of_work(sessions) as session:
            users.ensure_many(session, people)
        for first in range(0, count, SEED_BATCH):
            requests = []
            for n in range(first, min(count, first + SEED_BATCH)):
                sender, to = (reader, peer) if n % 2 == 0 else (peer, reader)
                body = f"seed message {n} of rest bench run {run}"
                requests.append(actions.SendRequest(sender, f"{run}-seed-{n}", to, body))
            with unit_of_work(sessions) as session:
                results, _ = actions.send_messages(session, requests)  # nobody is online: no delivery
            refused = [r.error for r in results if r.error is not None]
            if refused:
                raise LoadError(f"seeding refused {len(refused)} messages, e.g. {refused[0]}")
    finally:
        engine.dispose()


def stored_sends(
    database_url: str, senders: list[str], prefix: str, expected: int, wait_s: float = 5.0
) -> int:
    """Rows of this run's POST sends (waits up to ``wait_s`` for ``expected`` of them)."""
    engine = create_db_engine(database_url)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            with engine.connect() as conn:
                found = conn.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.sender_id.in_(senders), Message.client_msg_id.like(f"{prefix}-%"))
                ).scalar_one()
            if found >= expected or time.monotonic() > deadline:
                return int(found)
            time.sleep(0.2)
    finally:
        engine.dispose()


def combined(meters: Iterable[CpuMeter]) -> CpuMeter:
    """One meter's readings over every window of ``meters``."""
    total = CpuMeter({})
    for m in meters:
        total.elapsed += m.elapsed
        total.machine += m.machine
        for name, seconds in m.used.items():
            total.used[name] = total.used.get(name, 0.0) + seconds
    return total


def _subsample(values: list[float], limit: int = MAX_SERIES_POINTS) -> list[float]:
    if len(values) <= limit:
        return [round(v, 3) for v in values]
    return sorted(round(v, 3) for v in random.Random(0).sample(values, limit))


def run(stack: Stack, args: argparse.Namespace, progress: Progress) -> Result:
    o = Options.of(args)
    result = Result("rest", stack.name, stack.describe())
    result.params = {
        "duration_s": o.duration,
        "warmup_s": o.warmup,
        "procs": o.procs,
        "concurrency_per_proc": o.concurrency,
        "seed": o.seed,
        "senders": o.senders,
        "timeout_s": o.timeout,
        "page": PAGE,
    }
    run_id = uuid.uuid4().hex[:10]
    reader, peer, recipient = f"rest-{run_id}-reader", f"rest-{run_id}-peer", f"rest-{run_id}-to"
    senders = [f"rest-{run_id}-s{i}" for i in range(o.senders)]
    prefix = f"rest-{run_id}"

    def token(user: str) -> str:
        ttl = timedelta(hours=1)
        return issue_token(stack.secret, user, ttl=ttl)

    progress.step(f"rest on {stack.name}: seeding {o.seed:,} messages")
    t0 = time.monotonic()
    seed(stack.database_url, [reader, peer, recipient, *senders], reader, peer, o.seed, run_id)
    seeded_in = time.monotonic() - t0
    page = httpx.get(
        f"{stack.api_url}/v1/messages",
        params={"with": peer, "limit": str(PAGE)},
        headers={"Authorization": f"Bearer {token(reader)}"},
        timeout=o.timeout,
    )
    got = len(page.json().get("messages", [])) if page.is_success else -1
    result.check(
        f"a history page holds {min(PAGE, o.seed)} seeded messages (got {got})", got == min(PAGE, o.seed)
    )
    result.notes.append(
        f"seeded {o.seed:,} messages in {seeded_in:.1f} s; load: {o.procs} processes x {o.concurrency} "
        f"keep-alive workers, {o.warmup:g} s warm-up + {o.duration:g} s per phase, {o.senders} POST senders"
    )

    get = Phase("GET", 0.0, o.warmup, o.duration, o.concurrency, o.timeout, (token(reader),), peer, page=PAGE)
    post_tokens = tuple(token(s) for s in senders)
    post = Phase("POST", 0.0, o.warmup, o.duration, o.concurrency, o.timeout, post_tokens, recipient, prefix)
    loaders = LoadProcesses(stack.api_url, o.procs)
    stack_pids = stack.pids()
    meters = {"GET": CpuMeter(stack_pids), "POST": CpuMeter(stack_pids)}
    merged: dict[str, Merged] = {}
    try:
        progress.step(f"rest on {stack.name}: starting {o.procs} load processes")
        loaders.start()
        for meter in meters.values():
            meter.add(loaders.pids())
        for phase in (get, post):
            progress.step(f"rest on {stack.name}: {phase.kind} /v1/messages")
            timed = replace(phase, start_at=time.monotonic() + 0.3)
            merged[phase.kind] = Merged.of(loaders.run(timed, meters[phase.kind], progress))
    except LoadError as exc:
        result.check(f"the load ran ({exc})", False)
        return result
    finally:
        loaders.stop()
        progress.finish()

    result.cpu = combined(meters.values()).shares()
    for kind, meter in meters.items():
        split = ", ".join(f"{name} {share:.0%}" for name, share in meter.shares().items() if share >= 0.005)
        result.notes.append(f"CPU in the {kind} window (share of one core): {split}")
    window = o.duration
    labels = {"GET": ("GET history", "GET req/s"), "POST": ("POST send", "POST req/s")}
    for kind, m in merged.items():
        metric, series_label = labels[kind]
        result.row(metric, m.ok / window, "req/s")
        result.row(f"{metric} p50", percentile(m.latencies_ms, 0.5), "ms")
        result.row(f"{metric} p99", percentile(m.latencies_ms, 0.99), "ms")
        # CPU time is far less sensitive than req/s to whatever else the machine runs
        stack_cpu = sum(seconds for name, seconds in meters[kind].used.items() if name in stack_pids)
        result.row(f"{metric} stack CPU/request", stack_cpu * 1000 / m.ok if m.ok else None, "ms")
        result.series.setdefault("latency_ms", {})[metric] = _subsample(m.latencies_ms)
        offset = 0.0 if kind == "GET" else o.duration
        result.series.setdefault("throughput", {})[series_label] = [
            [round(offset + s + 0.5, 1), count] for s, count in enumerate(m.per_second)
        ]
        result.check(f"{metric}: requests answered in the window ({m.ok:,})", m.ok > 0)
        result.notes.append(
            f"{metric}: {m.requests:,} requests in the phase, {m.ok:,} 2xx in the {window:g} s window"
        )
    errors = sum((m.errors for m in merged.values()), Counter[str]())
    result.row("errors", sum(errors.values()))
    for key, count in errors.most_common():
        sample = next(m.samples[key] for m in merged.values() if key in m.samples)
        result.notes.append(f"error {key}: {count:,}, e.g. {sample!r}")
    result.check(f"no errors (non-2xx answers or failed requests): {dict(errors) or 0}", not errors)

    sent = merged["POST"]
    stored = stored_sends(stack.database_url, senders, prefix, sent.created)
    result.row("POST 201s", sent.created)
    result.row("POST sends stored", stored)
    if sent.timeouts:
        ok = sent.created <= stored <= sent.created + sent.timeouts
        what = (
            f"{sent.created:,} 201s + up to {sent.timeouts:,} timed-out sends stored once each ({stored:,})"
        )
    else:
        ok = stored == sent.created
        what = f"every 201 send stored exactly once ({stored:,} rows for {sent.created:,} 201s)"
    result.check(what, ok)
    return result


SCENARIO = Scenario(
    name="rest",
    summary="REST history pages and HTTP sends: requests/s and latency",
    add_arguments=add_arguments,
    run=run,
)
