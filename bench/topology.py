"""CONNECTs/s through the Mosquitto plugin and messages/s through the production topology, on loopback.

Each part starts its own topology with ``scripts/topology.py`` (Mosquitto 2.0 with
``messenger_auth.so``, ``messenger api``, ``messenger handler`` on ``$share/handlers/inbound/+``,
``messenger bridge``) against MariaDB and Redis, and stops it afterwards.

1. Plugin authentications: ``--threads`` threads open and close ``--connections`` MQTT 3.1.1
   clean-session connections as fast as they can (connect -> CONNACK -> DISCONNECT), spread
   over ``--users`` users who each reconnect with the same token. Once with the plugin's cache
   off (``cache_ttl_s 0``: every CONNECT is a POST to the API's ``/mqtt/user``), once with the
   default 30 s (after a first CONNECT per user, answered from the cache). A warm-up CONNECT
   per user runs first in both, untimed: it provisions the users and, with the cache on, fills it.
2. Messages: ``--senders`` paho clients (QoS 1, up to 1000 publishes in flight each) send
   ``--messages`` ``message`` commands to ``--recipients`` subscribed users through
   ``--handlers`` handlers. Timed from the first publish to the last delivery; the stored
   figure polls MariaDB for the run's rows every 0.1 s.

The senders offer load as fast as they can, so the message latencies include the queue at the
senders. The bench client shares the machine with every server process: CPU seconds per
process are printed for each timed window. Users get a fresh suffix per run.

    python bench/topology.py                       # 500 connections, 20,000 messages
    python bench/topology.py --quick               # 100 connections, 2,000 messages
    python bench/topology.py --part messages --messages 50000 --senders 8
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import select
import shlex
import signal
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import func
from sqlalchemy import select as sql_select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acl.tokens import issue_token
from bench.procstat import CLK_TCK, database_pid, process_cpu
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine
from messenger.models import Message
from scripts.topology import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, MOSQUITTO, Topology

HOST = "127.0.0.1"
QUICK = {"connections": 100, "messages": 2_000}
DEFAULTS = {"connections": 500, "messages": 20_000}
#: After the last delivery, how long stragglers (the final row count, acks) may take.
GRACE_S = 10.0


class BenchError(Exception):
    """Setting up a run failed (a refused or silent client, a refused subscription)."""


# --- measuring ------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of the topology's processes, a local mariadbd and this client over a window."""

    def __init__(self, topology: Topology) -> None:
        self.pids = {name: proc.pid for name, proc in topology.procs.items()}
        if (db := database_pid()) is not None:
            self.pids["mariadbd"] = db
        self._start = time.perf_counter()
        self._cpu0 = self._sample()
        self._client0 = time.process_time()

    def _sample(self) -> dict[str, float]:
        cpu = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                cpu[name] = process_cpu(pid)
        return cpu

    def line(self) -> str:
        elapsed = time.perf_counter() - self._start
        if elapsed < 1.0:
            return f"not shown: {elapsed:.2f} s is too short for /proc's {1000 // CLK_TCK} ms ticks"
        now = self._sample()
        parts = [
            f"{name} {now[name] - self._cpu0[name]:.1f} s ({(now[name] - self._cpu0[name]) / elapsed:.0%})"
            for name in self.pids
            if name in now and name in self._cpu0
        ]
        client = time.process_time() - self._client0
        parts.append(f"bench client {client:.1f} s ({client / elapsed:.0%})")
        return f"over {elapsed:.1f} s: " + ", ".join(parts)


def percentiles(values: list[float]) -> str:
    """p50/p99/max/mean of latencies in seconds, printed in milliseconds."""
    if not values:
        return "-"
    lat = sorted(values)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    return (
        f"p50 {pct(0.5):.1f}  p99 {pct(0.99):.1f}  max {lat[-1] * 1000:.1f}"
        f"  mean {statistics.mean(lat) * 1000:.1f}"
    )


