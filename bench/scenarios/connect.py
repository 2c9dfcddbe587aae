"""connect: authenticated CONNECTs per second, and idle connections held with presence mirrored.

1. **Connect rate.** ``--connects`` fresh users, each with a token of its own, connect ->
   CONNACK -> DISCONNECT as fast as they can from ``--connect-procs`` client processes with
   ``--connect-in-flight`` connects open each. Twice: the *first connect* of every user (on the
   production stack each such CONNECT is a POST to the API's ``/mqtt/user``, which also
   provisions the user; on the embedded stack the broker checks the token and admits the user
   itself), then as many *reconnects* with the same tokens, cycling over the users first
   connected at most 20 s before (answered from the Mosquitto plugin's 30 s cache on production,
   however long the first pass took; the embedded broker admits every CONNECT anew).
   These clients write the MQTT 3.1.1 packets themselves on non-blocking sockets: a paho
   client costs more CPU to build than the broker spends on a cached CONNECT, and the load
   generator shares the two cores with the stack.
2. **Idle connections.** ``--idle`` users connect and stay connected, each with a Last Will of
   ``offline`` on its own ``presence/{uid}/bench`` (retained, QoS 1), and announce ``online``
   there (retained, QoS 1), as docs/protocol.md's Presence section asks. ``--idle-procs``
   processes each drive their paho clients from one selectors loop through paho's external-loop
   API. Then the scenario waits until every device shows online in the presence store (Redis,
   read directly, on production; the REST API's ``POST /v1/presence/query`` on the embedded
   stack, whose presence is in process), reads the broker's RSS, holds the connections
   ``--hold`` seconds and checks they are all still there. Finally every client announces
   ``offline`` and disconnects; on production the run's presence keys are removed from Redis.

Every wait is bounded; a phase that stalls is reported as failed, with what it reached.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import multiprocessing
import os
import selectors
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import redis
from paho.mqtt.reasoncodes import ReasonCode

from acl.tokens import issue_token
from api.schemas import PRESENCE_QUERY_MAX_USERS as PRESENCE_BATCH
from bench.load import external_loop_client
from bench.procstat import close_children, raise_fd_limit
from bench.scenarios import Scenario
from bench.stacks import Stack
from bench.suite import CpuMeter, Progress, Result, percentile
from messenger.constants import PRESENCE_DEVICES_KEY, PRESENCE_LAST_SEEN_KEY

HOST = "127.0.0.1"
DEVICE = "bench"
TOKEN_TTL = timedelta(hours=2)
#: ``--quick``: a few seconds per stack (the suite's tests)
QUICK = {"connects": 300, "idle": 200, "hold": 1.0}
DEFAULTS = {"connects": 5_000, "idle": 10_000, "hold": 10.0}
RATE_TARGET = ">= 1,000"
IDLE_TARGET = ">= 10,000"
#: clients per idle process: RLIMIT_NOFILE is 20,000 here, and one loop must keep up with them
MAX_IDLE_PER_PROC = 4_000
#: a phase with no progress for this long has stalled (the broker fell over, or stopped answering)
STALL_S = 30.0
#: how long the presence store may take to show every device online (after the last PUBACK)
MIRROR_TIMEOUT_S = 60.0
#: reconnects cycle over the users first connected at most this long before: the Mosquitto plugin
#: caches a gateway's answer 30 s (``cache_ttl_s``), and a first pass can take longer than that
RECONNECT_FRESH_S = 20.0
#: latency samples kept per series for the plot
MAX_SAMPLES = 20_000
CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class PhaseError(Exception):
    """A phase could not finish: a child process died or went silent, or nothing moved for too long."""


def add_arguments(p: argparse._ArgumentGroup) -> None:
    cpus = os.cpu_count() or 2
    p.add_argument(
        "--connects",
        type=int,
        help=f"users for the connect rate, each connecting twice (default {DEFAULTS['connects']:,}; "
        f"quick {QUICK['connects']})",
    )
    p.add_argument(
        "--connect-procs", type=int, default=max(2, cpus), help=f"client processes (default {max(2, cpus)})"
    )
    p.add_argument(
        "--connect-in-flight", type=int, default=8, help="CONNECTs open at once per process (default 8)"
    )
    p.add_argument(
        "--idle",
        type=int,
        help=f"idle connections to hold (default {DEFAULTS['idle']:,}; quick {QUICK['idle']})",
    )
    p.add_argument(
        "--idle-procs",
        type=int,
        help=f"processes holding them (default: enough for <= {MAX_IDLE_PER_PROC:,} each, at least 2)",
    )
    p.add_argument(
        "--hold",
        type=float,
        help=f"seconds to hold the idle connections (default {DEFAULTS['hold']:g}; quick {QUICK['hold']:g})",
    )
    p.add_argument(
        "--connack-timeout",
        type=float,
        default=10.0,
        help="per client: CONNECT to CONNACK (and presence PUBACK) (default 10 s)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="all idle clients connected and online within (default 300 s)",
    )


# --- MQTT 3.1.1 packets for the rate clients ----------------------------------------------------

DISCONNECT = b"\xe0\x00"


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 60) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, username and password, no Will."""
    flags = 0x80 | 0x40 | 0x02
    body = _utf8("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big")
    body += _utf8(client_id) + _utf8(username) + _utf8(password)
    return b"\x10" + _remaining_length(len(body)) + body


