"""``fanout``: a creator mass-messages a ``--members`` list (100,000) with ``--online`` members
(1,000) connected, while a 1:1 probe runs.

1. Seeds, with SQL bulk inserts (not through the product): the creator, the members, an embedded
   list holding them, and ``--blocked-pct`` percent of them blocking the creator.
2. Connects the online members (spread evenly over the list, a few of them blocking the creator)
   from ``--member-procs`` processes, each subscribed to ``users/{uid}/messages``.
3. Starts the 1:1 probe: two other members message each other at ``--probe-rate`` (QoS 1), for
   ``--baseline`` seconds before the mass message and all through it.
4. The creator publishes the mass message over MQTT; the bench polls ``mass_messages`` until it
   is ``sent`` and waits for the online members' copies.
5. Checks in the database that every member who does not block the creator has exactly one copy,
   that no blocking member has one, and that every online non-blocking member got theirs live.

Figures: time until all copies are stored (the handler's ``finished_at - created_at``), copies/s,
time until the last online member has it (from the publish), how long after its copy was stored
(``sent_at`` in the database) each online member got it, and the probe's p50/p99 before and
during the fan-out.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import selectors
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, and_, func, insert, select

from acl.principal import Role
from acl.tokens import issue_token
from bench.load import LoadError, external_loop_client, no_delay, open_client
from bench.procstat import close_children
from bench.scenarios import Scenario
from bench.stacks import Stack, bench_engine
from bench.suite import CpuMeter, Progress, Result, p50_p99, percentile
from messenger.models import BlockedUser, Conversation, ListMember, MassMessage, MemberList, Message, User

#: --quick: members, online members, seconds of baseline
QUICK = (2_000, 20, 1.0)
#: After the status is ``sent``, how long the last online copies may take.
GRACE_S = 30.0
POLL_S = 0.1
HOST = "127.0.0.1"
#: Rows per INSERT when seeding.
SEED_CHUNK = 5_000
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
    secret: str,
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
        c = external_loop_client(uid, "fanout", issue_token(secret, uid, ttl=TOKEN_TTL), uid)
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
        self,
        port: int,
        uids: list[str],
        procs: int,
        mass_client_id: str,
        connect_timeout: float,
        secret: str,
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
                args=(child, port, part, mass_client_id, connect_timeout, 50, secret),
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
                raise LoadError(f"a member process did not answer {command or 'ready'} within {timeout:g} s")
            return conn.recv()
        except (EOFError, BrokenPipeError) as exc:
            raise LoadError("a member process exited; its traceback is above") from exc

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
        """Stop the member processes (asked first; after :meth:`stop` they have already ended),
        and close their pipes."""
        close_children(self.procs, self.conns, "stop")


# --- the creator and the 1:1 probe (threaded paho clients in this process) ---------------------


def close_client(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


class Probe:
    """Two members sending each other messages in turn at a fixed rate."""

    def __init__(
        self, port: int, pair: tuple[str, str], rate: float, tag: str, timeout: float, secret: str
    ) -> None:
        self.pair = pair
        self.rate = rate
        self.tag = tag
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.clients: dict[str, mqtt.Client] = {}
        for user in pair:
            token = issue_token(secret, user, ttl=TOKEN_TTL)
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


def mass_body(list_id: str, size: int) -> str:
    """The mass message's text: ``size`` characters, or a short line when 0."""
    text = f"to everyone on {list_id}"
    return text if size <= 0 else (text + " " + "x" * size)[:size]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--members", type=int, default=100_000, help="list size (100,000)")
    group.add_argument("--online", type=int, default=1_000, help="connected members (1,000)")
    group.add_argument("--member-procs", type=int, default=2, help="processes of the online members (2)")
    group.add_argument("--blocked-pct", type=float, default=1.0, help="percent blocking the creator (1)")
    group.add_argument("--probe-rate", type=float, default=50.0, help="1:1 probe messages/s (50)")
    group.add_argument("--baseline", type=float, default=10.0, help="seconds of probe before (10)")
    group.add_argument("--fanout-timeout", type=float, default=900.0, help="seconds the fan-out may take")


