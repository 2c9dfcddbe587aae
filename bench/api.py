"""Requests/s and latency of the REST API of a spawned ``messenger serve``, on loopback.

Two phases, each a warm-up and then a fixed duration with N concurrent keep-alive workers:

  GET  /v1/messages?with=PEER&limit=50   the newest page of a conversation seeded with --seed messages
  POST /v1/messages                      {"to", "body", "client_id"} from --senders distinct users (201)

The server runs with MESSENGER_SEND_RATE_PER_S=0 (the per-user send limit is off), on ephemeral
loopback ports, and is stopped at the end. Users get a fresh suffix per run, so a shared database is
fine. Client and server share the machine's cores: the server's CPU seconds are printed per phase.

    python bench/api.py                                      # MariaDB at 127.0.0.1:3306/test
    python bench/api.py --concurrency 8 --duration 20
    python bench/api.py --database-url sqlite:////tmp/api-bench.db --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acl.tokens import issue_token
from bench.procstat import database_pid, machine_busy, process_cpu
from messenger.constants import DEV_SECRET

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
_API_LINE = re.compile(r"REST API\s+http://([\d.]+):(\d+)")


# --- the server ----------------------------------------------------------------------------------


class Server:
    """``messenger serve`` in a subprocess on ephemeral loopback ports; always stopped by ``stop``."""

    def __init__(self, database_url: str, redis_url: str | None, admin_key: str, log: Path) -> None:
        self.admin_key = admin_key
        self.log = log
        env = dict(
            os.environ,
            MESSENGER_BIND_HOST="127.0.0.1",
            MESSENGER_MQTT_PORT="0",
            MESSENGER_WS_PORT="0",
            MESSENGER_API_PORT="0",
            MESSENGER_DATABASE_URL=database_url,
            MESSENGER_ADMIN_KEY=admin_key,
            MESSENGER_SEND_RATE_PER_S="0",
            MESSENGER_LOG_LEVEL="WARNING",
        )
        env.pop("MESSENGER_REDIS_URL", None)
        if redis_url:
            env["MESSENGER_REDIS_URL"] = redis_url
        self._stderr = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "messenger.cli", "serve"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only this script, which stops the server in order
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101 - stdout=PIPE
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_api(self, timeout: float) -> str:
        """The REST API's base URL, read from the banner."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                code = self.proc.wait()
                raise SystemExit(f"the server exited ({code}) before it was ready:\n{self.tail()}")
            if match := _API_LINE.search(line):
                return f"http://{match.group(1)}:{match.group(2)}"
        raise SystemExit(f"no REST API banner after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._stderr.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(nothing on stderr)"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                print("the server did not stop within 20 s of SIGTERM: killed", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(10)
        self._stderr.close()
        return self.proc.returncode


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Result:
    ok: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    database_cpu: float | None = None
    machine_cpu: float = 0.0


Request = Callable[[httpx.AsyncClient, int, int], Awaitable[httpx.Response]]


async def run_load(
    client: httpx.AsyncClient, request: Request, concurrency: int, duration: float, server: Server
) -> Result:
    """``concurrency`` workers issue ``request`` back to back for ``duration`` seconds."""
    result = Result()
    db_pid = database_pid()
    cpu0, client0, machine0 = process_cpu(server.proc.pid), time.process_time(), machine_busy()
    db0 = process_cpu(db_pid) if db_pid else 0.0
    start = time.perf_counter()
    end = start + duration

    async def worker(index: int) -> None:
        n = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                response = await request(client, index, n)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
                result.errors[key] += 1
                result.samples.setdefault(key, str(exc) or repr(exc))
            else:
                latency = time.perf_counter() - t0
                result.statuses[response.status_code] += 1
                if response.is_success:
                    result.ok += 1
                    result.latencies.append(latency)
                else:
                    key = f"HTTP {response.status_code}"
                    result.errors[key] += 1
                    result.samples.setdefault(key, response.text[:300])
            n += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    result.server_cpu = process_cpu(server.proc.pid) - cpu0
    result.client_cpu = time.process_time() - client0
    result.machine_cpu = machine_busy() - machine0
    if db_pid:
        with contextlib.suppress(OSError):
            result.database_cpu = process_cpu(db_pid) - db0
    return result


def report(name: str, r: Result, concurrency: int) -> None:
    lat = sorted(r.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(r.statuses.items()))
    print(f"{name}")
    print(f"  requests ok (2xx)   {r.ok} in {r.elapsed:.2f} s  ->  {r.ok / r.elapsed:,.0f} req/s")
    print(f"  status codes        {statuses or '-'}   (concurrency {concurrency})")
    if lat:
        print(
            f"  latency ms          p50 {pct(0.5):.1f}  p99 {pct(0.99):.1f}  max {lat[-1] * 1000:.1f}"
            f"  mean {statistics.mean(lat) * 1000:.1f}"
        )
    print(f"  errors              {sum(r.errors.values())}")
    for key, count in r.errors.most_common():
        print(f"    {key}: {count}, e.g. {r.samples[key]!r}")
    cores = os.cpu_count() or 1

    def cpu(seconds: float) -> str:
        return f"{seconds:.2f} s ({seconds / r.elapsed:.0%})"

    database = f"   mariadbd {cpu(r.database_cpu)}" if r.database_cpu is not None else ""
    print(f"  CPU (% of one core) server {cpu(r.server_cpu)}   client {cpu(r.client_cpu)}{database}")
    rest = r.machine_cpu - r.server_cpu - r.client_cpu - (r.database_cpu or 0.0)
    print(f"  machine busy        {cpu(r.machine_cpu)} of {cores} cores; others+irq {cpu(rest)}")


# --- the benchmark -------------------------------------------------------------------------------


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(DEV_SECRET, user, ttl=timedelta(hours=1))}"}


async def bench(args: argparse.Namespace, server: Server, base_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    reader, peer, recipient = f"ba-{run}", f"bb-{run}", f"bc-{run}"
    senders = [f"bs{i}-{run}" for i in range(args.senders)]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=args.timeout) as client:
        admin = {"X-Admin-Key": server.admin_key}
        for user in [reader, peer, recipient, *senders]:
            response = await client.put(f"/v1/admin/users/{user}", headers=admin, json={"role": "member"})
            response.raise_for_status()
        tokens = {user: bearer(user) for user in [reader, peer, *senders]}

        # the conversation: --seed messages, alternating directions, 16 at a time
        gate = asyncio.Semaphore(16)

        async def seed(n: int) -> None:
            sender, to = (reader, peer) if n % 2 == 0 else (peer, reader)
            body = {"to": to, "body": f"seed message {n} of run {run}", "client_id": f"seed-{run}-{n}"}
            async with gate:
                response = await client.post("/v1/messages", headers=tokens[sender], json=body)
            response.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(seed(n) for n in range(args.seed)))
        print(
            f"seeded              {args.seed} messages between {reader} and {peer} in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        params = {"with": peer, "limit": "50"}
        page = (await client.get("/v1/messages", headers=tokens[reader], params=params)).json()
        got = len(page.get("messages", []))
        if got != min(50, args.seed):
            raise SystemExit(f"the history page has {got} messages, expected {min(50, args.seed)}: {page}")
        print(
            f"setup               {3 + len(senders)} users via PUT /v1/admin/users; "
            f"{len(senders)} POST senders; send rate limit off (MESSENGER_SEND_RATE_PER_S=0)"
        )
        # baselines: what the server burns idle, and one request at a time on an endpoint without work
        cpu0 = process_cpu(server.proc.pid)
        await asyncio.sleep(2)
        idle = (process_cpu(server.proc.pid) - cpu0) / 2
        lat = []
        for _ in range(20):
            t0 = time.perf_counter()
            (await client.get("/healthz")).raise_for_status()
            lat.append(time.perf_counter() - t0)
        print(
            f"baseline            server idle CPU {idle:.0%} of one core; "
            f"GET /healthz one at a time p50 {statistics.median(lat) * 1000:.1f} ms"
        )
        print(
            f"load                {args.concurrency} workers, {args.warmup:g} s warm-up + "
            f"{args.duration:g} s per endpoint, httpx keep-alive, loopback\n"
        )

        async def get_page(c: httpx.AsyncClient, _worker: int, _n: int) -> httpx.Response:
            return await c.get("/v1/messages", headers=tokens[reader], params=params)

        def post(phase: str) -> Request:
            async def send(c: httpx.AsyncClient, worker: int, n: int) -> httpx.Response:
                sender = senders[worker % len(senders)]
                body = {
                    "to": recipient,
                    "body": f"bench message {n} from worker {worker}",
                    "client_id": f"{phase}-{run}-{worker}-{n}",
                }
                return await c.post("/v1/messages", headers=tokens[sender], json=body)

            return send

        phases: list[tuple[str, Request, Request]] = [
            (f"GET  /v1/messages?with=PEER&limit=50  ({args.seed} in the conversation)", get_page, get_page),
            ("POST /v1/messages  (201, new message each)", post("warm"), post("load")),
        ]
        for name, warm, load in phases:
            if args.warmup > 0:
                await run_load(client, warm, args.concurrency, args.warmup, server)
            result = await run_load(client, load, args.concurrency, args.duration, server)
            report(name, result, args.concurrency)
            if server.proc.poll() is not None:
                raise SystemExit(f"the server exited ({server.proc.returncode}):\n{server.tail()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", help="presence and rate limits in Redis (default in-process)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per endpoint")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent workers (connections)")
    parser.add_argument("--seed", type=int, default=600, help="messages in the conversation read by GET")
    parser.add_argument("--senders", type=int, default=64, help="distinct sender users for POST")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    args = parser.parse_args()
    if args.concurrency < 1 or args.senders < 1 or args.duration <= 0 or args.seed < 1:
        parser.error("--concurrency, --senders, --seed and --duration must be positive")

    def terminated(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    log = Path(tempfile.mkstemp(prefix="messenger-api-bench-", suffix=".log")[1])
    print(f"database            {args.database_url}")
    server = Server(args.database_url, args.redis_url, secrets.token_urlsafe(24), log)
    code = 0
    try:
        base_url = server.wait_api(timeout=60)
        print(f"server              pid {server.proc.pid}, REST API {base_url}")
        asyncio.run(bench(args, server, base_url))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    finally:
        returncode = server.stop()
        text = log.read_text(errors="replace")
        problems = [line for line in text.splitlines() if "ERROR" in line or "Traceback" in line]
        if problems:
            print(f"\nserver stderr: {len(problems)} ERROR/Traceback lines (full log {log}), first ones:")
            print("\n".join(f"  {line}" for line in problems[:10]))
        else:
            with contextlib.suppress(OSError):
                log.unlink()
        print(f"server stopped      exit code {returncode}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
