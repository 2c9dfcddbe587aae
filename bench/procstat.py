"""CPU readings from /proc, and ending child processes, shared by the benchmarks (Linux only)."""

from __future__ import annotations

import contextlib
import os
import resource
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait; no guest


def database_pid() -> int | None:
    """A local mariadbd/mysqld, if this machine runs the database (its CPU is shown too)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    return int(entry.name)
    return None


def reap(proc: BaseProcess, grace: float = 5.0) -> None:
    """Wait ``grace`` seconds for a child process that was asked to stop, then terminate it, then
    kill it: a load process never outlives its run."""
    if proc.pid is None:  # never started
        return
    proc.join(grace)
    for end in (proc.terminate, proc.kill):
        if not proc.is_alive():
            return
        end()
        proc.join(5)


def raise_fd_limit() -> None:
    """Let this process open as many files as the hard limit allows (a load process holds
    thousands of sockets)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def close_children(procs: list[BaseProcess], conns: list[Connection], stop: object) -> None:
    """Ask each child to stop (``stop`` on its pipe; one that has already ended is not asked
    twice), reap them, close the pipes, and forget both lists."""
    for conn in conns:
        with contextlib.suppress(OSError, ValueError):
            conn.send(stop)
    for proc in procs:
        reap(proc)
    for conn in conns:
        conn.close()
    procs.clear()
    conns.clear()