def log_problems(topology: Topology) -> list[str]:
    """ERROR/Traceback lines in the topology's logs, prefixed with the log's name."""
    assert topology.workdir is not None  # noqa: S101 - set by Topology
    found = []
    for log in sorted((topology.workdir / "logs").glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "ERROR" in line or "Traceback" in line or "Error:" in line:
                found.append(f"{log.stem}: {line}")
    return found


def report_logs(topology: Topology, *, failed: bool) -> None:
    problems = log_problems(topology)
    if problems:
        print(f"  log problems        {len(problems)} ERROR/Traceback lines, first ones:")
        print("\n".join(f"    {line[:300]}" for line in problems[:10]))
    if failed and topology.workdir is not None:
        for log in sorted((topology.workdir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"  --- {log.name} (last lines) ---")
            print("\n".join(f"    {line[:300]}" for line in tail))


def new_topology(args: argparse.Namespace, *, handlers: int, cache_ttl_s: int) -> Topology:
    # A few senders send thousands of messages each: the per-user send limit would refuse most.
    # The log level stays INFO: Topology waits for the processes' "ready" lines.
    return Topology(
        database_url=args.database_url,
        redis_url=args.redis_url,
        handlers=handlers,
        send_rate_per_s=0,
        cache_ttl_s=cache_ttl_s,
    )


# --- part 1: plugin authentications ---------------------------------------------------------------


@dataclass
class AuthRun:
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str, latency: float | None, detail: str) -> None:
        with self.lock:
            if outcome == "accepted":
                self.accepted += 1
                assert latency is not None  # noqa: S101 - an accepted CONNECT has a CONNACK
                self.latencies.append(latency)
            elif outcome == "refused":
                self.refused[detail] += 1
            else:
                self.failed[detail] += 1


def connect_once(
    port: int, user: str, password: str, client_id: str, timeout: float
) -> tuple[str, float | None, str]:
    """Connect, wait for the CONNACK, disconnect: ``(outcome, latency, detail)``.

    The latency runs from the TCP connect (``connect()`` sends CONNECT right after it) to the
    CONNACK. The client runs paho's external-loop API (``loop_read`` when its socket is
    readable): ``loop()`` would set up a socket pair per client first, which costs the client
    more than the broker spends on a cached CONNECT.
    """
    connacks: list[tuple[ReasonCode, float]] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
        reconnect_on_failure=False,
    )
    client.username_pw_set(user, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: connacks.append((reason, time.perf_counter()))
    start = time.perf_counter()
    try:
        client.connect(HOST, port, keepalive=60)
        deadline = start + timeout
        while not connacks:
            sock = client.socket()
            left = deadline - time.perf_counter()
            if sock is None:
                return "failed", None, "connection closed before the CONNACK"
            if left <= 0:
                return "failed", None, f"no CONNACK within {timeout:g} s"
            readable, _, _ = select.select([sock], [], [], left)
            if readable and client.loop_read() != mqtt.MQTT_ERR_SUCCESS and not connacks:
                return "failed", None, "connection lost before the CONNACK"
        reason, at = connacks[0]
        if reason.is_failure:
            return "refused", at - start, str(reason)
        return "accepted", at - start, ""
    except OSError as exc:
        return "failed", None, f"{type(exc).__name__}: {exc}"
    finally:
        # writes DISCONNECT and closes the socket at once (no network thread); a refused or
        # lost connection is already closed
        client.disconnect()


def run_auth(args: argparse.Namespace, cache_ttl_s: int, users: list[tuple[str, str]]) -> bool:
    label = f"cache {'off (cache_ttl_s 0)' if cache_ttl_s == 0 else f'on (cache_ttl_s {cache_ttl_s})'}"
    print(f"\n[1{'a' if cache_ttl_s == 0 else 'b'}] plugin authentications, {label}")
    topology = new_topology(args, handlers=1, cache_ttl_s=cache_ttl_s)
    ok = False
    try:
        with topology.running():
            port = topology.mqtt_port
            warm = AuthRun()
            for n, (user, password) in enumerate(users):
                warm.record(*connect_once(port, user, password, f"{user}/warm{n}", args.connect_timeout))
            print(
                f"  warm-up             {warm.accepted}/{len(users)} accepted (one CONNECT per user, untimed)"
            )

            run = AuthRun()
            counter = itertools.count()
            meter = CpuMeter(topology)
            start = time.perf_counter()
            deadline = start + args.timeout

            def worker() -> None:
                while (k := next(counter)) < args.connections and time.perf_counter() < deadline:
                    user, password = users[k % len(users)]
                    run.record(*connect_once(port, user, password, f"{user}/c{k}", args.connect_timeout))

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(args.timeout + args.connect_timeout + 5)
            run.elapsed = time.perf_counter() - start
            cpu = meter.line()
            with run.lock:
                refused, failed = sum(run.refused.values()), sum(run.failed.values())
                done = run.accepted + refused + failed
            finished = done == args.connections and not any(t.is_alive() for t in threads)
            print(
                f"  connections         {done}/{args.connections} from {args.threads} threads, "
                f"{len(users)} users reconnecting (MQTT 3.1.1, clean session)"
                f"{'' if finished else '  (TIMED OUT)'}"
            )
            print(
                f"  accepted            {run.accepted} in {run.elapsed:.2f} s  ->  "
                f"{run.accepted / run.elapsed:,.0f} CONNACKs accepted/s (connect -> CONNACK -> disconnect)"
            )
            print(f"  refused             {refused}")
            for detail, count in run.refused.most_common(5):
                print(f"    {detail}: {count}")
            if failed:
                print(f"  failed              {failed}")
                for detail, count in run.failed.most_common(5):
                    print(f"    {detail}: {count}")
            print(f"  CONNECT->CONNACK ms {percentiles(run.latencies)}")
            print(f"  CPU                 {cpu}")
            ok = finished and refused == 0 and failed == 0 and warm.accepted == len(users)
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"  the topology did not start: {type(exc).__name__}: {exc}")
    finally:
        report_logs(topology, failed=not ok)
        topology.cleanup()
    return ok


