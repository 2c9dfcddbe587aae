"""The load processes of the ``rest`` scenario: spawned once, each an asyncio loop of keep-alive
httpx workers issuing history pages or sends, and reporting latencies and per-second counts back.

Kept out of ``bench.scenarios`` so that a spawned process imports httpx alone (the scenario's
imports, SQLAlchemy and Alembic among them, would double its start-up on a busy machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import queue
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any, Literal, Protocol

import httpx

from bench.procstat import reap

#: a load process with no command for this long assumes its parent is gone and exits
CHILD_IDLE_S = 600.0
#: how long a load process may take to start (imports) before the run is given up
CHILD_START_S = 60.0
#: slack after a phase's last possible answer before its results are given up on
RESULT_SLACK_S = 30.0


class LoadError(Exception):
    """A load process failed or did not answer in time."""


class Meter(Protocol):
    """``bench.suite.CpuMeter``: started and stopped around each measured window."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Progress(Protocol):
    def update(self, done: float, total: float, detail: str = "") -> None: ...


@dataclass(frozen=True)
class Phase:
    """What every load process runs: warm-up from ``start_at`` (``time.monotonic()``, one clock
    for all processes on Linux), then ``duration`` measured seconds."""

    kind: Literal["GET", "POST"]
    start_at: float
    warmup: float
    duration: float
    concurrency: int
    timeout: float
    #: GET: the reader's token; POST: one per sender, worker ``w`` of process ``p`` uses
    #: ``tokens[(p * concurrency + w) % len(tokens)]``
    tokens: tuple[str, ...]
    #: GET: the other side of the conversation; POST: the recipient
    peer: str
    #: POST: client ids are ``{prefix}-{process}-{worker}-{n}``
    prefix: str = ""
    #: GET: messages per page
    page: int = 50


@dataclass
class Tally:
    """One load process's answers in one phase."""

    ok: int = 0  # 2xx answers completed in the measured window
    latencies_ms: list[float] = field(default_factory=list)  # of those
    per_second: list[int] = field(default_factory=list)  # of those, by second of the window
    errors: Counter[str] = field(default_factory=Counter)  # whole phase: "HTTP 500", "ReadTimeout"
    samples: dict[str, str] = field(default_factory=dict)  # an answer or message per error key
    created: int = 0  # 201 answers, whole phase
    timeouts: int = 0  # requests given up on, whole phase (a send may still have been stored)
    requests: int = 0  # every request, whole phase


async def _load(index: int, api_url: str, phase: Phase, done: Any) -> Tally:
    tally = Tally(per_second=[0] * math.ceil(phase.duration))
    measure_from = phase.start_at + phase.warmup
    end = measure_from + phase.duration
    limits = httpx.Limits(max_connections=phase.concurrency, max_keepalive_connections=phase.concurrency)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=phase.timeout) as client:

        async def worker(w: int) -> None:
            slot = index * phase.concurrency + w
            headers = {"Authorization": f"Bearer {phase.tokens[slot % len(phase.tokens)]}"}
            params = {"with": phase.peer, "limit": str(phase.page)}
            n = 0
            while (t0 := time.monotonic()) < end:
                try:
                    if phase.kind == "GET":
                        response = await client.get("/v1/messages", headers=headers, params=params)
                    else:
                        body = {
                            "to": phase.peer,
                            "body": f"rest bench message {n} from worker {slot}",
                            "client_id": f"{phase.prefix}-{index}-{w}-{n}",
                        }
                        response = await client.post("/v1/messages", headers=headers, json=body)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                    tally.errors[key] += 1
                    tally.samples.setdefault(key, str(exc) or repr(exc))
                    if isinstance(exc, httpx.TimeoutException):
                        tally.timeouts += 1
                else:
                    t1 = time.monotonic()
                    if response.status_code == 201:
                        tally.created += 1
                    if not response.is_success:
                        key = f"HTTP {response.status_code}"
                        tally.errors[key] += 1
                        tally.samples.setdefault(key, response.text[:300])
                    elif measure_from <= t1 < end:
                        tally.ok += 1
                        tally.latencies_ms.append((t1 - t0) * 1000)
                        tally.per_second[min(int(t1 - measure_from), len(tally.per_second) - 1)] += 1
                n += 1
                tally.requests += 1
                done[index] += 1

        await asyncio.sleep(max(0.0, phase.start_at - time.monotonic()))
        await asyncio.gather(*(worker(w) for w in range(phase.concurrency)))
    return tally