def _sizes(args: argparse.Namespace) -> tuple[int, int, float]:
    if args.quick:
        return QUICK
    return args.members, args.online, args.baseline


def run(stack: Stack, args: argparse.Namespace, progress: Progress) -> Result:
    members, online, baseline = _sizes(args)
    result = Result("fanout", stack.name, stack.describe())
    result.params = {
        "members": members,
        "online": online,
        "blocked_pct": args.blocked_pct,
        "probe_rate": args.probe_rate,
        "baseline_s": baseline,
    }
    plan = Plan.make(members, online, args.blocked_pct)
    engine = bench_engine(stack)
    pool: MemberPool | None = None
    probe: Probe | None = None
    creator_client: mqtt.Client | None = None
    cpu = CpuMeter(stack.pids())
    try:
        progress.step(f"fanout: seeding {members:,} members")
        seeded = seed(engine, plan)
        result.notes.append(f"seeded {members:,} members and the list in {seeded:.1f} s (SQL bulk inserts)")
        online_ids = [plan.members[i] for i in plan.online]
        online_blocked = {plan.members[i] for i in plan.online if i in plan.blocked}
        expected_online = set(online_ids) - online_blocked
        progress.step(f"fanout: connecting {online:,} online members")
        pool = MemberPool(
            stack.mqtt_port, online_ids, args.member_procs, plan.mass_client_id, 10.0, stack.secret
        )
        _, failures, failed = pool.wait_ready(15 + online / 20)
        if failed:
            raise LoadError(f"{failed} online members could not connect, e.g. {failures}")
        cpu.add(pool.pids)
        creator = Creator(plan.mass_client_id)
        creator_client = open_client(
            stack.mqtt_port,
            plan.creator,
            "bench",
            creator.on_event,
            f"users/{plan.creator}/events",
            10.0,
            token=issue_token(stack.secret, plan.creator, role=Role.CREATOR, ttl=TOKEN_TTL),
            nodelay=True,
        )
        probe = Probe(stack.mqtt_port, plan.probe, args.probe_rate, plan.tag, 10.0, stack.secret)

        progress.step(f"fanout: {baseline:g} s of 1:1 probe before")
        baseline_start = time.time()
        probe.start()
        while (waited := time.time() - baseline_start) < baseline:
            progress.update(waited, baseline, "baseline")
            time.sleep(0.1)

        command = {
            "type": "message",
            "id": plan.mass_client_id,
            "list": plan.list_id,
            "body": mass_body(plan.list_id, 0),
        }
        progress.step(f"fanout: {plan.expected_copies:,} copies")
        cpu.start()
        t_mass = time.time()
        creator_client.publish(f"inbound/{plan.creator}", json.dumps(command), qos=1)
        sent_seen = None
        while time.time() < t_mass + args.fanout_timeout:
            if creator.errors:
                raise LoadError(f"the mass message was refused: {creator.errors[0]}")
            row = read_mass(engine, plan.creator, plan.mass_client_id)
            if row is not None:
                progress.update(row.processed, members, f"{row.status}: {row.stored:,} stored")
                if row.status not in ("queued", "sending"):
                    sent_seen = time.time()
                    break
            time.sleep(POLL_S)
        result.check(f"the mass message ended within {args.fanout_timeout:g} s", sent_seen is not None)
        grace = time.time() + GRACE_S
        received, last_copy = pool.status()
        while received < len(expected_online) and time.time() < grace:
            time.sleep(0.05)
            received, last_copy = pool.status()
        t_done = max(sent_seen or time.time(), last_copy or 0.0)
        cpu.stop()
        probe.stop(grace=5)
        got: dict[str, float] = pool.stop()["received"]
        pool.close()
        pool = None
        row = read_mass(engine, plan.creator, plan.mass_client_id)
        db = DbCheck.read(engine, plan)

        stored_s = seconds(row.finished_at, row.created_at) if row else None
        # the targets are for the full size: 100,000 copies, 1,000 online
        full = members >= 100_000
        result.row("all copies stored (finished_at - created_at)", stored_s, "s", "<= 10 s" if full else "")
        if row and stored_s:
            result.row("copies stored per second", row.stored / stored_s, "copies/s")
        last = max(got.values(), default=None)
        result.row(
            "last online member has it (from the publish)", None if last is None else last - t_mass, "s"
        )
        lag = after_stored(engine, plan.creator, plan.mass_client_id, got)
        result.row("online: received after its copy was stored, p50", percentile(lag, 0.5), "s")
        result.row(
            "online: received after its copy was stored, max",
            lag[-1] if lag else None,
            "s",
            "<= 2 s" if full else "",
        )
        base, base_n, base_lost = probe.window(baseline_start, t_mass)
        during, during_n, during_lost = probe.window(t_mass, t_done)
        b50, b99 = p50_p99(v * 1000 for v in base)
        d50, d99 = p50_p99(v * 1000 for v in during)
        result.row("1:1 probe before: p50 / p99", f"{_f(b50)} / {_f(b99)}", "ms")
        result.row("1:1 probe during the fan-out: p50", d50, "ms")
        result.row("1:1 probe during the fan-out: p99", d99, "ms")
        result.series["latency_ms"] = {
            "1:1 probe before": [v * 1000 for v in base],
            "1:1 probe during the fan-out": [v * 1000 for v in during],
        }
        expected = plan.expected_copies
        result.check(
            f"status sent (is {row.status if row else 'missing'})", row is not None and row.status == "sent"
        )
        result.check(
            f"one copy per non-blocking member ({db.copies:,} copies, {db.distinct:,} recipients,"
            f" {expected:,} expected)",
            db.copies == db.distinct == expected,
        )
        result.check(f"no copy to a blocking member ({db.to_blocking})", db.to_blocking == 0)
        result.check(
            f"a conversation with the creator per copy ({db.conversations:,})", db.conversations == expected
        )
        missing = len(expected_online - got.keys())
        result.check(f"every online non-blocking member got it live ({missing} missing)", missing == 0)
        result.check(
            f"no blocking online member got it ({len(online_blocked & got.keys())})",
            not online_blocked & got.keys(),
        )
        result.check(
            f"no probe message lost ({base_lost + during_lost} of {base_n + during_n})",
            base_lost + during_lost == 0,
        )
    except (LoadError, OSError, RuntimeError, TimeoutError) as exc:
        result.check(f"the run completed ({type(exc).__name__}: {exc})", False)
    finally:
        if pool is not None:
            pool.close()
        if probe is not None:
            probe.close()
        if creator_client is not None:
            close_client(creator_client)
        engine.dispose()
        result.cpu = cpu.shares()
    return result


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def after_stored(engine: Engine, creator: str, client_id: str, got: dict[str, float]) -> list[float]:
    """Sorted seconds from each online member's copy's ``sent_at`` to its receipt."""
    stored: dict[str, datetime] = {}
    ids = list(got)
    with engine.connect() as conn:
        for n in range(0, len(ids), 1000):
            rows = conn.execute(
                select(Message.recipient_id, Message.sent_at).where(
                    Message.sender_id == creator,
                    Message.client_msg_id == client_id,
                    Message.recipient_id.in_(ids[n : n + 1000]),
                )
            )
            stored.update({r: s for r, s in rows})
    lags = []
    for uid, received in got.items():
        if (at := stored.get(uid)) is not None:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            lags.append(received - at.timestamp())
    return sorted(lags)


SCENARIO = Scenario(
    "fanout", "a mass message to a 100,000-member list, 1,000 members online", add_arguments, run
)