# --- part 2: messages through the handlers --------------------------------------------------------


def no_delay(client: mqtt.Client) -> None:
    """TCP_NODELAY on the client's socket. paho leaves Nagle on: a client that sends a PUBLISH
    right after a PUBACK then waits for the broker's delayed ACK (40 ms on Linux), which a
    latency probe would count as the product's latency."""

    def on_socket_open(_c: object, _u: object, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = on_socket_open


def open_client(
    port: int,
    user: str,
    suffix: str,
    on_message: Callable[..., None],
    topic: str,
    timeout: float,
    *,
    token: str | None = None,
    nodelay: bool = False,
) -> mqtt.Client:
    """A connected paho client (own network thread) subscribed to ``topic`` at QoS 1; its token
    is ``token``, or a member's signed with the development secret."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{user}/{suffix}", protocol=mqtt.MQTTv311, clean_session=True
    )
    client.username_pw_set(user, token or issue_token(DEV_SECRET, user))
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    if nodelay:
        no_delay(client)
    connacks: list[ReasonCode] = []
    subacks: list[list[ReasonCode]] = []
    changed = threading.Condition()

    def on_connect(_c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        with changed:
            connacks.append(reason)
            changed.notify_all()

    def on_subscribe(_c: object, _u: object, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        with changed:
            subacks.append(reasons)
            changed.notify_all()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(HOST, port)
    client.loop_start()
    try:
        with changed:
            if not changed.wait_for(lambda: connacks, timeout) or connacks[0].is_failure:
                raise BenchError(f"{user}: CONNECT {connacks[0] if connacks else 'got no CONNACK'}")
        client.subscribe(topic, qos=1)
        with changed:
            if not changed.wait_for(lambda: subacks, timeout) or subacks[0][0].is_failure:
                raise BenchError(f"{user}: SUBSCRIBE {topic} {subacks[0] if subacks else 'got no SUBACK'}")
    except BaseException:
        client.disconnect()
        client.loop_stop()
        raise
    return client


@dataclass
class MessageRun:
    total: int
    start: float = 0.0
    delivered: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    pubacks: int = 0
    pubacked_at: float | None = None
    acks: set[str] = field(default_factory=set)
    errors: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    stored: int = 0
    stored_at: float | None = None
    poll_errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_delivery(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        data = json.loads(msg.payload)
        with self.lock:
            cid = data["client_id"]
            if cid in self.delivered:
                self.duplicates += 1
            else:
                self.delivered[cid] = now
                self.latencies.append(now - float(data["body"]))

    def on_event(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        event = json.loads(msg.payload)
        with self.lock:
            if event.get("type") == "ack":
                self.acks.add(event["client_id"])
            elif event.get("type") == "error":
                self.errors.append(event)

    def on_publish(self, _c: object, _u: object, _mid: int, _reason: ReasonCode, _p: object) -> None:
        with self.lock:
            self.pubacks += 1
            if self.pubacks == self.total:
                self.pubacked_at = time.time()

    def on_disconnect(self, _c: object, _u: object, _f: object, _reason: ReasonCode, _p: object) -> None:
        with self.lock:
            self.disconnects += 1


def poll_stored(database_url: str, senders: list[str], run: MessageRun, stop: threading.Event) -> None:
    """Count the run's stored rows every 0.1 s until all are there (or ``stop``)."""
    engine = create_db_engine(database_url, pool_size=1)
    query = sql_select(func.count()).select_from(Message).where(Message.sender_id.in_(senders))
    try:
        while not stop.is_set():
            try:
                with engine.connect() as conn:
                    count = int(conn.execute(query).scalar_one())
            except Exception as exc:  # report, keep polling: the figure is only missing a sample
                run.poll_errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            else:
                now = time.time()
                with run.lock:
                    run.stored = count
                    if count >= run.total and run.stored_at is None:
                        run.stored_at = now
                if count >= run.total:
                    return
            stop.wait(0.1)
    finally:
        engine.dispose()


def handler_split(topology: Topology) -> dict[str, int | None]:
    """Stop each handler with SIGTERM and read how many commands it handled from its log."""
    counts: dict[str, int | None] = {}
    for n in range(1, topology.handlers + 1):
        name = f"handler-{n}"
        try:
            topology.kill(name, signal.SIGTERM)
        except Exception as exc:
            print(f"  {name} did not stop on SIGTERM: {type(exc).__name__}: {exc}")
        counts[name] = topology.handled(name)
    return counts


def run_messages(args: argparse.Namespace) -> bool:
    print(f"\n[2] messages stored and delivered by the {args.handlers}-handler topology")
    topology = new_topology(args, handlers=args.handlers, cache_ttl_s=30)
    total = args.messages
    tag = uuid.uuid4().hex[:6]
    senders = [f"bms{i}-{tag}" for i in range(args.senders)]
    recipients = [f"bmr{j}-{tag}" for j in range(args.recipients)]
    run = MessageRun(total)
    clients: list[mqtt.Client] = []
    ok = False
    try:
        with topology.running():
            port = topology.mqtt_port
            for user in recipients:
                clients.append(
                    open_client(
                        port, user, "sink", run.on_delivery, f"users/{user}/messages", args.connect_timeout
                    )
                )
            sender_clients = []
            for user in senders:
                c = open_client(
                    port, user, "bench", run.on_event, f"users/{user}/events", args.connect_timeout
                )
                c.on_publish = run.on_publish
                sender_clients.append(c)
                clients.append(c)
            for c in clients:
                c.on_disconnect = run.on_disconnect
            expected = {f"{tag}-{i}-{n}" for i in range(args.senders) for n in range(i, total, args.senders)}
            print(
                f"  setup               {args.senders} senders (QoS 1, 1000 in flight each), "
                f"{args.recipients} recipients, {args.handlers} handlers on $share/handlers/inbound/+, "
                "send rate limit off"
            )

            stop = threading.Event()
            poller = threading.Thread(
                target=poll_stored, args=(args.database_url, senders, run, stop), daemon=True
            )
            meter = CpuMeter(topology)
            run.start = time.time()
            poller.start()

            def publish(i: int) -> None:
                c, sender = sender_clients[i], senders[i]
                for n in range(i, total, args.senders):
                    command = {
                        "type": "message",
                        "id": f"{tag}-{i}-{n}",
                        "to": recipients[n % len(recipients)],
                        "body": repr(time.time()),
                    }
                    c.publish(f"inbound/{sender}", json.dumps(command), qos=1)

            publishers = [
                threading.Thread(target=publish, args=(i,), daemon=True) for i in range(args.senders)
            ]
            for t in publishers:
                t.start()
            deadline = run.start + args.timeout
            for t in publishers:
                t.join(max(0.0, deadline - time.time()))
            published_s = time.time() - run.start

            def delivered_all() -> bool:
                with run.lock:
                    return len(run.delivered) >= total

            while time.time() < deadline and not delivered_all():
                time.sleep(0.05)
            finished = delivered_all()
            # the last rows and acks follow the last delivery closely; give them a moment
            grace = min(deadline, time.time() + GRACE_S) if finished else time.time()
            while time.time() < grace:
                with run.lock:
                    if run.stored_at is not None and len(run.acks) >= total:
                        break
                time.sleep(0.05)
            stop.set()
            poller.join(10)
            cpu = meter.line()
            for c in clients:
                c.on_disconnect = None  # from here on, disconnects are ours
                c.disconnect()
                c.loop_stop()
            clients.clear()

            engine = create_db_engine(args.database_url, pool_size=1)
            try:
                with engine.connect() as conn:
                    rows, distinct = conn.execute(
                        sql_select(func.count(), func.count(func.distinct(Message.client_msg_id))).where(
                            Message.sender_id.in_(senders)
                        )
                    ).one()
            finally:
                engine.dispose()
            split = handler_split(topology)

        with run.lock:
            delivered = len(run.delivered)
            missing = len(expected - run.delivered.keys())
            last = max(run.delivered.values()) if run.delivered else time.time()
        elapsed = last - run.start
        stored_ok = rows == distinct == total
        print(
            f"  messages            {total} from {args.senders} senders to {args.recipients} recipients"
            f"{'' if finished else '  (TIMED OUT)'}"
        )
        pubacked = (
            f"{run.pubacked_at - run.start:.2f} s" if run.pubacked_at else f"{run.pubacks}/{total} only"
        )
        print(f"  publish calls done  {published_s:.2f} s; all PUBACKed by the broker after {pubacked}")
        print(
            f"  delivered           {delivered}/{total} in {elapsed:.2f} s (first publish -> last delivery)"
            f"  ->  {delivered / elapsed:,.0f} msg/s delivered"
        )
        if run.stored_at is not None:
            stored_s = run.stored_at - run.start
            print(
                f"  stored              {run.stored}/{total} by {stored_s:.2f} s"
                f"  ->  {total / stored_s:,.0f} msg/s stored"
            )
        else:
            print(f"  stored              {run.stored}/{total} when the run ended (not all stored)")
        print(
            f"  stored exactly once {'yes' if stored_ok else 'NO'}: {rows} rows, "
            f"{distinct} distinct client ids, {total} sent"
        )
        print(f"  every id delivered  {'yes' if missing == 0 else f'NO: {missing} never delivered'}")
        print(f"  duplicates          {run.duplicates} deliveries of an already delivered client id")
        print(f"  acks to senders     {len(run.acks)}/{total}; error events {len(run.errors)}")
        if run.errors:
            print(f"    e.g. {run.errors[0]}")
        if run.disconnects:
            print(f"  client disconnects  {run.disconnects} (unexpected)")
        for detail, count in run.poll_errors.most_common(3):
            print(f"  row count failed    {count}x {detail}")
        counted = sum(c for c in split.values() if c is not None)
        shares = ", ".join(
            f"{name} {'?' if c is None else f'{c} ({c / counted:.0%})' if counted else c}"
            for name, c in split.items()
        )
        print(f"  handler split       {shares} commands (from 'stopping after N commands')")
        print(f"  end-to-end ms       {percentiles(run.latencies)}  (publish call -> delivery)")
        print(f"  CPU                 {cpu}")
        ok = finished and stored_ok and missing == 0 and not run.errors
    except (OSError, RuntimeError, TimeoutError, BenchError) as exc:
        print(f"  the run could not be set up: {type(exc).__name__}: {exc}")
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        report_logs(topology, failed=not ok)
        topology.cleanup()
    return ok


# --- the benchmark --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("auth", "messages", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="100 connections, 2,000 messages")
    parser.add_argument("--connections", type=int, help="CONNECTs per cache setting (default 500)")
    parser.add_argument("--threads", type=int, default=4, help="threads opening connections")
    parser.add_argument("--users", type=int, default=20, help="users (tokens) the connections reuse")
    parser.add_argument("--messages", type=int, help="messages in part 2 (default 20,000)")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--recipients", type=int, default=20)
    parser.add_argument("--handlers", type=int, default=2)
    parser.add_argument(
        "--database-url", default=os.environ.get("MESSENGER_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("MESSENGER_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds a timed run may take before it is given up"
    )
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for a CONNACK")
    args = parser.parse_args()
    sizes = QUICK if args.quick else DEFAULTS
    args.connections = args.connections if args.connections is not None else sizes["connections"]
    args.messages = args.messages if args.messages is not None else sizes["messages"]
    if min(args.connections, args.threads, args.users, args.messages, args.senders, args.recipients) < 1:
        parser.error("counts must be positive")
    if args.handlers < 1:
        parser.error("--handlers must be positive")

    def terminated(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"settings            connections {args.connections} ({args.threads} threads, {args.users} users), "
        f"messages {args.messages} ({args.senders} senders -> {args.recipients} recipients, "
        f"{args.handlers} handlers), timeout {args.timeout:g} s"
    )
    print(f"services            {MOSQUITTO}, {args.database_url}, {args.redis_url}; {os.cpu_count()} cores")
    ok = True
    try:
        if args.part in ("auth", "both"):
            tag = uuid.uuid4().hex[:6]
            users = [(f"bma{i}-{tag}", issue_token(DEV_SECRET, f"bma{i}-{tag}")) for i in range(args.users)]
            for cache_ttl_s in (0, 30):
                ok = run_auth(args, cache_ttl_s, users) and ok
        if args.part in ("messages", "both"):
            ok = run_messages(args) and ok
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"\nresult              {'ok' if ok else 'FAILED (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
