"""What every scenario shares: its result (table rows, JSON, plot), the progress bar, CPU readings
and the description of the machine and the versions a figure was measured with."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from bench.procstat import CLK_TCK, machine_busy, process_cpu
from scripts.topology import MOSQUITTO, ROOT

# --- results --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a measured figure, its unit, and the target it is held against."""

    metric: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None

    def shown(self) -> str:
        v = self.value
        if v is None:
            return "-"
        if isinstance(v, float):
            text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
        elif isinstance(v, int):
            text = f"{v:,}"
        else:
            text = v
        return f"{text} {self.unit}".strip()


@dataclass
class Check:
    """Something the run must hold for its figures to mean anything (every message counted...)."""

    what: str
    ok: bool


@dataclass
class Result:
    """One scenario on one stack."""

    scenario: str
    stack: str
    stack_description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    #: the CPU share of each process over the measured windows ("handler-1": 0.83 = 83% of one core)
    cpu: dict[str, float] = field(default_factory=dict)
    #: plot data: "latency_ms" -> {label: [ms...]}, "throughput" -> {label: [[t_s, per_s]...]}
    series: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    duration_s: float = 0.0

    def row(self, metric: str, value: float | int | str | None, unit: str = "", target: str = "") -> Row:
        met = None
        if target and isinstance(value, int | float):
            met = meets(value, target)
        added = Row(metric, value, unit, target, met)
        self.rows.append(added)
        return added

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append(Check(what, ok))
        return ok

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def figure(self, metric: str) -> float | None:
        for r in self.rows:
            if r.metric == metric and isinstance(r.value, int | float):
                return float(r.value)
        return None


def meets(value: float, target: str) -> bool:
    """``">= 1,000"`` / ``"<= 25 ms"`` (a bound, then anything) against a value."""
    match = re.match(r"\s*(>=|<=)\s*([\d.,]+)", target)
    if match is None:
        raise ValueError(f"unreadable target {target!r}")
    bound = float(match.group(2).replace(",", ""))
    return value >= bound if match.group(1) == ">=" else value <= bound


def percentile(sorted_values: list[float], p: float) -> float | None:
    """The ``p`` quantile (0..1) of an already sorted list, nearest rank; None when empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def p50_p99(values: Iterable[float]) -> tuple[float | None, float | None]:
    """The median and the 99th percentile of ``values`` (any order); None when empty."""
    ordered = sorted(values)
    return percentile(ordered, 0.5), percentile(ordered, 0.99)


# --- the table ------------------------------------------------------------------------------------


def print_table(results: list[Result], out: TextIO | None = None) -> None:
    """Each scenario's figures, one column per stack, with the target and whether it was met."""
    out = out or sys.stdout
    by_scenario: dict[str, list[Result]] = {}
    for r in results:
        by_scenario.setdefault(r.scenario, []).append(r)
    for scenario, runs in by_scenario.items():
        stacks = [r.stack for r in runs]
        metrics: list[str] = []
        targets: dict[str, str] = {}
        for r in runs:
            for row in r.rows:
                if row.metric not in metrics:
                    metrics.append(row.metric)
                if row.target or row.metric not in targets:
                    targets[row.metric] = row.target
        cells = [["", *stacks, "target"]]
        for metric in metrics:
            line = [metric]
            for r in runs:
                found = next((row for row in r.rows if row.metric == metric), None)
                mark = "" if found is None or found.met is None else (" ok" if found.met else " MISSED")
                line.append("" if found is None else found.shown() + mark)
            line.append(targets.get(metric, ""))
            cells.append(line)
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
        print(f"\n== {scenario} ==", file=out)
        for n, line in enumerate(cells):
            print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
            if n == 0:
                print("  ".join("-" * w for w in widths), file=out)
        for r in runs:
            where = f"[{r.stack}] "
            if r.stack_description:
                print(f"{where}stack: {r.stack_description}", file=out)
            if r.cpu:
                split = ", ".join(f"{name} {share:.0%}" for name, share in r.cpu.items())
                print(f"{where}CPU (share of one core): {split}", file=out)
            for note in r.notes:
                print(f"{where}{note}", file=out)
            for c in r.checks:
                if not c.ok:
                    print(f"{where}FAILED: {c.what}", file=out)


