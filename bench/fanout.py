"""One mass message to a 100,000-member list through the production topology, on MariaDB.

Starts the topology of ``scripts/topology.py`` (Mosquitto with ``messenger_auth.so``,
``messenger api``, ``--handlers`` ``messenger handler`` processes, ``messenger bridge``)
against MariaDB and Redis, and stops it afterwards. Then:

1. Seeds, with SQL bulk inserts (not through the product): a creator, ``--members`` member
   users, an embedded list (``member_lists``, ``list_members``) holding them, and
   ``--blocked-pct`` percent of them blocking the creator.
2. Connects ``--online`` of the members (spread evenly over the list, a few of them blocking
   the creator), each subscribed to ``users/{uid}/messages``. They run in
   ``--member-procs`` child processes, each one thread driving its paho clients from one
   epoll loop (a ``loop_start`` thread per client would spend 1,000 threads on 2 cores).
3. Starts the 1:1 probe: two other members send each other ``message`` commands in turn at
   ``--probe-rate`` per second (QoS 1); the latency runs from the publish call to the
   delivery on ``users/{uid}/messages``. ``--baseline`` seconds of it run before the mass
   message. The bench's own clients set TCP_NODELAY (:func:`no_delay`), so the latency is
   the product's; the product's service clients keep paho's default (Nagle on).
4. The creator publishes the mass message (``{"type":"message","list":...}``) over MQTT and
   waits for its ``queued`` ack; the bench polls ``mass_messages`` every 0.25 s until the
   status is ``sent``, then waits for the online members' copies.
5. Checks in the database that every member who does not block the creator has exactly one
   copy (and a conversation with the creator), and that no blocking member has one; prints
   FAIL lines when not.

Times from the database (``created_at``, ``started_at``, ``finished_at``) are the handler's;
wall-clock times are the bench's, from the publish call. CPU seconds per process are shown for
the baseline and the fan-out windows, with what the whole machine did meanwhile: other work on
the machine (another test suite) makes every figure pessimistic. So does a shared database:
the handlers take any queued mass message in it, also another run's (the bench warns when they
did); ``--database-url`` can point at a database of its own. Rows are left in the database
(every run has its own ids).

    python bench/fanout.py                       # 100,000 members, 1,000 online
    python bench/fanout.py --quick               # 5,000 members, 50 online
    python bench/fanout.py --page-size 500 --probe-rate 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import random
import re
import selectors
import shlex
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, and_, func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acl.principal import Role
from acl.tokens import issue_token
from bench.procstat import CLK_TCK, database_pid, machine_busy, process_cpu
from bench.topology import BenchError, no_delay, open_client, percentiles, report_logs
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine
from messenger.models import BlockedUser, Conversation, ListMember, MassMessage, MemberList, Message, User
from scripts.topology import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, MOSQUITTO, Topology

HOST = "127.0.0.1"
QUICK = {"members": 5_000, "online": 50, "baseline": 5.0}
DEFAULTS = {"members": 100_000, "online": 1_000, "baseline": 10.0}
#: Rows per INSERT when seeding.
SEED_CHUNK = 5_000
#: After the status is ``sent``, how long the last online copies (and probe messages) may take.
GRACE_S = 30.0
#: How often the bench reads the mass message's row, and prints progress.
POLL_S = 0.25
PROGRESS_S = 10.0
#: handler/background.py's log line when a handler takes a mass message.
_FANOUT_STARTED = re.compile(r"fan-out of mass message (\d+): started by")
#: Tokens outlive the longest run.
TOKEN_TTL = timedelta(hours=3)


# --- the run's users --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Who is who in one run; every id carries the run's tag."""

    tag: str
    creator: str
    list_id: str
    members: list[str]  # in list order
    blocked: frozenset[int]  # indices of members who block the creator
    online: list[int]  # indices of the members who are connected
    probe: tuple[str, str]
    mass_client_id: str

    @classmethod
    def make(cls, members: int, online: int, blocked_pct: float) -> Plan:
        tag = uuid.uuid4().hex[:6]
        rng = random.Random(tag)
        width = len(str(members - 1))
        ids = [f"fm{tag}-{i:0{width}d}" for i in range(members)]  # sort like their index
        # online members spread evenly over the list, so the last copies are watched too
        on = sorted({i * members // online for i in range(online)}) if online else []
        n_blocked = math.floor(members * blocked_pct / 100)
        # the same share of the online members blocks the creator (at least one when any
        # member does), so the bench sees that they get nothing; the rest at random
        on_blocked = min(n_blocked, len(on), max(1 if n_blocked else 0, round(len(on) * blocked_pct / 100)))
        picked = set(on[:: max(1, len(on) // on_blocked)][:on_blocked]) if on_blocked else set()
        offline = sorted(set(range(members)) - set(on))
        picked |= set(rng.sample(offline, min(len(offline), n_blocked - len(picked))))
        return cls(
            tag=tag,
            creator=f"fc{tag}",
            list_id=f"fl{tag}",
            members=ids,
            blocked=frozenset(picked),
            online=on,
            probe=(f"fp{tag}-a", f"fp{tag}-b"),
            mass_client_id=f"mass-{tag}",
        )

    @property
    def expected_copies(self) -> int:
        return len(self.members) - len(self.blocked)


def seed(engine: Engine, plan: Plan) -> float:
    """Insert the creator, the members, the list and the blocks; seconds it took."""
    start = time.perf_counter()

    def chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        for n in range(0, len(rows), SEED_CHUNK):
            yield rows[n : n + SEED_CHUNK]

    with engine.begin() as conn:
        conn.execute(insert(User), [{"id": plan.creator, "role": Role.CREATOR.value}])
        conn.execute(insert(MemberList), [{"id": plan.list_id, "owner_id": plan.creator, "name": plan.tag}])
    for rows in chunks([{"id": m, "role": Role.MEMBER.value} for m in plan.members]):
        with engine.begin() as conn:
            conn.execute(insert(User), rows)
    for rows in chunks([{"list_id": plan.list_id, "member_id": m} for m in plan.members]):
        with engine.begin() as conn:
            conn.execute(insert(ListMember), rows)
    blocks = [{"blocker_id": plan.members[i], "blocked_id": plan.creator} for i in sorted(plan.blocked)]
    for rows in chunks(blocks):
        with engine.begin() as conn:
            conn.execute(insert(BlockedUser), rows)
    return time.perf_counter() - start


# --- online members: child processes, one epoll loop each ---------------------------------------


def members_main(
    conn: Connection,
    port: int,
    uids: list[str],
    mass_client_id: str,
    connect_timeout: float,
    concurrency: int,
) -> None:
    """Connect ``uids`` and record when each gets the mass message's copy.

    Commands from the parent on ``conn``: ``"status"`` -> ``(received, last receive time)``;
    ``"stop"`` -> disconnect and answer with the results. Sends ``("ready", connected, some
    failures, failed)`` once every client is subscribed or has failed.
    """
    sel = selectors.DefaultSelector()
    clients: dict[str, mqtt.Client] = {}
    by_fd: dict[int, mqtt.Client] = {}
    connecting: dict[str, float] = {}  # uid -> when its CONNECT went out
    ready: set[str] = set()
    failures: dict[str, str] = {}
    received: dict[str, float] = {}
    counts = {"duplicates": 0, "other": 0, "disconnects": 0}
    waiting = list(reversed(uids))
    announced = False

    def on_connect(c: mqtt.Client, uid: str, _f: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            failures[uid] = f"CONNECT {reason}"
            connecting.pop(uid, None)
        else:
            c.subscribe(f"users/{uid}/messages", qos=1)

    def on_subscribe(_c: object, uid: str, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        connecting.pop(uid, None)
        if reasons[0].is_failure:
            failures[uid] = f"SUBSCRIBE {reasons[0]}"
        else:
            ready.add(uid)

    def on_message(_c: object, uid: str, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if json.loads(msg.payload).get("client_id") != mass_client_id:
            counts["other"] += 1
        elif uid in received:
            counts["duplicates"] += 1
        else:
            received[uid] = now

    def lost(c: mqtt.Client, fd: int) -> None:
        uid = c.user_data_get()
        sel.unregister(fd)
        del by_fd[fd]
        if uid in ready:
            counts["disconnects"] += 1
            ready.discard(uid)
        elif uid not in failures:
            failures[uid] = "connection closed"
            connecting.pop(uid, None)

    def start_one(uid: str) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{uid}/fanout",
            protocol=mqtt.MQTTv311,
            clean_session=True,
            userdata=uid,
            reconnect_on_failure=False,
        )
        c.username_pw_set(uid, issue_token(DEV_SECRET, uid, ttl=TOKEN_TTL))
        no_delay(c)
        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        clients[uid] = c
        connecting[uid] = time.monotonic()
        try:
            c.connect(HOST, port, keepalive=300)  # no network thread: CONNECT is written here
        except OSError as exc:
            failures[uid] = f"{type(exc).__name__}: {exc}"
            connecting.pop(uid)
            return
        sock = c.socket()
        assert sock is not None  # noqa: S101 - connect() succeeded
        fd = sock.fileno()
        by_fd[fd] = c
        sel.register(fd, selectors.EVENT_READ, c)

    last_misc = time.monotonic()
    while True:
        while conn.poll():
            command = conn.recv()
            if command == "status":
                conn.send(("status", len(received), max(received.values(), default=None)))
            elif command == "stop":
                result = {"received": received, "failures": failures, **counts}
                for c in clients.values():
                    c.disconnect()  # writes DISCONNECT at once (no network thread)
                conn.send(("result", result))
                return
        while waiting and len(connecting) < concurrency:
            start_one(waiting.pop())
        now = time.monotonic()
        for uid, since in list(connecting.items()):
            if now - since > connect_timeout:
                failures[uid] = f"no CONNACK/SUBACK within {connect_timeout:g} s"
                del connecting[uid]
        if not announced and not waiting and not connecting:
            conn.send(("ready", len(ready), dict(list(failures.items())[:10]), len(failures)))
            announced = True
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            if c.loop_read(max_packets=100) != mqtt.MQTT_ERR_SUCCESS or c.socket() is None:
                lost(c, int(key.fd))
                continue
            if c.want_write():  # PUBACKs, the SUBSCRIBE sent from on_connect
                c.loop_write()
        if now - last_misc > 5.0:  # keepalive PINGREQs
            last_misc = now
            for fd, c in list(by_fd.items()):
                if c.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    lost(c, fd)


class MemberPool:
    """The online members, over ``procs`` child processes."""

    def __init__(
        self, port: int, uids: list[str], procs: int, mass_client_id: str, connect_timeout: float
    ) -> None:
        ctx = multiprocessing.get_context("spawn")  # no copy of this process's threads or pools
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for n in range(procs):
            part = uids[n::procs]
            if not part:
                continue
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=members_main,
                args=(child, port, part, mass_client_id, connect_timeout, 50),
                name=f"members-{n + 1}",
                daemon=True,
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> dict[str, int]:
        return {f"members-{n + 1}": p.pid for n, p in enumerate(self.procs) if p.pid is not None}

    def _ask(self, conn: Connection, timeout: float, command: str | None = None) -> Any:
        try:
            if command is not None:
                conn.send(command)
            if not conn.poll(timeout):
                raise BenchError(f"a member process did not answer {command or 'ready'} within {timeout:g} s")
            return conn.recv()
        except (EOFError, BrokenPipeError) as exc:
            raise BenchError("a member process exited; its traceback is above") from exc

    def wait_ready(self, timeout: float) -> tuple[int, dict[str, str], int]:
        connected, failed = 0, 0
        failures: dict[str, str] = {}
        for conn in self.conns:
            _, ok, some, n_failed = self._ask(conn, timeout)
            connected += ok
            failures |= some
            failed += n_failed
        return connected, failures, failed

    def status(self) -> tuple[int, float | None]:
        received, last = 0, None
        for conn in self.conns:
            _, n, at = self._ask(conn, 10, "status")
            received += n
            if at is not None:
                last = at if last is None else max(last, at)
        return received, last

    def stop(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"received": {}, "failures": {}}
        for conn in self.conns:
            _, result = self._ask(conn, 30, "stop")
            merged["received"] |= result.pop("received")
            merged["failures"] |= result.pop("failures")
            for key, value in result.items():
                merged[key] = merged.get(key, 0) + value
        self.close()
        return merged

    def close(self) -> None:
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self.procs.clear()


# --- the creator and the 1:1 probe (threaded paho clients in this process) ---------------------


def close_client(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


class Probe:
    """Two members sending each other messages in turn at a fixed rate."""

    def __init__(self, port: int, pair: tuple[str, str], rate: float, tag: str, timeout: float) -> None:
        self.pair = pair
        self.rate = rate
        self.tag = tag
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.clients: dict[str, mqtt.Client] = {}
        for user in pair:
            token = issue_token(DEV_SECRET, user, ttl=TOKEN_TTL)
            self.clients[user] = open_client(
                port,
                user,
                "bench",
                self._on_message,
                f"users/{user}/messages",
                timeout,
                token=token,
                nodelay=True,
            )
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        cid = json.loads(msg.payload).get("client_id")
        with self.lock:
            self.received.setdefault(cid, now)

    def _run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            delay = start + n / self.rate - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            sender, recipient = self.pair if n % 2 == 0 else self.pair[::-1]
            cid = f"p{self.tag}-{n}"
            command = {"type": "message", "id": cid, "to": recipient, "body": "probe"}
            with self.lock:
                self.sent[cid] = time.time()
            self.clients[sender].publish(f"inbound/{sender}", json.dumps(command), qos=1)
            n += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Stop sending; wait up to ``grace`` seconds for what is still on its way."""
        self._stop.set()
        self._thread.join(5)
        deadline = time.time() + grace
        while time.time() < deadline:
            with self.lock:
                if len(self.received.keys() & self.sent.keys()) >= len(self.sent):
                    break
            time.sleep(0.05)

    def window(self, start: float, end: float) -> tuple[list[float], int, int]:
        """Latencies of the messages sent in ``[start, end)``, how many were sent, how many lost."""
        with self.lock:
            sent = {cid: t for cid, t in self.sent.items() if start <= t < end}
            lat = [self.received[cid] - t for cid, t in sent.items() if cid in self.received]
        return lat, len(sent), len(sent) - len(lat)

    def close(self) -> None:
        self._stop.set()
        for client in self.clients.values():
            close_client(client)


@dataclass
class Creator:
    """The creator's events: the acks of the mass message, and any error."""

    client_id: str
    acks: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # status -> (time, ack)
    errors: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        event = json.loads(msg.payload)
        with self.lock:
            if event.get("type") == "ack" and event.get("client_id") == self.client_id:
                self.acks.setdefault(str(event.get("status")), (now, event))
            elif event.get("type") == "error":
                self.errors.append(event)

    def ack(self, status: str) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            return self.acks.get(status)


# --- measuring ----------------------------------------------------------------------------------


class CpuWindow:
    """CPU seconds of the topology, a local mariadbd, the member processes and this process over a
    window, and how busy the whole machine was meanwhile (/proc/stat)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = time.perf_counter()
        self._cpu0 = self._sample()
        self._client0 = time.process_time()
        self._machine0 = machine_busy()
        self.line = ""
        self.shares: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        cpu = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                cpu[name] = process_cpu(pid)
        return cpu

    def close(self) -> str:
        """Freeze the window (once); the line that describes it."""
        if self.line:
            return self.line
        elapsed = time.perf_counter() - self._start
        if elapsed < 1.0:
            self.line = f"not shown: {elapsed:.2f} s is too short for /proc's {1000 // CLK_TCK} ms ticks"
            return self.line
        now = self._sample()
        used = {
            name: now[name] - self._cpu0[name] for name in self.pids if name in now and name in self._cpu0
        }
        used["bench client"] = time.process_time() - self._client0
        machine = machine_busy() - self._machine0
        ours = sum(used.values())
        others = max(0.0, machine - ours)
        self.shares = {name: s / elapsed for name, s in used.items()}
        parts = [f"{name} {s:.1f} s ({s / elapsed:.0%})" for name, s in used.items()]
        cores = os.cpu_count() or 1
        self.line = (
            f"over {elapsed:.1f} s: "
            + ", ".join(parts)
            + f"\n                      machine busy {machine / elapsed:.2f} of {cores} cores"
            f" (these processes {ours / elapsed:.2f}, everything else {others / elapsed:.2f})"
        )
        return self.line


@dataclass
class MassRow:
    status: str
    processed: int
    stored: int
    skipped: int
    recipients: int | None
    lease_owner: str | None
    created_at: Any
    started_at: Any
    finished_at: Any


def read_mass(engine: Engine, sender: str, client_id: str) -> MassRow | None:
    m = MassMessage
    with engine.connect() as conn:
        row = conn.execute(
            select(
                m.status,
                m.processed,
                m.stored,
                m.skipped,
                m.recipients,
                m.lease_owner,
                m.created_at,
                m.started_at,
                m.finished_at,
            ).where(m.sender_id == sender, m.client_msg_id == client_id)
        ).one_or_none()
    return None if row is None else MassRow(*row)


def seconds(later: Any, earlier: Any) -> float | None:
    if later is None or earlier is None:
        return None
    return float((later - earlier).total_seconds())


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok


@dataclass
class DbCheck:
    copies: int
    distinct: int
    to_blocking: int
    conversations: int

    @classmethod
    def read(cls, engine: Engine, plan: Plan) -> DbCheck:
        """The run's copies, their recipients, copies to members who block the creator, and the
        members' conversations with the creator."""
        mass = and_(Message.sender_id == plan.creator, Message.client_msg_id == plan.mass_client_id)
        blocking = and_(
            BlockedUser.blocker_id == Message.recipient_id, BlockedUser.blocked_id == Message.sender_id
        )
        with engine.connect() as conn:
            copies, distinct = conn.execute(
                select(func.count(), func.count(func.distinct(Message.recipient_id))).where(mass)
            ).one()
            to_blocking = conn.execute(
                select(func.count()).select_from(Message).join(BlockedUser, blocking).where(mass)
            ).scalar_one()
            conversations = conn.execute(
                select(func.count()).where(Conversation.peer_id == plan.creator)
            ).scalar_one()
        return cls(int(copies), int(distinct), int(to_blocking), int(conversations))


@dataclass
class Measured:
    """What one run saw; times from ``time.time()``."""

    baseline_start: float
    t_mass: float
    t_done: float
    sent_seen: float | None
    owners: set[str]
    row: MassRow | None
    members: dict[str, Any]
    db: DbCheck
    baseline_cpu: CpuWindow
    fanout_cpu: CpuWindow


@dataclass
class Harness:
    """The clients of one run, on a started topology."""

    plan: Plan
    engine: Engine
    pool: MemberPool
    probe: Probe
    creator: Creator
    creator_client: mqtt.Client
    pids: dict[str, int]
    online_expected: set[str]


def other_fanouts(topology: Topology, ours: int | None) -> list[int]:
    """Mass messages other than ``ours`` that this topology's handlers fanned out (from their
    logs): on a shared database they take any run's queued mass messages, and that work shows
    in the CPU and latency figures."""
    found: set[int] = set()
    names = [f"handler-{n}" for n in range(1, topology.handlers + 1)]
    names += [f"worker-{n}" for n in range(1, topology.workers + 1)]
    for name in names:
        with contextlib.suppress(OSError):
            found |= {int(i) for i in _FANOUT_STARTED.findall(topology.log(name).read_text())}
    return sorted(found - {ours})


def mass_body(list_id: str, size: int) -> str:
    """The mass message's text: ``size`` characters, or a short line when 0."""
    text = f"to everyone on {list_id}"
    return text if size <= 0 else (text + " " + "x" * size)[:size]


def measure(h: Harness, args: argparse.Namespace, outcome: Outcome) -> Measured:
    """Baseline, then the mass message until it is sent and the online members have it."""
    plan = h.plan
    baseline_cpu = CpuWindow(h.pids)
    baseline_start = time.time()
    h.probe.start()
    print(
        f"  probe               {args.baseline:g} s of baseline at {args.probe_rate:g} msg/s ...", flush=True
    )
    time.sleep(args.baseline)
    baseline_cpu.close()

    fanout_cpu = CpuWindow(h.pids)
    command = {
        "type": "message",
        "id": plan.mass_client_id,
        "list": plan.list_id,
        "body": mass_body(plan.list_id, args.body_bytes),
    }
    t_mass = time.time()
    h.creator_client.publish(f"inbound/{plan.creator}", json.dumps(command), qos=1)

    deadline = t_mass + args.timeout
    owners: set[str] = set()
    sent_seen: float | None = None
    next_progress = t_mass + PROGRESS_S
    while time.time() < deadline:
        if h.creator.errors:
            raise BenchError(f"the mass message was refused: {h.creator.errors[0]}")
        row = read_mass(h.engine, plan.creator, plan.mass_client_id)
        now = time.time()
        if row is not None:
            if row.lease_owner:
                owners.add(row.lease_owner)
            if row.status not in ("queued", "sending"):
                sent_seen = now
                break
            if now >= next_progress:
                next_progress += PROGRESS_S
                print(
                    f"    {now - t_mass:6.1f} s  {row.status}: {row.processed:,} processed, "
                    f"{row.stored:,} stored",
                    flush=True,
                )
        time.sleep(POLL_S)
    outcome.check(sent_seen is not None, f"the mass message did not end within {args.timeout:g} s")

    # the last page is published after the commit that says sent: its copies come a bit later
    grace = time.time() + GRACE_S
    received, last_copy = h.pool.status()
    while received < len(h.online_expected) and time.time() < grace:
        time.sleep(0.1)
        received, last_copy = h.pool.status()
    # the fan-out window ends once the status is sent and the online copies are in
    t_done = max(sent_seen or time.time(), last_copy or 0.0)
    fanout_cpu.close()
    h.probe.stop(grace=5)
    members = h.pool.stop()
    return Measured(
        baseline_start=baseline_start,
        t_mass=t_mass,
        t_done=t_done,
        sent_seen=sent_seen,
        owners=owners,
        row=read_mass(h.engine, plan.creator, plan.mass_client_id),
        members=members,
        db=DbCheck.read(h.engine, plan),
        baseline_cpu=baseline_cpu,
        fanout_cpu=fanout_cpu,
    )


def report(h: Harness, m: Measured, args: argparse.Namespace, topology: Topology, outcome: Outcome) -> None:
    plan, row, t0 = h.plan, m.row, m.t_mass
    expected = plan.expected_copies
    queued, sent_ack = h.creator.ack("queued"), h.creator.ack("sent")
    print(f"  mass message        id {queued[1].get('mass_message') if queued else '?'}, published at t=0")
    print(f"  queued ack          {fmt_s(queued[0] - t0) if queued else 'NONE'}")
    outcome.check(queued is not None, "no queued ack")
    if row is None:
        outcome.check(False, "no mass_messages row")
    else:
        ended = seconds(row.finished_at, row.created_at)
        working = seconds(row.finished_at, row.started_at)
        foreign = sorted(o for o in m.owners if not o.startswith(topology.node_id))
        print(
            f"  first page stored   {fmt_s(seconds(row.started_at, row.created_at))} after created_at "
            f"(started_at: claim + first page), by {', '.join(sorted(m.owners)) or '?'}"
        )
        print(
            f"  all copies stored   status {row.status} seen "
            f"{fmt_s(m.sent_seen - t0 if m.sent_seen else None)} after the publish; finished_at - "
            f"created_at {fmt_s(ended)}, finished_at - started_at {fmt_s(working)}"
        )
        print(
            f"  copies              {row.stored:,} stored, {row.skipped:,} skipped, "
            f"{row.processed:,} processed"
        )
        if working and ended:
            pages = math.ceil(row.processed / args.page_size)
            print(
                f"  copies/s            {row.stored / working:,.0f} (started_at -> finished_at), "
                f"{row.stored / ended:,.0f} (created_at -> finished_at); {pages} pages of "
                f"{args.page_size}, {working / pages * 1000:.0f} ms each"
            )
        print(f'  "sent" ack          {fmt_s(sent_ack[0] - t0) if sent_ack else "NONE"}')
        outcome.check(row.status == "sent", f"status {row.status}, not sent")
        outcome.check(sent_ack is not None, "no sent ack")
        # handlers of other topologies on the same database (a test suite) may claim it too
        outcome.check(not foreign, f"fanned out by a handler of another topology: {foreign}")
        outcome.check(
            (row.stored, row.skipped, row.processed) == (expected, len(plan.blocked), len(plan.members)),
            f"mass_messages says stored {row.stored}, skipped {row.skipped}, processed {row.processed}; "
            f"expected {expected}, {len(plan.blocked)}, {len(plan.members)}",
        )

    got: dict[str, float] = m.members["received"]
    online_blocked = {plan.members[i] for i in plan.online if i in plan.blocked}
    got_expected = h.online_expected & got.keys()
    got_blocked = online_blocked & got.keys()
    first, last = min(got.values(), default=None), max(got.values(), default=None)
    print(
        f"  online copies       {len(got_expected)}/{len(h.online_expected)} non-blocking online members "
        f"got theirs, the first {fmt_s(first - t0 if first else None)}, the last "
        f"{fmt_s(last - t0 if last else None)} after the publish"
    )
    print(
        f"                      blocking online members that got one {len(got_blocked)}/"
        f"{len(online_blocked)}; duplicates {m.members['duplicates']}; other messages "
        f"{m.members['other']}; disconnects {m.members['disconnects']}"
    )
    missing = len(h.online_expected - got.keys())
    outcome.check(not missing, f"{missing} online members got no copy")
    outcome.check(not got_blocked, f"{len(got_blocked)} blocking online members got a copy")
    outcome.check(m.members["duplicates"] == 0, f"{m.members['duplicates']} duplicate copies online")
    outcome.check(m.members["disconnects"] == 0, f"{m.members['disconnects']} online members disconnected")

    db = m.db
    print(
        f"  DB check            {db.copies:,} copies, {db.distinct:,} distinct recipients, expected "
        f"{expected:,}; {db.to_blocking} to blocking members; {db.conversations:,} conversations "
        "with the creator"
    )
    outcome.check(
        db.copies == db.distinct == expected,
        f"{db.copies} copies for {db.distinct} recipients, expected {expected} for {expected}",
    )
    outcome.check(db.to_blocking == 0, f"{db.to_blocking} copies to members who block the creator")
    outcome.check(db.conversations == expected, f"{db.conversations} conversations, expected {expected}")

    base, base_n, base_lost = h.probe.window(m.baseline_start, t0)
    during, during_n, during_lost = h.probe.window(t0, m.t_done)
    print(f"  1:1 probe ms        baseline   {percentiles(base)}  ({base_n} sent, {base_lost} lost)")
    print(
        f"                      during     {percentiles(during)}  ({during_n} sent in "
        f"{m.t_done - t0:.1f} s, {during_lost} lost)"
    )
    outcome.check(base_lost == 0 and during_lost == 0, "probe messages lost")
    print(f"  CPU baseline        {m.baseline_cpu.close()}")
    print(f"  CPU fan-out         {m.fanout_cpu.close()}")
    busy = [name for name, share in m.fanout_cpu.shares.items() if share >= 0.9]
    if busy:
        print(f"  saturated (>=90%)   {', '.join(busy)}")
    others = other_fanouts(topology, queued[1].get("mass_message") if queued else None)
    if others:
        print(
            f"  other fan-outs      WARNING: these handlers also fanned out mass messages {others} of "
            "other runs on this database (their CPU is in the figures above)"
        )


def run(args: argparse.Namespace) -> bool:
    plan = Plan.make(args.members, args.online, args.blocked_pct)
    # the probe pair sends 25 messages/s each: the per-user send limit would refuse some
    topology = Topology(
        database_url=args.database_url,
        redis_url=args.redis_url,
        handlers=args.handlers,
        workers=args.workers,
        send_rate_per_s=0,
        extra_env={"MESSENGER_FANOUT_PAGE_SIZE": str(args.page_size)},
    )
    online_ids = [plan.members[i] for i in plan.online]
    online_blocked = {plan.members[i] for i in plan.online if i in plan.blocked}
    outcome = Outcome()
    pool: MemberPool | None = None
    probe: Probe | None = None
    creator_client: mqtt.Client | None = None
    engine = create_db_engine(args.database_url, pool_size=2)
    print(
        f"\n[fan-out] one mass message to a {len(plan.members):,}-member list, {args.handlers} handlers, "
        f"page size {args.page_size} (run tag {plan.tag})",
        flush=True,
    )
    try:
        with topology.running():
            port = topology.mqtt_port
            seeded_s = seed(engine, plan)
            print(
                f"  seeded              {len(plan.members) + 1:,} users, list {plan.list_id} of "
                f"{len(plan.members):,} members, {len(plan.blocked):,} blocking the creator, "
                f"in {seeded_s:.1f} s (SQL bulk inserts)",
                flush=True,
            )
            started = time.perf_counter()
            pool = MemberPool(port, online_ids, args.member_procs, plan.mass_client_id, args.connect_timeout)
            connected, failures, failed = pool.wait_ready(args.connect_timeout + 5 + len(online_ids) / 20)
            print(
                f"  online members      {connected}/{len(online_ids)} connected and subscribed in "
                f"{time.perf_counter() - started:.1f} s ({len(pool.procs)} process(es), one epoll loop "
                f"each); {len(online_blocked)} of them block the creator",
                flush=True,
            )
            if failed:
                raise BenchError(f"{failed} online members could not connect, e.g. {failures}")
            creator = Creator(plan.mass_client_id)
            creator_client = open_client(
                port,
                plan.creator,
                "bench",
                creator.on_event,
                f"users/{plan.creator}/events",
                args.connect_timeout,
                token=issue_token(DEV_SECRET, plan.creator, role=Role.CREATOR, ttl=TOKEN_TTL),
                nodelay=True,
            )
            probe = Probe(port, plan.probe, args.probe_rate, plan.tag, args.connect_timeout)
            pids = {name: proc.pid for name, proc in topology.procs.items()}
            if (db := database_pid()) is not None:
                pids["mariadbd"] = db
            harness = Harness(
                plan,
                engine,
                pool,
                probe,
                creator,
                creator_client,
                pids | pool.pids,
                set(online_ids) - online_blocked,
            )
            measured = measure(harness, args, outcome)
            pool = None  # measure() stopped it
        report(harness, measured, args, topology, outcome)
    except (OSError, RuntimeError, TimeoutError, BenchError) as exc:
        outcome.check(False, f"the run could not be completed: {type(exc).__name__}: {exc}")
    finally:
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.stop()
            pool.close()
        if probe is not None:
            probe.close()
        if creator_client is not None:
            close_client(creator_client)
        engine.dispose()
        report_logs(topology, failed=bool(outcome.failures))
        topology.cleanup()
    for failure in outcome.failures:
        print(f"  FAIL                {failure}")
    return not outcome.failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5,000 members, 50 online, 5 s baseline")
    parser.add_argument("--members", type=int, help="list size (default 100,000)")
    parser.add_argument("--online", type=int, help="connected members (default 1,000)")
    parser.add_argument("--member-procs", type=int, default=1, help="processes the online members run in")
    parser.add_argument(
        "--blocked-pct", type=float, default=1.0, help="percent of members blocking the creator"
    )
    parser.add_argument("--page-size", type=int, default=1000, help="MESSENGER_FANOUT_PAGE_SIZE")
    parser.add_argument(
        "--body-bytes", type=int, default=0, help="mass message length (default: a short line)"
    )
    parser.add_argument("--handlers", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="messenger worker processes doing the fan-out (default 0: the handlers do it)",
    )
    parser.add_argument("--probe-rate", type=float, default=50.0, help="1:1 probe messages per second")
    parser.add_argument(
        "--baseline", type=float, help="seconds of probe before the mass message (default 10)"
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("MESSENGER_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("MESSENGER_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the fan-out may take")
    parser.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for a CONNACK")
    args = parser.parse_args()
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.members < 1 or args.online < 0 or args.online > args.members:
        parser.error("--members must be positive and --online between 0 and --members")
    if not 0 <= args.blocked_pct < 100:
        parser.error("--blocked-pct must be in [0, 100)")
    if min(args.member_procs, args.page_size, args.handlers) < 1 or args.probe_rate <= 0:
        parser.error("--member-procs, --page-size, --handlers and --probe-rate must be positive")

    def terminated(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"settings            members {args.members:,} ({args.blocked_pct:g}% blocking the creator), "
        f"online {args.online:,} in {args.member_procs} process(es), page size {args.page_size}, "
        f"{args.handlers} handlers, {args.workers} workers, probe {args.probe_rate:g} msg/s, "
        f"baseline {args.baseline:g} s, "
        f"body {args.body_bytes or 'a short line'}{' characters' if args.body_bytes else ''}"
    )
    load = os.getloadavg()
    print(f"services            {MOSQUITTO}, {args.database_url}, {args.redis_url}; {os.cpu_count()} cores")
    print(f"load average        {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) before the run")
    try:
        ok = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    load = os.getloadavg()
    print(f"load average        {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) after the run")
    print(f"\nresult              {'ok' if ok else 'FAILED (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
