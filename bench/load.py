"""The load generator of the relay and pipeline scenarios: publisher and subscriber processes.

Each process drives its paho clients (MQTT 3.1.1, QoS 1, up to 1,000 publishes in flight per
client, TCP_NODELAY) from one thread with paho's external-loop API, so a few processes carry
the whole load without a network thread per client. The parent talks to them over pipes:

- a **publisher** connects its clients and, per step, publishes at a fixed rate for a fixed
  time (open loop: the schedule does not wait for the system), each message carrying its client
  id ``{tag}.{process}.{n}`` and its send time (``time.monotonic_ns()``, one clock for every
  process of the machine) in ``body``; then it waits for the broker's PUBACKs and reports what
  it sent;
- a **subscriber** connects its clients, subscribes each to ``users/{uid}/messages``, and
  records every message it gets: client id, send and receive time. The parent collects and
  clears these after each step; duplicates and missing messages are found by client id.

The two modes differ only in what is published: ``pipeline`` publishes ``message`` commands to
``inbound/{sender}`` (the handler stores and delivers them); ``relay`` publishes, as the service
account, a delivered-message payload of the same shape straight to ``users/{recipient}/messages``
(no handler, no database).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import selectors
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bench.procstat import raise_fd_limit, reap
from messenger.mqtt import no_delay as socket_no_delay

HOST = "127.0.0.1"
INFLIGHT = 1000


class LoadError(Exception):
    """A load process could not connect or subscribe, or stopped answering."""


@dataclass(frozen=True)
class Identity:
    """One MQTT client of the load: its user, token, and (for publishers) where it sends."""

    user: str
    token: str
    #: publishers: the recipient of everything this client sends
    peer: str = ""


@dataclass
class StepReport:
    """What the publishers sent in one step, and what the subscribers got."""

    offered_rate: float
    duration_s: float
    t0_ns: int
    sent: int = 0
    acked: int = 0
    #: per received message: client id, send time, receive time (ns, monotonic)
    ids: list[str] = field(default_factory=list)
    sent_ns: array[int] = field(default_factory=lambda: array("q"))
    recv_ns: array[int] = field(default_factory=lambda: array("q"))
    #: error events the senders got (pipeline), and messages the subscribers could not read
    errors: int = 0
    foreign: int = 0
    lost_connections: int = 0


# --- one threaded client (the fan-out's creator and probe) --------------------------------------


def no_delay(client: mqtt.Client) -> None:
    """TCP_NODELAY on the client's socket, as the product's service clients have it: with Nagle
    on, a PUBLISH sent right after a PUBACK waits for the broker's delayed ACK (40 ms on Linux),
    which a latency probe would count as the product's latency."""
    client.on_socket_open = socket_no_delay


def open_client(
    port: int,
    user: str,
    suffix: str,
    on_message: Callable[..., None],
    topic: str,
    timeout: float,
    *,
    token: str,
    nodelay: bool = False,
) -> mqtt.Client:
    """A connected paho client (own network thread) subscribed to ``topic`` at QoS 1."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{user}/{suffix}", protocol=mqtt.MQTTv311, clean_session=True
    )
    client.username_pw_set(user, token)
    client.max_inflight_messages_set(INFLIGHT)
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
                raise LoadError(f"{user}: CONNECT {connacks[0] if connacks else 'got no CONNACK'}")
        client.subscribe(topic, qos=1)
        with changed:
            if not changed.wait_for(lambda: subacks, timeout) or subacks[0][0].is_failure:
                raise LoadError(f"{user}: SUBSCRIBE {topic} {subacks[0] if subacks else 'got no SUBACK'}")
    except BaseException:
        client.disconnect()
        client.loop_stop()
        raise
    return client


# --- inside the child processes -------------------------------------------------------------------


def external_loop_client(user: str, suffix: str, token: str, userdata: Any = None) -> mqtt.Client:
    """A paho MQTT 3.1.1 clean-session client ``{user}/{suffix}`` without a network thread or
    reconnects: a load process drives thousands of them from one selector (``loop_read``,
    ``loop_write``, ``loop_misc``)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{user}/{suffix}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
        userdata=userdata,
        reconnect_on_failure=False,
    )
    client.username_pw_set(user, token)
    return client