# --- JSON and the plot ----------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """The machine and the versions behind the figures."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": memory, "kernel": platform.release()}


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        for line in (out.stdout + out.stderr).splitlines():
            if line.strip():
                return line.strip()
    return "not found"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("messenger", "paho-mqtt", "amqtt", "SQLAlchemy", "PyMySQL", "redis", "fastapi", "uvicorn"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    found["mosquitto"] = _first_line([MOSQUITTO, "-h"]) if shutil.which(MOSQUITTO) else "not found"
    found["mariadb"] = _first_line(["mariadbd", "--version"])
    found["redis-server"] = _first_line(["redis-server", "--version"])
    found["commit"] = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return found


def write_json(results: list[Result], path: Path, env: dict[str, Any]) -> None:
    payload = {**env, "results": [asdict(r) | {"ok": r.ok} for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_plot(results: list[Result], path: Path) -> None:
    """A PNG: per result, the latency distribution (CDF) and the throughput over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [r for r in results if r.series]
    if not plotted:
        raise ValueError("nothing to plot: no scenario in this run recorded latencies or a timeline")
    fig, axes = plt.subplots(len(plotted), 2, figsize=(13, 4 * len(plotted)), squeeze=False)
    for (lat_ax, tp_ax), r in zip(axes, plotted, strict=True):
        title = f"{r.scenario} on {r.stack}"
        for label, values in r.series.get("latency_ms", {}).items():
            if values:
                ordered = sorted(values)
                ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
                lat_ax.plot(ordered, ys, label=label)
        lat_ax.set_xscale("log")
        lat_ax.set_xlabel("latency (ms, log scale)")
        lat_ax.set_ylabel("fraction of messages")
        lat_ax.set_title(f"{title}: latency distribution")
        lat_ax.grid(True, which="both", alpha=0.3)
        if lat_ax.get_legend_handles_labels()[0]:
            lat_ax.legend(fontsize="small")
        for label, points in r.series.get("throughput", {}).items():
            if points:
                tp_ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        tp_ax.set_xlabel("time (s)")
        tp_ax.set_ylabel("per second")
        tp_ax.set_title(f"{title}: throughput over time")
        tp_ax.grid(True, alpha=0.3)
        if tp_ax.get_legend_handles_labels()[0]:
            tp_ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- progress -------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr while a step runs (only when stderr is a terminal, or
    when forced); ``update(done, total, detail)`` redraws at most 10 times a second."""

    def __init__(self, enabled: bool | None = None, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.enabled = out.isatty() if enabled is None else enabled
        self.label = ""
        self._last = 0.0
        self._shown = False

    def step(self, label: str) -> None:
        self.finish()
        self.label = label

    def update(self, done: float, total: float, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        fraction = max(0.0, min(1.0, done / total)) if total else 0.0
        width = 28
        bar = "#" * int(fraction * width) + "-" * (width - int(fraction * width))
        line = f"\r{self.label[:40]:<40} [{bar}] {fraction:4.0%} {detail}"
        self.out.write(line[: shutil.get_terminal_size((120, 20)).columns + 1].ljust(80))
        self.out.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.out.write("\n")
            self.out.flush()
            self._shown = False


# --- CPU ------------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of named processes over windows (``start()``/``stop()``), summed: the share of
    one core each used while the scenario measured. Also the whole machine's busy share."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.used: dict[str, float] = {}
        self.elapsed = 0.0
        self.machine = 0.0
        self._start: tuple[float, float, dict[str, float]] | None = None

    def add(self, pids: dict[str, int]) -> None:
        self.pids |= pids

    def _sample(self) -> dict[str, float]:
        cpu = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                cpu[name] = process_cpu(pid)
        return cpu

    def start(self) -> None:
        self._start = (time.monotonic(), machine_busy(), self._sample())

    def stop(self) -> None:
        if self._start is None:
            return
        t0, busy0, cpu0 = self._start
        now = self._sample()
        self.elapsed += time.monotonic() - t0
        self.machine += machine_busy() - busy0
        for name, seconds in now.items():
            if name in cpu0:
                self.used[name] = self.used.get(name, 0.0) + seconds - cpu0[name]
        self._start = None

    def shares(self) -> dict[str, float]:
        """Share of one core per process (1.0 = a whole core), and "machine" out of all cores."""
        if self.elapsed < 10 / CLK_TCK:
            return {}
        shares = {name: round(used / self.elapsed, 3) for name, used in self.used.items()}
        shares["machine (all cores)"] = round(self.machine / self.elapsed / (os.cpu_count() or 1), 3)
        return shares