# --- child processes ------------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, None when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


@dataclass(slots=True)
class _Attempt:
    index: int
    sock: socket.socket
    started: float
    state: str = "tcp"  # tcp -> connack -> closing
    buf: bytes = b""


def _connect_all(
    port: int, packets: list[bytes], in_flight: int, timeout: float, report: Callable[[int], None]
) -> dict[str, Any]:
    """Every packet's CONNECT -> CONNACK -> DISCONNECT, ``in_flight`` at a time, on one selector."""
    sel = selectors.DefaultSelector()
    waiting = list(range(len(packets) - 1, -1, -1))
    open_: dict[int, _Attempt] = {}  # fd -> attempt before its CONNACK
    closing: dict[int, tuple[socket.socket, float]] = {}  # fd -> (socket, give up at)
    accepted = 0
    refused: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    latencies: list[float] = []
    times: list[float] = []
    accepted_at: dict[int, float] = {}
    started = time.monotonic()
    last_report = started

    def drop(fd: int, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(fd)
        sock.close()

    def fail(fd: int, a: _Attempt, why: str) -> None:
        open_.pop(fd, None)
        failed[why] += 1
        drop(fd, a.sock)

    while waiting or open_ or closing:
        while waiting and len(open_) < in_flight:
            i = waiting.pop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            a = _Attempt(i, sock, time.monotonic())
            err = sock.connect_ex((HOST, port))
            if err not in (0, errno.EINPROGRESS):
                failed[f"connect: {os.strerror(err)}"] += 1
                sock.close()
                continue
            open_[sock.fileno()] = a
            sel.register(sock, selectors.EVENT_WRITE, a)
        for key, _events in sel.select(timeout=0.05):
            fd = int(key.fd)
            if fd in closing:
                sock, _ = closing[fd]
                try:
                    data = sock.recv(64)
                except OSError:
                    data = b""
                if not data:
                    del closing[fd]
                    drop(fd, sock)
                continue
            a = key.data
            if a.state == "tcp":
                err = a.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(fd, a, f"connect: {os.strerror(err)}")
                    continue
                try:
                    sent = a.sock.send(packets[a.index])
                except OSError as exc:
                    fail(fd, a, f"send: {exc.strerror}")
                    continue
                if sent != len(packets[a.index]):  # a few hundred bytes on a fresh socket
                    fail(fd, a, "CONNECT not written at once")
                    continue
                a.state = "connack"
                sel.modify(a.sock, selectors.EVENT_READ, a)
                continue
            try:
                data = a.sock.recv(64)
            except OSError as exc:
                fail(fd, a, f"recv: {exc.strerror}")
                continue
            if not data:
                fail(fd, a, "connection closed before the CONNACK")
                continue
            a.buf += data
            if len(a.buf) < 4:
                continue
            now = time.monotonic()
            del open_[fd]
            if a.buf[0] != 0x20:
                failed[f"not a CONNACK: {a.buf[:4].hex()}"] += 1
                drop(fd, a.sock)
            elif a.buf[3] != 0:
                refused[f"CONNACK {a.buf[3]} ({CONNACK_CODES.get(a.buf[3], '?')})"] += 1
                drop(fd, a.sock)
            else:
                accepted += 1
                latencies.append((now - a.started) * 1000)
                times.append(now)
                accepted_at[a.index] = now
                with contextlib.suppress(OSError):
                    a.sock.send(DISCONNECT)
                # the broker closes after DISCONNECT: wait for that, so TIME_WAIT stays on its side
                closing[fd] = (a.sock, now + 2.0)
        now = time.monotonic()
        for fd, a in list(open_.items()):
            if now - a.started > timeout:
                fail(fd, a, f"no CONNACK within {timeout:g} s")
        for fd, (sock, give_up) in list(closing.items()):
            if now > give_up:
                del closing[fd]
                drop(fd, sock)
        if now - last_report > 0.25:
            last_report = now
            report(accepted + sum(refused.values()) + sum(failed.values()))
    sel.close()
    return {
        "accepted": accepted,
        "refused": dict(refused),
        "failed": dict(failed),
        "latencies_ms": latencies,
        "times": times,
        "accepted_at": accepted_at,
        "started": started,
        "ended": max(times, default=time.monotonic()),
    }


def rate_child(
    conn: Connection, port: int, secret: str, uids: list[str], in_flight: int, timeout: float
) -> None:
    """Sign the users' tokens, say ``ready``; then answer each ``("run", fresh_s)`` with
    ``("done", outcome)`` (and ``("progress", done)`` meanwhile), until ``"stop"``.

    ``fresh_s`` None: connect every user once. A number: make as many connects, cycling over
    the users whose last accepted CONNECT is at most ``fresh_s`` old, so that a reconnect pass
    stays inside the broker's token cache however long the first pass took.
    """
    raise_fd_limit()
    packets = [connect_packet(f"{uid}/rate", uid, issue_token(secret, uid, ttl=TOKEN_TTL)) for uid in uids]
    accepted_at: dict[int, float] = {}
    conn.send(("ready", len(packets)))
    while (command := conn.recv()) != "stop":
        _, fresh_s = command
        order = list(range(len(packets)))
        if fresh_s is not None:
            cutoff = time.monotonic() - fresh_s
            fresh = [i for i in order if accepted_at.get(i, -math.inf) >= cutoff]
            # cycling over fewer users than connects in flight would open one client id twice
            many = len(fresh) >= 2 * in_flight
            order = [fresh[k % len(fresh)] for k in range(len(packets))] if many else fresh
        outcome = _connect_all(
            port, [packets[i] for i in order], in_flight, timeout, lambda done: conn.send(("progress", done))
        )
        for k, at in outcome.pop("accepted_at").items():
            accepted_at[order[k]] = at
        outcome["users"] = len(set(order))
        outcome["attempted"] = len(order)
        conn.send(("done", outcome))


@dataclass(slots=True)
class _Device:
    uid: str
    client: mqtt.Client
    started: float
    state: str = "connecting"  # -> online -> (offline) ; or failed / lost
    online_at: float = 0.0
    fd: int = -1
    offline_acked: bool = False


def idle_child(
    conn: Connection,
    port: int,
    secret: str,
    uids: list[str],
    in_flight: int,
    timeout: float,
) -> None:
    """Hold ``uids`` connected, each with a Will and its retained ``online`` presence.

    Says ``("ready", rss_kib)``, waits for ``"go"``, connects (``("progress", online, failed)``
    meanwhile) and says ``("connected", summary)`` once every client is online or has failed.
    Then answers ``"status"`` with ``("status", held, lost)`` and ``"stop"`` (announce offline,
    disconnect) with ``("stopped", offline_acked, disconnected)``.
    """
    raise_fd_limit()
    tokens = {uid: issue_token(secret, uid, ttl=TOKEN_TTL) for uid in uids}
    conn.send(("ready", rss_kib(os.getpid())))
    if conn.recv() != "go":
        return
    sel = selectors.DefaultSelector()
    devices: list[_Device] = []
    by_fd: dict[int, _Device] = {}
    connecting: dict[str, _Device] = {}
    failures: Counter[str] = Counter()
    latencies: list[float] = []
    online_times: list[float] = []
    counts = {"online": 0, "lost": 0}
    waiting = list(reversed(uids))
    started = time.monotonic()

    def fail(d: _Device, why: str) -> None:
        if d.state == "connecting":
            failures[why] += 1
            connecting.pop(d.uid, None)
        elif d.state == "online":
            counts["lost"] += 1
            counts["online"] -= 1
        d.state = "failed"

    def on_connect(c: mqtt.Client, d: _Device, _f: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            fail(d, f"CONNACK {reason}")
        else:
            c.publish(f"presence/{d.uid}/{DEVICE}", b"online", qos=1, retain=True)

    def on_publish(_c: object, d: _Device, _mid: int, _reason: ReasonCode, _p: object) -> None:
        if d.state == "connecting":
            now = time.monotonic()
            d.state, d.online_at = "online", now
            connecting.pop(d.uid, None)
            counts["online"] += 1
            latencies.append((now - d.started) * 1000)
            online_times.append(now)
        elif d.state == "offline":
            d.offline_acked = True

    def lost(d: _Device) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(d.fd)
        by_fd.pop(d.fd, None)
        if d.state in ("connecting", "online"):
            fail(d, "connection closed")

    def start_one(uid: str) -> None:
        c = external_loop_client(uid, DEVICE, tokens[uid])
        d = _Device(uid, c, time.monotonic())
        c.user_data_set(d)
        c.will_set(f"presence/{uid}/{DEVICE}", b"offline", qos=1, retain=True)
        c.on_connect = on_connect
        c.on_publish = on_publish
        devices.append(d)
        connecting[uid] = d
        try:
            c.connect(HOST, port, keepalive=300)  # no network thread: CONNECT is written here
        except OSError as exc:
            fail(d, f"connect: {type(exc).__name__}: {exc.strerror or exc}")
            return
        sock = c.socket()
        if sock is None:
            fail(d, "no socket after connect")
            return
        d.fd = sock.fileno()
        by_fd[d.fd] = d
        sel.register(d.fd, selectors.EVENT_READ, d)

    def pump(wait_s: float) -> None:
        for key, _ in sel.select(timeout=wait_s):
            d = key.data
            if d.client.loop_read(max_packets=10) != mqtt.MQTT_ERR_SUCCESS or d.client.socket() is None:
                lost(d)
                continue
            if d.client.want_write():  # the online PUBLISH queued from on_connect
                d.client.loop_write()

    last_report = last_misc = time.monotonic()
    announced = False
    while True:
        now = time.monotonic()
        while conn.poll():
            command = conn.recv()
            if command == "status":
                conn.send(("status", counts["online"], counts["lost"]))
            elif command == "stop":
                _stop_devices(devices, pump, timeout)
                conn.send(
                    (
                        "stopped",
                        sum(d.offline_acked for d in devices),
                        sum(d.state == "offline" for d in devices),
                    )
                )
                return
        while waiting and len(connecting) < in_flight:
            start_one(waiting.pop())
        for d in list(connecting.values()):
            if now - d.started > timeout:
                fail(d, f"not online within {timeout:g} s")
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(d.fd)
                by_fd.pop(d.fd, None)
                d.client.disconnect()
        if not announced and (now - last_report > 0.25 or (not waiting and not connecting)):
            last_report = now
            conn.send(("progress", counts["online"], sum(failures.values())))
        if not announced and not waiting and not connecting:
            announced = True
            conn.send(
                (
                    "connected",
                    {
                        "online": counts["online"],
                        "failed": sum(failures.values()),
                        "failures": dict(failures.most_common(5)),
                        "started": started,
                        "ended": max(online_times, default=now),
                        "latencies_ms": latencies,
                        "times": online_times,
                        "rss_kib": rss_kib(os.getpid()),
                    },
                )
            )
        pump(0.05 if not announced else 0.2)
        if now - last_misc > 5.0:  # keepalive PINGREQs (300 s keepalive: rarely any)
            last_misc = now
            for d in list(by_fd.values()):
                if d.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    lost(d)


def _stop_devices(devices: list[_Device], pump: Callable[[float], None], timeout: float) -> None:
    """A device that quits on purpose announces ``offline`` itself (its Will is only for a lost
    connection), then disconnects."""
    online = [d for d in devices if d.state == "online"]
    for d in online:
        d.state = "offline"
        d.client.publish(f"presence/{d.uid}/{DEVICE}", b"offline", qos=1, retain=True)
    deadline = time.monotonic() + max(timeout, 30.0)
    while time.monotonic() < deadline and not all(d.offline_acked for d in online):
        pump(0.05)
    for d in devices:
        with contextlib.suppress(Exception):  # the broker may have gone: nothing left to tell it
            d.client.disconnect()


class _Pool:
    """Client processes (spawned: no copy of the bench's threads and pools), one pipe each."""

    def __init__(self, name: str, target: Callable[..., None], parts: list[tuple[Any, ...]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for n, args in enumerate(parts):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(child, *args), name=f"{name}-{n + 1}", daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def pids(self) -> dict[str, int]:
        return {f"{self.name} {n + 1}": p.pid for n, p in enumerate(self.procs) if p.pid is not None}

    def send_all(self, message: Any) -> None:
        for conn in self.conns:
            try:
                conn.send(message)
            except OSError as exc:
                raise PhaseError(f"a {self.name} process is gone ({exc})") from exc

    def gather(
        self,
        kind: str,
        timeout: float,
        on_message: Callable[[int, tuple[Any, ...]], None] | None = None,
        tick: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Wait until each child sent a ``kind`` message; return their payloads in order. Other
        messages go to ``on_message``; ``tick`` runs a few times a second (it may raise)."""
        got: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.conns):
            left = deadline - time.monotonic()
            if left <= 0:
                raise PhaseError(
                    f"{len(self.conns) - len(got)} {self.name} processes sent no {kind!r} "
                    f"within {timeout:g} s"
                )
            pending = [c for i, c in enumerate(self.conns) if i not in got]
            for ready in wait(pending, timeout=min(left, 0.2)):
                assert isinstance(ready, Connection)  # noqa: S101 - wait() on Connections
                i = self.conns.index(ready)
                try:
                    message = ready.recv()
                except (EOFError, OSError) as exc:
                    code = self.procs[i].exitcode
                    raise PhaseError(f"{self.name} process {i + 1} exited (code {code})") from exc
                if message[0] == kind:
                    got[i] = message[1] if len(message) == 2 else message[1:]
                elif on_message is not None:
                    on_message(i, message)
            if tick is not None:
                tick()
        return [got[i] for i in range(len(self.conns))]

    def close(self) -> None:
        close_children(self.procs, self.conns, "stop")


# --- the presence store ---------------------------------------------------------------------------


class PresenceReader:
    """Counts how many of the run's users show ``DEVICE`` online: in Redis when the stack mirrors
    presence there, else through the REST API (the embedded stack keeps presence in process)."""

    def __init__(self, stack: Stack, uids: list[str], secret: str) -> None:
        self.uids = uids
        self.redis: redis.Redis | None = None
        self.http: httpx.Client | None = None
        if stack.redis_url:
            self.redis = redis.Redis.from_url(stack.redis_url, socket_timeout=10, socket_connect_timeout=5)
            self.where = "Redis"
        else:
            token = issue_token(secret, uids[0], ttl=TOKEN_TTL)
            self.http = httpx.Client(
                base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            self.where = "the REST API (in-process presence, no Redis)"

    def online(self) -> int:
        if self.redis is not None:
            found = 0
            for start in range(0, len(self.uids), 2_000):
                pipe = self.redis.pipeline(transaction=False)
                for uid in self.uids[start : start + 2_000]:
                    pipe.hexists(PRESENCE_DEVICES_KEY.format(uid=uid), DEVICE)
                found += sum(bool(x) for x in pipe.execute())
            return found
        assert self.http is not None  # noqa: S101 - one of the two is set
        found = 0
        for start in range(0, len(self.uids), PRESENCE_BATCH):
            batch = self.uids[start : start + PRESENCE_BATCH]
            reply = self.http.post("/v1/presence/query", json={"users": batch})
            reply.raise_for_status()
            found += sum(any(d["device"] == DEVICE for d in p["devices"]) for p in reply.json()["presence"])
        return found

    def forget(self) -> None:
        """Delete the run's presence keys from Redis (their users are this run's only)."""
        if self.redis is None:
            return
        for start in range(0, len(self.uids), 2_000):
            keys = []
            for uid in self.uids[start : start + 2_000]:
                keys += [PRESENCE_DEVICES_KEY.format(uid=uid), PRESENCE_LAST_SEEN_KEY.format(uid=uid)]
            self.redis.delete(*keys)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        if self.http is not None:
            self.http.close()


def wait_until(
    count: Callable[[], int], want: int, timeout: float, interval: float = 0.25
) -> tuple[int, float | None]:
    """Poll ``count`` until it reaches ``want``: ``(last count, time.monotonic() when it did, or None)``."""
    start = time.monotonic()
    while True:
        got = count()
        if got == want:
            return got, time.monotonic()
        if time.monotonic() - start > timeout:
            return got, None
        time.sleep(interval)


# --- helpers --------------------------------------------------------------------------------------


def _sample(values: list[float]) -> list[float]:
    ordered = sorted(values)
    step = max(1, math.ceil(len(ordered) / MAX_SAMPLES))
    return [round(v, 3) for v in ordered[::step]]


def _per_second(times: list[float], start: float) -> list[list[float]]:
    bins: Counter[int] = Counter(int(t - start) for t in times)
    return [[float(s), float(bins.get(s, 0))] for s in range(max(bins, default=-1) + 1)]


def _cpu_line(meter: CpuMeter) -> str:
    shares = meter.shares()
    if not shares:
        return "too short to read"
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())


def _broker_pid(stack: Stack) -> tuple[str, int] | None:
    pids = stack.pids()
    for name in ("mosquitto", "messenger serve"):
        if name in pids:
            return name, pids[name]
    return None


@dataclass
class _Phase:
    """What one connect-rate pass measured, over every client process."""

    attempted: int = 0
    #: distinct users among the attempts
    users: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def rate(self) -> float:
        return self.accepted / (self.ended - self.started) if self.ended > self.started else 0.0


# --- 1. connect rate ------------------------------------------------------------------------------


def measure_rate(
    stack: Stack, args: argparse.Namespace, progress: Progress, result: Result, meter: CpuMeter, tag: str
) -> None:
    n = args.connects
    procs = max(1, min(args.connect_procs, n))
    uids = [f"bc{i}-{tag}" for i in range(n)]
    pool = _Pool(
        "connect client",
        rate_child,
        [
            (stack.mqtt_port, stack.secret, uids[k::procs], args.connect_in_flight, args.connack_timeout)
            for k in range(procs)
        ],
    )
    try:
        progress.step(f"connect on {stack.name}: signing {n:,} tokens")
        pool.gather("ready", 120)
        for label in ("first connect", "reconnect"):
            progress.step(f"connect on {stack.name}: {label}s")
            phase_meter = CpuMeter(stack.pids() | pool.pids())
            meter.add(pool.pids())
            done = [0] * procs
            start = time.monotonic()

            def on_progress(
                i: int, message: tuple[Any, ...], done: list[int] = done, t0: float = start
            ) -> None:
                done[i] = message[1]
                total = sum(done)
                elapsed = time.monotonic() - t0
                progress.update(total, n, f"{total:,}/{n:,}  {total / elapsed if elapsed else 0:,.0f}/s")

            phase_meter.start()
            meter.start()
            pool.send_all(("run", None if label == "first connect" else RECONNECT_FRESH_S))
            try:
                outcomes = pool.gather("done", args.connack_timeout + 60 + n / 20, on_progress)
            finally:
                meter.stop()
                phase_meter.stop()
            phase = _Phase(started=start)
            for o in outcomes:
                phase.attempted += o["attempted"]
                phase.users += o["users"]
                phase.accepted += o["accepted"]
                phase.refused.update(o["refused"])
                phase.failed.update(o["failed"])
                phase.latencies_ms += o["latencies_ms"]
                phase.times += o["times"]
                phase.ended = max(phase.ended, o["ended"])
            _report_rate(result, label, phase, n, phase_meter)
    finally:
        pool.close()


def _report_rate(result: Result, label: str, phase: _Phase, n: int, meter: CpuMeter) -> None:
    lat = sorted(phase.latencies_ms)
    title = "first connects" if label == "first connect" else "reconnects"
    result.row(f"{title}/s", round(phase.rate, 1), "/s", RATE_TARGET)
    result.row(f"{title}: accepted", phase.accepted, f"of {phase.attempted:,}")
    result.row(f"{title}: CONNACK p50", percentile(lat, 0.5), "ms")
    result.row(f"{title}: CONNACK p99", percentile(lat, 0.99), "ms")
    bad = sum(phase.refused.values()) + sum(phase.failed.values())
    result.row(f"{title}: refused or failed", bad)
    result.check(
        f"every {label} accepted ({phase.accepted:,} of {phase.attempted:,}, {n:,} asked)",
        phase.accepted == phase.attempted == n and not bad,
    )
    if label == "reconnect":
        result.notes.append(
            f"reconnects: {phase.attempted:,} CONNECTs cycling over the {phase.users:,} users whose first "
            f"connect was at most {RECONNECT_FRESH_S:g} s old (the Mosquitto plugin caches answers 30 s)"
        )
    for what, counter in (("refused", phase.refused), ("failed", phase.failed)):
        if counter:
            detail = ", ".join(f"{reason}: {k}" for reason, k in counter.most_common(5))
            result.notes.append(f"{title} {what}: {detail}")
    result.notes.append(f"CPU during the {title} (share of one core): {_cpu_line(meter)}")
    result.series.setdefault("latency_ms", {})[f"CONNACK ({label})"] = _sample(phase.latencies_ms)
    series_name = "connects/s" if label == "first connect" else "connects/s (reconnect)"
    result.series.setdefault("throughput", {})[series_name] = _per_second(phase.times, phase.started)


# --- 2. idle connections --------------------------------------------------------------------------


def measure_idle(
    stack: Stack, args: argparse.Namespace, progress: Progress, result: Result, meter: CpuMeter, tag: str
) -> None:
    n = args.idle
    procs = args.idle_procs or max(2, math.ceil(n / MAX_IDLE_PER_PROC))
    procs = max(1, min(procs, n))
    uids = [f"bi{i}-{tag}" for i in range(n)]
    in_flight = 32
    pool = _Pool(
        "idle client",
        idle_child,
        [
            (stack.mqtt_port, stack.secret, uids[k::procs], in_flight, args.connack_timeout)
            for k in range(procs)
        ],
    )
    reader = PresenceReader(stack, uids, stack.secret)
    broker = _broker_pid(stack)
    stopped = False
    try:
        progress.step(f"connect on {stack.name}: {n:,} idle clients starting")
        clients_rss0 = sum(r or 0 for r in pool.gather("ready", 120))
        broker_rss0 = rss_kib(broker[1]) if broker else None
        phase_meter = CpuMeter(stack.pids() | pool.pids())
        meter.add(pool.pids())
        progress.step(f"connect on {stack.name}: {n:,} idle connections")
        counts = [(0, 0)] * procs
        moved = [time.monotonic(), 0]
        start = time.monotonic()

        def on_progress(i: int, message: tuple[Any, ...]) -> None:
            counts[i] = (message[1], message[2])
            online, failed = sum(c[0] for c in counts), sum(c[1] for c in counts)
            if online + failed != moved[1]:
                moved[:] = [time.monotonic(), online + failed]
            elapsed = time.monotonic() - start
            progress.update(
                online + failed, n, f"{online:,} online, {failed:,} failed  {online / elapsed:,.0f}/s"
            )

        def stalled() -> None:
            if time.monotonic() - moved[0] > STALL_S + args.connack_timeout:
                raise PhaseError(
                    f"idle connections stalled at {moved[1]:,} of {n:,} (nothing for {STALL_S:g} s)"
                )
            if broker is not None and broker[0] not in stack.pids():
                raise PhaseError(f"{broker[0]} exited with {moved[1]:,} of {n:,} clients connected")

        phase_meter.start()
        meter.start()
        pool.send_all("go")
        try:
            summaries = pool.gather("connected", args.idle_timeout, on_progress, stalled)
        except PhaseError as exc:
            online = sum(c[0] for c in counts)
            result.row("idle connections held", online, "", IDLE_TARGET)
            result.check(f"all idle clients connected and online: {exc}", False)
            return
        finally:
            meter.stop()
            phase_meter.stop()
        online, ended = _report_connected(result, summaries, n, start, phase_meter)
        _check_mirrored(result, reader, progress, online, start, ended)
        broker_rss1 = rss_kib(broker[1]) if broker else None
        if broker is not None and broker_rss0 is not None and broker_rss1 is not None:
            result.row(f"{broker[0]} RSS before", round(broker_rss0 / 1024, 1), "MiB")
            result.row(f"{broker[0]} RSS holding them", round(broker_rss1 / 1024, 1), "MiB")
            if online:
                per = (broker_rss1 - broker_rss0) / online
                result.row("broker memory per connection", round(per, 1), "KiB")
        if online:
            clients_rss1 = sum(s["rss_kib"] or 0 for s in summaries)
            per = (clients_rss1 - clients_rss0) / online
            result.row("bench client memory per connection", round(per, 1), "KiB")
        held = _hold(result, pool, progress, online, args.hold)

        progress.step(f"connect on {stack.name}: {held:,} clients announcing offline, disconnecting")
        pool.send_all("stop")
        stops = pool.gather("stopped", max(60.0, args.connack_timeout + 30))
        stopped = True
        acked = sum(s[0] for s in stops)
        result.check(
            f"every idle client announced offline and disconnected ({acked:,} of {held:,})", acked == held
        )
        if reader.redis is not None:
            gone, _ = wait_until(lambda: online - reader.online(), online, 30)
            if gone != online:
                result.notes.append(
                    f"{online - gone:,} devices still online in Redis 30 s after they went offline"
                )
    finally:
        if not stopped:
            with contextlib.suppress(PhaseError):
                pool.send_all("stop")
                pool.gather("stopped", 30)
        pool.close()
        with contextlib.suppress(redis.RedisError):
            reader.forget()
        reader.close()


def _report_connected(
    result: Result, summaries: list[dict[str, Any]], n: int, start: float, meter: CpuMeter
) -> tuple[int, float]:
    """Rows for the idle clients' connecting: ``(how many are online, when the last got its PUBACK)``."""
    online = sum(s["online"] for s in summaries)
    failed = sum(s["failed"] for s in summaries)
    ended = max(s["ended"] for s in summaries)
    elapsed = ended - start
    failures: Counter[str] = Counter()
    times: list[float] = []
    latencies: list[float] = []
    for s in summaries:
        failures.update(s["failures"])
        times += s["times"]
        latencies += s["latencies_ms"]
    result.check(f"every idle client connected and announced online ({online:,} of {n:,})", online == n)
    if failures:
        result.notes.append(
            f"idle clients failed ({failed:,}): "
            + ", ".join(f"{why}: {k}" for why, k in failures.most_common(5))
        )
    result.row("idle: time to connect all", round(elapsed, 2), "s")
    result.row(
        "idle: connects/s (Will + online presence)", round(online / elapsed, 1) if elapsed else None, "/s"
    )
    result.row("idle: CONNECT to presence PUBACK p99", percentile(sorted(latencies), 0.99), "ms")
    result.series.setdefault("latency_ms", {})["CONNECT to online PUBACK (idle)"] = _sample(latencies)
    result.series.setdefault("throughput", {})["idle connects/s (with presence)"] = _per_second(times, start)
    result.notes.append(f"CPU while connecting the idle clients (share of one core): {_cpu_line(meter)}")
    return online, ended


def _check_mirrored(
    result: Result, reader: PresenceReader, progress: Progress, online: int, start: float, ended: float
) -> None:
    """Wait until the presence store shows every online device; how long after the last PUBACK."""
    progress.step(f"presence of {online:,} devices in {reader.where.split(' ')[0]}")
    try:
        mirrored, reached = wait_until(reader.online, online, MIRROR_TIMEOUT_S)
    except (redis.RedisError, httpx.HTTPError) as exc:
        mirrored, reached = 0, None
        result.notes.append(f"could not read presence: {type(exc).__name__}: {exc}")
    result.row(f"idle: online in {'Redis' if reader.redis else 'presence (REST)'}", mirrored)
    lag = None if reached is None else round(max(0.0, reached - ended), 2)
    result.row("idle: presence all mirrored, after the last PUBACK", lag, "s")
    result.check(
        f"every online presence shows in {reader.where} ({mirrored:,} of {online:,}"
        f"{'' if reached is not None else f', waited {MIRROR_TIMEOUT_S:g} s'})",
        mirrored == online and reached is not None,
    )
    if reached is not None:
        result.notes.append(
            f"all {mirrored:,} devices online in {reader.where} {reached - start:.1f} s after the first "
            f"idle CONNECT ({ended - start:.1f} s to connect them; polled every 0.25 s)"
        )


def _hold(result: Result, pool: _Pool, progress: Progress, online: int, hold: float) -> int:
    """Keep the connections ``hold`` seconds, then count those still there."""
    progress.step(f"holding {online:,} connections {hold:g} s")
    hold_until = time.monotonic() + hold
    while (left := hold_until - time.monotonic()) > 0:
        progress.update(hold - left, hold)
        time.sleep(min(left, 0.2))
    pool.send_all("status")
    statuses = pool.gather("status", 30)
    held = sum(s[0] for s in statuses)
    lost = sum(s[1] for s in statuses)
    result.row("idle connections held", held, "", IDLE_TARGET)
    result.check(
        f"all {online:,} idle connections still held after {hold:g} s ({lost} lost)",
        held == online and not lost,
    )
    return int(held)


# --- the scenario ---------------------------------------------------------------------------------


def run(stack: Stack, args: argparse.Namespace, progress: Progress) -> Result:
    for name, value in (DEFAULTS if not args.quick else QUICK).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    result = Result("connect", stack.name, stack.describe())
    tag = uuid.uuid4().hex[:8]
    result.params = {
        "connects": args.connects,
        "connect_procs": args.connect_procs,
        "connect_in_flight": args.connect_in_flight,
        "idle": args.idle,
        "idle_procs": args.idle_procs or max(2, math.ceil(args.idle / MAX_IDLE_PER_PROC)),
        "hold_s": args.hold,
        "users": f"bc<n>-{tag} (connect rate), bi<n>-{tag} (idle)",
    }
    meter = CpuMeter(stack.pids())
    for part in (measure_rate, measure_idle):
        try:
            part(stack, args, progress, result, meter, tag)
        except PhaseError as exc:
            result.check(f"{part.__name__.replace('_', ' ')}: {exc}", False)
    result.cpu = meter.shares()
    if stack.name == "production":
        result.notes.append(
            "Mosquitto asks the API's /mqtt/user about every uncached CONNECT on its one network "
            "thread, so first connects go one gateway round trip at a time; reconnects with the "
            "same token are answered from the plugin's cache (30 s)"
        )
    else:
        result.notes.append(
            "the embedded broker verifies the token and admits the user (one database transaction) "
            "on every CONNECT, first or not; presence is in process, read through the REST API"
        )
    return result


SCENARIO = Scenario(
    name="connect",
    summary="authenticated CONNECTs/s (first and repeat), and idle connections held with presence mirrored",
    add_arguments=add_arguments,
    run=run,
)