class _Loop:
    """Paho clients on one selector: connect them, pump their sockets, notice lost ones."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.clients: list[mqtt.Client] = []
        self.pending: set[int] = set()  # indexes still waiting for CONNACK (and SUBACK)
        self.failures: list[str] = []
        self.failed: set[int] = set()  # indexes of the clients in failures
        self.lost = 0
        self._last_misc = time.monotonic()

    def add(
        self,
        ident: Identity,
        suffix: str,
        subscribe: str | None,
        on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None] | None,
        on_publish: Callable[..., None] | None = None,
    ) -> None:
        index = len(self.clients)
        client = external_loop_client(ident.user, suffix, ident.token, index)
        client.max_inflight_messages_set(INFLIGHT)
        client.max_queued_messages_set(0)

        def on_connect(c: mqtt.Client, idx: int, _f: object, reason: ReasonCode, _p: object) -> None:
            if reason.is_failure:
                self.failures.append(f"{ident.user}: CONNECT {reason}")
                self.failed.add(idx)
                self.pending.discard(idx)
            elif subscribe:
                c.subscribe(subscribe, qos=1)
            else:
                self.pending.discard(idx)

        def on_subscribe(_c: object, idx: int, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
            if reasons[0].is_failure:
                self.failures.append(f"{ident.user}: SUBSCRIBE {subscribe} {reasons[0]}")
                self.failed.add(idx)
            self.pending.discard(idx)

        no_delay(client)
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        if on_message is not None:
            client.on_message = on_message
        if on_publish is not None:
            client.on_publish = on_publish
        self.clients.append(client)
        self.pending.add(index)
        try:
            client.connect(HOST, self.port, keepalive=120)
        except OSError as exc:
            self.failures.append(f"{ident.user}: {type(exc).__name__}: {exc}")
            self.failed.add(index)
            self.pending.discard(index)
            return
        sock = client.socket()
        assert sock is not None  # noqa: S101 - connect() succeeded
        self.sel.register(sock, selectors.EVENT_READ, client)

    def pump(self, timeout: float) -> None:
        """Read what arrived (up to ``timeout`` s for something to), write what is queued."""
        for key, _ in self.sel.select(timeout=timeout):
            client = key.data
            if client.loop_read(max_packets=1000) != mqtt.MQTT_ERR_SUCCESS or client.socket() is None:
                self._drop(client, key.fileobj)
        for client in self.clients:
            if client.want_write():  # PUBACKs, SUBSCRIBEs from callbacks, publishes that did not fit
                client.loop_write()
        now = time.monotonic()
        if now - self._last_misc > 1.0:  # keepalive PINGREQs and QoS 1 retries
            self._last_misc = now
            for client in self.clients:
                if client.socket() is not None and client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                    self.lost += 1

    def _drop(self, client: mqtt.Client, fileobj: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(fileobj)
        self.lost += 1
        index = client.user_data_get()
        if index not in self.failed:  # a refused CONNECT is followed by the broker closing
            self.failed.add(index)
            self.failures.append(f"{client._client_id.decode()}: connection lost")
        self.pending.discard(index)

    def wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self.pump(0.05)
        for idx in self.pending:
            self.failures.append(
                f"{self.clients[idx]._client_id.decode()}: no CONNACK/SUBACK in {timeout:g} s"
            )
            self.failed.add(idx)

    @property
    def connected(self) -> int:
        return len(self.clients) - len(self.failed)

    def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.disconnect()  # written at once: there is no network thread
        self.sel.close()


def publisher_main(
    conn: Connection, port: int, mode: str, idents: list[Identity], tag: str, counter: Synchronized[int]
) -> None:
    """One publisher process; see the module docstring for its commands."""
    raise_fd_limit()
    loop = _Loop(port)
    acked = [0]
    errors = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1

    def on_event(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if b'"error"' in msg.payload:
            errors[0] += 1

    for ident in idents:
        events = f"users/{ident.user}/events" if mode == "pipeline" else None
        loop.add(ident, f"load-{tag}", events, on_event, on_publish)
    loop.wait_connected(30)
    conn.send(("ready", loop.connected, loop.failures[:5]))
    clients = loop.clients
    topics = [f"inbound/{i.user}" if mode == "pipeline" else f"users/{i.peer}/messages" for i in idents]
    seq = 0
    try:
        while True:
            while not conn.poll(0):
                loop.pump(0.05)
            command = conn.recv()
            if command[0] == "stop":
                return
            _, rate, duration, t0_ns = command
            total = int(rate * duration)
            sent = 0
            acked[0] = errors[0] = 0
            lost0 = loop.lost
            while sent < total:
                now = time.monotonic_ns()
                due = min(total, int((now - t0_ns) / 1e9 * rate)) if now >= t0_ns else 0
                while sent < due:
                    n = sent % len(clients)
                    ident = idents[n]
                    cid = f"{tag}.{seq}"
                    seq += 1
                    body = str(time.monotonic_ns())
                    if mode == "pipeline":
                        payload = f'{{"type":"message","id":"{cid}","to":"{ident.peer}","body":"{body}"}}'
                    else:
                        payload = json.dumps(_relay_message(cid, ident.user, ident.peer, body))
                    clients[n].publish(topics[n], payload, qos=1)
                    sent += 1
                    counter.value += 1
                    if sent % 64 == 0:
                        loop.pump(0)  # PUBACKs and deliveries keep flowing while we publish
                if sent < total:
                    wait = (t0_ns + (sent + 1) / rate * 1e9 - time.monotonic_ns()) / 1e9
                    loop.pump(max(0.0, min(wait, 0.005)))
            deadline = time.monotonic() + max(10.0, duration)
            while acked[0] < sent and time.monotonic() < deadline and loop.lost == lost0:
                loop.pump(0.01)
            conn.send(("sent", sent, acked[0], errors[0], loop.lost - lost0))
    finally:
        loop.close()


def _relay_message(cid: str, sender: str, recipient: str, body: str) -> dict[str, Any]:
    """What the handler would publish for a message: same fields, same size."""
    return {
        "type": "message",
        "id": 1_000_000,
        "client_id": cid,
        "from": sender,
        "to": recipient,
        "body": body,
        "sent_at": "2026-01-01T00:00:00.000000Z",
        "read_at": None,
        "tip": None,
        "list": None,
    }


def subscriber_main(
    conn: Connection, port: int, idents: list[Identity], tag: str, counter: Synchronized[int]
) -> None:
    """One subscriber process; see the module docstring for its commands."""
    raise_fd_limit()
    loop = _Loop(port)
    ids: list[str] = []
    sent_ns = array("q")
    recv_ns = array("q")
    foreign = [0]

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic_ns()
        try:
            data = json.loads(msg.payload)
            cid = data["client_id"]
            sent = int(data["body"])
        except (ValueError, KeyError, TypeError):
            foreign[0] += 1
            return
        ids.append(cid)
        sent_ns.append(sent)
        recv_ns.append(now)
        counter.value += 1

    for ident in idents:
        loop.add(ident, f"recv-{tag}", f"users/{ident.user}/messages", on_message)
    loop.wait_connected(30)
    conn.send(("ready", loop.connected, loop.failures[:5]))
    lost_reported = 0  # connections lost, as told to the parent so far
    try:
        while True:
            while not conn.poll(0):
                loop.pump(0.02)
            command = conn.recv()
            if command[0] == "stop":
                return
            # "collect": hand over what arrived since the last collect
            conn.send(("collected", ids[:], sent_ns, recv_ns, foreign[0], loop.lost - lost_reported))
            lost_reported = loop.lost
            ids.clear()
            sent_ns = array("q")
            recv_ns = array("q")
            foreign[0] = 0
    finally:
        loop.close()


# --- in the parent --------------------------------------------------------------------------------


class _Proc:
    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # no copy of the parent's threads or pools
        self.counter: Synchronized[int] = ctx.Value("q", 0, lock=False)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args, self.counter), daemon=True)
        self.proc.start()
        child.close()

    def recv(self, timeout: float, what: str) -> Any:
        if not self.conn.poll(timeout):
            raise LoadError(f"a load process did not answer within {timeout:g} s ({what})")
        try:
            return self.conn.recv()
        except EOFError as exc:
            raise LoadError(f"a load process exited ({what})") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop",))
        reap(self.proc)
        self.conn.close()


def _split(items: list[Identity], parts: int) -> list[list[Identity]]:
    return [chunk for chunk in (items[i::parts] for i in range(parts)) if chunk]


class _Pool:
    """Load processes that have connected ``expected`` clients between them (else closed and
    LoadError), each counting what it did in a shared counter."""

    def __init__(self, procs: list[_Proc], expected: int, what: str, name: str) -> None:
        self.procs, self.name = procs, name
        try:
            _ready(self.procs, expected, what)
        except BaseException:
            self.close()
            raise

    @property
    def counted(self) -> int:
        return sum(p.counter.value for p in self.procs)

    def pids(self) -> dict[str, int]:
        return {f"bench {self.name} {n}": p.proc.pid for n, p in enumerate(self.procs, 1) if p.proc.pid}

    def close(self) -> None:
        for p in self.procs:
            p.close()


class Subscribers(_Pool):
    """The receiving clients, over ``procs`` processes."""

    def __init__(self, port: int, idents: list[Identity], procs: int, tag: str) -> None:
        parts = _split(idents, procs)
        procs_ = [_Proc(subscriber_main, port, part, tag) for part in parts]
        super().__init__(procs_, len(idents), "subscribers", "subscriber")

    @property
    def received(self) -> int:
        return self.counted

    def collect(self, report: StepReport) -> None:
        for p in self.procs:
            p.conn.send(("collect",))
        for p in self.procs:
            _, ids, sent_ns, recv_ns, foreign, lost = p.recv(60, "collect")
            report.ids.extend(ids)
            report.sent_ns.extend(sent_ns)
            report.recv_ns.extend(recv_ns)
            report.foreign += foreign
            report.lost_connections += lost


class Publishers(_Pool):
    """The sending clients, over ``procs`` processes; ``run_step`` is one timed step."""

    def __init__(self, port: int, mode: str, idents: list[Identity], procs: int, tag: str) -> None:
        self.mode = mode
        parts = _split(idents, procs)
        procs_ = [_Proc(publisher_main, port, mode, part, f"{tag}{n}") for n, part in enumerate(parts)]
        super().__init__(procs_, len(idents), f"{mode} publishers", "publisher")

    @property
    def sent(self) -> int:
        return self.counted

    def run_step(
        self,
        subscribers: Subscribers,
        rate: float,
        duration: float,
        drain_s: float,
        on_progress: Callable[[int, int, int], None],
    ) -> StepReport:
        """Offer ``rate`` messages/s for ``duration`` s, wait (up to ``drain_s`` after the last
        publish) until the subscribers got them all, and collect the step."""
        t0 = time.monotonic_ns() + 200_000_000  # every process starts on the same tick
        report = StepReport(offered_rate=rate, duration_s=duration, t0_ns=t0)
        share = rate / len(self.procs)
        sent0, received0 = self.sent, subscribers.received
        for p in self.procs:
            p.conn.send(("go", share, duration, t0))
        total = sum(int(share * duration) for _ in self.procs)
        answers: list[Any] = []
        deadline = time.monotonic() + duration + 0.2 + max(30.0, duration * 3)
        while len(answers) < len(self.procs):
            for p in self.procs:
                if p.conn.poll(0):
                    answers.append(p.recv(1, "step"))
            if time.monotonic() > deadline:
                raise LoadError(f"the publishers did not finish a {duration:g} s step")
            on_progress(self.sent - sent0, subscribers.received - received0, total)
            time.sleep(0.05)
        for _, sent, acked, errors, lost in answers:
            report.sent += sent
            report.acked += acked
            report.errors += errors
            report.lost_connections += lost
        drain_until = time.monotonic() + drain_s
        while subscribers.received - received0 < report.sent and time.monotonic() < drain_until:
            on_progress(report.sent, subscribers.received - received0, total)
            time.sleep(0.02)
        time.sleep(0.1)  # duplicates (QoS 1 redeliveries) just behind the last message
        subscribers.collect(report)
        return report


def _ready(procs: list[_Proc], expected: int, what: str) -> None:
    connected = 0
    failures: list[str] = []
    for p in procs:
        _, ok, some = p.recv(60, f"{what} connecting")
        connected += ok
        failures.extend(some)
    if connected < expected:
        raise LoadError(f"{what}: {connected}/{expected} connected; {'; '.join(failures[:5])}")