def _child(index: int, api_url: str, commands: Queue[Phase | None], results: Queue[Any], done: Any) -> None:
    """A load process: runs the phases it is sent, until ``None`` (or a long silence)."""
    results.put(("ready", index, None))
    while True:
        try:
            phase = commands.get(timeout=CHILD_IDLE_S)
        except queue.Empty:
            return
        if phase is None:
            return
        try:
            tally = asyncio.run(_load(index, api_url, phase, done))
        except Exception:
            results.put(("failed", index, traceback.format_exc()))
        else:
            results.put(("tally", index, tally))


class LoadProcesses:
    """``count`` load processes (spawned once, used for every phase); ``stop()`` always ends them."""

    def __init__(self, api_url: str, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results: Queue[Any] = ctx.Queue()
        self.commands: list[Queue[Phase | None]] = [ctx.Queue() for _ in range(count)]
        self.done = ctx.RawArray("q", count)
        self.procs: list[BaseProcess] = [
            ctx.Process(
                target=_child,
                args=(i, api_url, self.commands[i], self.results, self.done),
                name=f"rest-load-{i + 1}",
                daemon=True,
            )
            for i in range(count)
        ]

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        self._collect("ready", time.monotonic() + CHILD_START_S)

    def pids(self) -> dict[str, int]:
        return {f"load client {i + 1}": p.pid for i, p in enumerate(self.procs) if p.pid is not None}

    def _collect(self, kind: str, deadline: float, tick: Any = None) -> list[Any]:
        got: dict[int, Any] = {}
        while len(got) < len(self.procs):
            if tick is not None:
                tick()
            if time.monotonic() > deadline:
                raise LoadError(
                    f"{len(self.procs) - len(got)} load processes did not report {kind!r} in time"
                )
            try:
                what, index, payload = self.results.get(timeout=0.2)
            except queue.Empty:
                dead = [p.name for i, p in enumerate(self.procs) if i not in got and not p.is_alive()]
                if dead:
                    raise LoadError(f"load processes exited: {', '.join(str(d) for d in dead)}") from None
                continue
            if what == "failed":
                raise LoadError(f"load process {index + 1} failed:\n{payload}")
            if what == kind:
                got[index] = payload
        return [got[i] for i in range(len(self.procs))]

    def run(self, phase: Phase, meter: Meter, progress: Progress) -> list[Tally]:
        """Run ``phase`` in every process; the CPU meter covers exactly the measured window."""
        measure_from = phase.start_at + phase.warmup
        end = measure_from + phase.duration
        total = phase.warmup + phase.duration
        state = {"metering": False, "metered": False}

        def tick() -> None:
            now = time.monotonic()
            if not state["metering"] and not state["metered"] and now >= measure_from:
                meter.start()
                state["metering"] = True
            if state["metering"] and now >= end:
                meter.stop()
                state["metering"], state["metered"] = False, True
            elapsed = min(total, max(0.0, now - phase.start_at))
            progress.update(elapsed, total, f"{sum(self.done):,} requests")

        for i in range(len(self.procs)):
            self.done[i] = 0
        for commands in self.commands:
            commands.put(phase)
        tallies: list[Tally] = self._collect("tally", end + phase.timeout + RESULT_SLACK_S, tick)
        if state["metering"]:  # every answer came back before the window's end: cannot happen
            meter.stop()
        return tallies

    def stop(self) -> None:
        for commands in self.commands:
            with contextlib.suppress(queue.Full, ValueError, OSError):
                commands.put(None, timeout=1)
        for proc in self.procs:
            reap(proc, grace=10.0)
        self.results.close()
        for commands in self.commands:
            commands.close()
