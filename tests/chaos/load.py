"""The chaos suite's load: senders, recipients, a creator, and the bookkeeping of every command.

A :class:`Load` sends a steady stream of ``message`` commands at a fixed rate from 20 member
senders (over MQTT, a share of them over ``POST /v1/messages``) to 10 connected recipients,
tips from the senders to a creator, and one mass message from the creator to a list of members
(the recipients among them). It behaves as the protocol asks a client to (docs/protocol.md,
"Delivery semantics"): every command has its own ``id``; one that got no ``ack`` is sent again
with the same ``id`` (after ``resend_after_s``, then every ``resend_every_s``, at most
``max_resends`` times); a ``rate_limited`` or retryable error is sent again when it says; a REST
request is repeated with the same ``client_id`` until it gets an answer. The clients reconnect
by themselves (a restarted broker) and subscribe again.

After the load, :meth:`Load.settle` waits (bounded) for the outstanding acks, and
:meth:`Load.catch_up` asks every recipient's messages again with ``sync`` (from id 0, page by
page), so that a message missed live (a broker restart) still counts as delivered, late.
:func:`count` then makes the count table from what the clients saw, the database and the fake
billing service's records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from messenger.db import unit_of_work
from messenger.models import MassMessage, Message, Tip
from tests.conftest import token
from tests.fakes import FakeServices

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
CURRENCY = "USD"
#: errors after which a client sends the same command again (docs/protocol.md, error codes)
RETRYABLE = frozenset({"rate_limited", "internal_error", "service_unavailable", "unavailable"})
SENDERS = 20
RECIPIENTS = 10
REST_WORKERS = 4
CONNECT_TIMEOUT_S = 30.0
#: the smallest tip amount; tip k is ``TIP_BASE + k``, so each charge names its tip
TIP_BASE = 100


@dataclass(frozen=True)
class Scale:
    """How much load, how long the faults last, and how patient the clients are."""

    name: str
    #: 1:1 messages and tips, sent at ``rate`` per second
    messages: int
    rate: float
    #: how long an outage lasts (a database or Redis stopped, billing failing, a handler gone)
    outage_s: float
    #: members of the mass message's list (the recipients and others never connected)
    members: int
    #: tips among the ``messages``
    tips: int
    #: every ``rest_every``-th 1:1 message goes over REST (0: none)
    rest_every: int
    resend_after_s: float
    resend_every_s: float
    max_resends: int
    #: the bound on waiting for the outstanding acks after the load
    settle_s: float
    #: stop waiting earlier when every outstanding command has used its resends and nothing
    #: was acknowledged for this long (longer than an outage) ...
    quiet_s: float
    #: ... or for this long while a tip is still pending in the database: longer than a tip's
    #: settlement lease (60 s, LEASE_S in messenger/tipping.py), since a settlement cut short by
    #: a fault is tried again only when its lease runs out
    lease_quiet_s: float

    @property
    def duration_s(self) -> float:
        return self.messages / self.rate


SCALES = {
    # the default run (make test, .ci/run): a few minutes for every scenario together
    "short": Scale(
        "short", messages=1_000, rate=100, outage_s=5, members=200, tips=40, rest_every=10,
        resend_after_s=5, resend_every_s=5, max_resends=4, settle_s=120,
        quiet_s=20, lease_quiet_s=75,
    ),
    # release checks (make chaos): the 10,000 messages and 30 s outages
    "full": Scale(
        "full", messages=10_000, rate=200, outage_s=30, members=1_000, tips=200, rest_every=10,
        resend_after_s=5, resend_every_s=15, max_resends=4, settle_s=300,
        quiet_s=45, lease_quiet_s=90,
    ),
}  # fmt: skip


@dataclass
class Command:
    """One command a client sent, and what became of it."""

    cid: str
    #: "mqtt" (1:1 over MQTT), "rest" (1:1 over REST), "tip", "mass"
    kind: str
    sender: str
    #: the recipient (1:1, tip) or the list id (mass)
    to: str
    body: str
    amount: int | None = None
    first_sent: float | None = None
    last_sent: float = 0.0
    #: sends again because no ack came (bounded by ``max_resends``)
    resends: int = 0
    #: sends again that the server asked for (``rate_limited``, a retryable error, a REST failure)
    retries: int = 0
    #: send again at this time (set by a retryable error)
    retry_at: float | None = None
    #: when the final answer came: ``ack`` ``sent`` (or the REST 200/201)
    acked: float | None = None
    #: a tip acked ``pending`` (its settlement follows) / a mass message acked ``queued``
    pending: bool = False
    queued: bool = False
    duplicate_acks: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: a final refusal (an error no resend fixes, ``tip_failed``)
    failed: str | None = None

    @property
    def done(self) -> bool:
        return self.acked is not None or self.failed is not None

    def payload(self) -> bytes:
        command: dict[str, Any] = {"type": "message", "id": self.cid, "body": self.body}
        if self.kind == "mass":
            command["list"] = self.to
        else:
            command["to"] = self.to
        if self.amount is not None:
            command["tip"] = {"amount": self.amount, "currency": CURRENCY}
        return json.dumps(command).encode()


@dataclass
class Receipt:
    """A message a recipient got: when first, how often, and how (live or by the catch-up)."""

    first: float
    server_id: int
    live: bool
    copies: int = 1


class Client:
    """One paho client of one user (MQTT 3.1.1, clean session, QoS 1) that reconnects by itself
    and subscribes again on every connect; ``on_json`` gets every JSON payload with its topic."""

    def __init__(
        self, port: int, user: str, role: Role, topics: list[str], on_json: Callable[[str, Any], None]
    ) -> None:
        self.user = user
        self.topics = topics
        self.on_json = on_json
        self.connects = 0
        self._subscribed = threading.Event()
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user}/chaos",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self.paho.username_pw_set(user, token(user, role))
        self.paho.max_inflight_messages_set(200)
        self.paho.max_queued_messages_set(0)  # nothing dropped while the broker is away
        self.paho.reconnect_delay_set(min_delay=1, max_delay=2)
        self.paho.on_connect = self._on_connect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message
        self.port = port

    def connect(self) -> None:
        self.paho.connect(HOST, self.port, keepalive=30)
        self.paho.loop_start()
        if not self._subscribed.wait(CONNECT_TIMEOUT_S):
            raise AssertionError(f"{self.user}: not connected and subscribed within {CONNECT_TIMEOUT_S:g}s")

    def publish(self, topic: str, payload: bytes) -> None:
        # while the broker is away paho keeps it and sends it on the reconnect
        self.paho.publish(topic, payload, qos=1)

    def drop(self) -> None:
        """Cut the connection under paho, as a network failure does: paho reconnects by itself."""
        sock = self.paho.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def _on_connect(self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            return  # paho tries again (a restarting API refuses CONNECTs for a moment)
        self.connects += 1
        self.paho.subscribe([(topic, 1) for topic in self.topics])

    def _on_subscribe(self, _c: object, _u: object, _mid: int, codes: list[ReasonCode], _p: object) -> None:
        if not any(code.is_failure for code in codes):
            self._subscribed.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        self.on_json(msg.topic, data)


class Load:
    """The users, their clients and every command's record; see the module docstring."""

    def __init__(
        self,
        scale: Scale,
        *,
        mqtt_port: int,
        api_url: str,
        fake: FakeServices,
        sessions: sessionmaker[Session],
        run: str | None = None,
    ) -> None:
        self.scale = scale
        self.mqtt_port = mqtt_port
        self.api_url = api_url
        self.fake = fake
        self.sessions = sessions
        run = run or uuid.uuid4().hex[:6]
        self.senders = [f"snd{n:02d}-{run}" for n in range(SENDERS)]
        self.recipients = [f"rcv{n:02d}-{run}" for n in range(RECIPIENTS)]
        self.creator = f"creator-{run}"
        self.list_id = f"fans-{run}"
        self.members = self.recipients + [f"fan{n:04d}-{run}" for n in range(scale.members - RECIPIENTS)]
        self.lock = threading.Lock()
        self.commands: dict[str, Command] = {}
        self.plan = self._plan(run)
        #: what each connected recipient (and the creator) got, by (sender, client id)
        self.received: dict[str, dict[tuple[str, str], Receipt]] = {}
        self.catching_up = False
        self.synced: dict[str, queue.Queue[dict[str, Any]]] = {}
        self.last_progress = time.monotonic()
        self.load_started = 0.0
        self.clients: dict[str, Client] = {}
        self._rest_queue: queue.Queue[Command | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.catch_up_incomplete: list[str] = []
        #: MQTT commands sent and not answered yet (what the resender looks at)
        self._open: list[Command] = []

    # --- the plan ---

    def _plan(self, run: str) -> list[Command]:
        """The commands in send order: tips spread evenly, the mass message a fifth of the way in."""
        scale = self.scale
        tip_every = max(1, scale.messages // scale.tips) if scale.tips else 0
        plan: list[Command] = []
        tips = 0
        for n in range(scale.messages):
            sender = self.senders[n % SENDERS]
            if tip_every and n % tip_every == tip_every // 2 and tips < scale.tips:
                payer = self.senders[tips % SENDERS]  # every sender tips, each now and then
                plan.append(
                    Command(f"t{n}-{run}", "tip", payer, self.creator, f"tip {n}", amount=TIP_BASE + tips)
                )
                tips += 1
                continue
            kind = "rest" if scale.rest_every and n % scale.rest_every == 0 else "mqtt"
            # consecutive messages go to different recipients, and each sender writes to all
            recipient = self.recipients[(n + n // SENDERS) % RECIPIENTS]
            plan.append(Command(f"m{n}-{run}", kind, sender, recipient, f"message {n}"))
        mass = Command(f"mass-{run}", "mass", self.creator, self.list_id, "a post for every fan")
        plan.insert(len(plan) // 5, mass)
        for command in plan:
            self.commands[command.cid] = command
        return plan

    # --- set-up ---

    def prepare(self) -> None:
        """The list in the fake list service, money for every sender, every client connected."""
        with self.fake.lock:
            self.fake.lists[self.list_id] = (self.creator, list(self.members))
            for sender in self.senders:
                self.fake.balances[(sender, CURRENCY)] = 100_000_000
        for user in [*self.recipients, self.creator]:
            self.received[user] = {}
            self.synced[user] = queue.Queue()
        for user in self.recipients:
            self._add_client(user, Role.MEMBER, [f"users/{user}/messages", f"users/{user}/events"])
        self._add_client(
            self.creator, Role.CREATOR, [f"users/{self.creator}/messages", f"users/{self.creator}/events"]
        )
        for user in self.senders:
            self._add_client(user, Role.MEMBER, [f"users/{user}/events"])

    def _add_client(self, user: str, role: Role, topics: list[str]) -> None:
        client = Client(
            self.mqtt_port, user, role, topics, lambda topic, data: self._on_json(user, topic, data)
        )
        self.clients[user] = client
        client.connect()

    def close(self) -> None:
        self._stop.set()
        for _ in range(REST_WORKERS):
            self._rest_queue.put(None)
        for thread in self._threads:
            thread.join(15)
        for client in self.clients.values():
            client.close()

    # --- what arrives (paho's network threads) ---

    def _on_json(self, user: str, topic: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        now = time.monotonic()
        if topic.endswith("/messages") and data.get("type") == "message":
            key = (str(data.get("from")), str(data.get("client_id")))
            with self.lock:
                got = self.received[user].get(key)
                if got is None:
                    self.received[user][key] = Receipt(now, int(data["id"]), live=not self.catching_up)
                elif not self.catching_up:  # a catch-up repeats everything: not counted
                    got.copies += 1
            return
        if data.get("type") == "synced":
            self.synced[user].put(data)
            return
        command = self.commands.get(str(data.get("client_id")))
        if command is None or command.sender != user or command.kind == "rest":
            return  # a REST send's ack event: its answer is the HTTP response
        with self.lock:
            self._on_event(command, data, now)

    def _on_event(self, command: Command, data: dict[str, Any], now: float) -> None:
        kind = data.get("type")
        if kind == "ack":
            command.duplicate_acks += bool(data.get("duplicate"))
            status = data.get("status")
            if status == "sent" and command.acked is None:
                command.acked = now
                self.last_progress = now
            elif status == "pending":
                command.pending = True
            elif status == "queued":
                command.queued = True
        elif kind == "error":
            code = str(data.get("code"))
            command.errors[code] += 1
            if code in RETRYABLE:
                command.retry_at = now + float(data.get("retry_after") or self.scale.resend_after_s)
            elif command.acked is None:
                command.failed = code
        elif kind == "tip_failed":
            command.failed = f"tip_failed: {data.get('reason')}"

    # --- sending ---

    def _send_mqtt(self, command: Command, now: float) -> None:
        command.last_sent = now
        if command.first_sent is None:
            command.first_sent = now
            self._open.append(command)
        self.clients[command.sender].publish(f"inbound/{command.sender}", command.payload())

    def run(self, on_tick: Callable[[float], None] | None = None) -> None:
        """Send the plan at the scale's rate (blocking; ``on_tick(elapsed)`` between sends)."""
        for n in range(REST_WORKERS):
            self._start_thread(self._rest_worker, f"chaos-rest-{n}")
        self._start_thread(self._resender, "chaos-resender")
        rate = self.scale.rate
        self.load_started = start = time.monotonic()
        for n, command in enumerate(self.plan):
            due = start + n / rate
            while (wait := due - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
            now = time.monotonic()
            if command.kind == "rest":
                command.first_sent = now
                self._rest_queue.put(command)
            else:
                with self.lock:
                    self._send_mqtt(command, now)
            if on_tick is not None:
                on_tick(now - start)

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _resender(self) -> None:
        """Send again what got no ack in time, as a client following the protocol does."""
        scale = self.scale
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self.lock:
                self._open = [c for c in self._open if not c.done]
                for command in list(self._open):
                    if command.retry_at is not None:
                        if now >= command.retry_at:
                            command.retry_at = None
                            command.retries += 1
                            self._send_mqtt(command, now)
                        continue
                    if (command.kind == "tip" and command.pending) or (
                        command.kind == "mass" and command.queued
                    ):
                        continue  # accepted: its settlement (or the fan-out's end) is on its way
                    wait = scale.resend_after_s if command.resends == 0 else scale.resend_every_s
                    if command.resends < scale.max_resends and now - command.last_sent >= wait:
                        command.resends += 1
                        self._send_mqtt(command, now)

    def _rest_worker(self) -> None:
        clients: dict[str, httpx.Client] = {}
        try:
            while (command := self._rest_queue.get()) is not None:
                if command.sender not in clients:
                    headers = {"Authorization": f"Bearer {token(command.sender)}"}
                    clients[command.sender] = httpx.Client(base_url=self.api_url, headers=headers, timeout=10)
                self._post(clients[command.sender], command)
        finally:
            for client in clients.values():
                client.close()

    def _post(self, client: httpx.Client, command: Command) -> None:
        """POST until an answer (the same ``client_id`` every time), bounded by the settle time."""
        body = {"to": command.to, "body": command.body, "client_id": command.cid}
        give_up = time.monotonic() + self.scale.duration_s + self.scale.settle_s
        while not self._stop.is_set() and time.monotonic() < give_up:
            try:
                response = client.post("/v1/messages", json=body)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            else:
                if response.status_code in (200, 201):
                    with self.lock:
                        command.acked = time.monotonic()
                        command.duplicate_acks += response.status_code == 200
                        self.last_progress = command.acked
                    return
                error = f"HTTP {response.status_code}"
                if response.status_code not in (429, 500, 502, 503, 504):
                    with self.lock:
                        command.errors[error] += 1
                        command.failed = f"{error}: {response.text[:200]}"
                    return
            with self.lock:
                command.errors[error] += 1
                command.retries += 1
            self._stop.wait(0.5)

    # --- after the load ---

    def settle(self) -> None:
        """Wait until every command has its final answer, the tips are settled and the mass
        message's fan-out is done; bounded by ``settle_s``, shorter when nothing moves any more."""
        scale = self.scale
        deadline = time.monotonic() + scale.settle_s
        while time.monotonic() < deadline:
            with self.lock:
                open_ = [c for c in self.plan if not c.done]
                quiet = time.monotonic() - self.last_progress
                exhausted = all(c.kind != "rest" and c.resends >= scale.max_resends for c in open_)
            if not open_:
                return
            if (
                exhausted
                and quiet > scale.quiet_s
                and (quiet > scale.lease_quiet_s or not self._pending_tips(open_))
            ):
                logger.warning("%d commands unanswered after every resend; giving up", len(open_))
                return
            time.sleep(0.2)

    def _pending_tips(self, commands: list[Command]) -> int:
        """How many of these tips the database holds as pending (their settlement may follow)."""
        tips = [c for c in commands if c.kind == "tip"]
        if not tips:
            return 0
        with unit_of_work(self.sessions) as session:
            found = session.scalar(
                select(func.count())
                .select_from(Tip)
                .where(
                    Tip.client_msg_id.in_([c.cid for c in tips]),
                    Tip.payer_id.in_({c.sender for c in tips}),
                    Tip.status == "pending",
                )
            )
        return int(found or 0)

    def catch_up(self) -> None:
        """``sync`` from id 0 for every recipient and the creator, page by page, at the same
        time: what a client missed live (its connection was down) arrives now, late."""
        with self.lock:
            self.catching_up = True
        threads = [
            threading.Thread(target=self._sync_all, args=(user,), name=f"chaos-sync-{user}", daemon=True)
            for user in self.received
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    def _sync_all(self, user: str, attempts: int = 8, wait_s: float = 5) -> None:
        after = 0
        client = self.clients[user]
        while True:
            for _ in range(attempts):
                client.publish(f"inbound/{user}", json.dumps({"type": "sync", "after": after}).encode())
                try:
                    synced = self.synced[user].get(timeout=wait_s)
                except queue.Empty:
                    continue
                break
            else:
                self.catch_up_incomplete.append(user)
                return
            if not synced.get("more"):
                break
            after = int(synced["last_id"])
        # the last page's messages come before its synced event; give stragglers a moment
        time.sleep(0.5)


# --- the count table ---


@dataclass
class Row:
    """One kind of traffic in the count table."""

    kind: str
    sent: int = 0
    acked: int = 0
    stored: int = 0
    #: messages the connected clients got (live or by the catch-up), and how many they should have
    delivered: int = 0
    deliverable: int = 0
    duplicates: int = 0
    lost: int = 0
    charges: int | None = None
    double_charges: int | None = None
    resent: int = 0


@dataclass
class Counts:
    """The count table of one scenario and the facts it was made from."""

    scenario: str
    scale: Scale
    rows: list[Row]
    notes: list[str]
    #: (sender, client id) of commands never stored, for the report
    lost_ids: list[str]
    unexpected_rows: int
    failures: list[str]

    @property
    def total(self) -> Row:
        total = Row("total")
        for row in self.rows:
            for name in (
                "sent",
                "acked",
                "stored",
                "delivered",
                "deliverable",
                "duplicates",
                "lost",
                "resent",
            ):
                setattr(total, name, getattr(total, name) + getattr(row, name))
        total.charges = sum(row.charges or 0 for row in self.rows)
        total.double_charges = sum(row.double_charges or 0 for row in self.rows)
        return total

    @property
    def undelivered(self) -> int:
        return sum(max(0, row.deliverable - row.delivered) for row in self.rows)

    def render(self) -> str:
        head = (
            f"chaos {self.scenario} [{self.scale.name}: {self.scale.messages:,} messages at "
            f"{self.scale.rate:g}/s, outages {self.scale.outage_s:g}s]"
        )
        columns = (
            "kind",
            "sent",
            "acked",
            "stored",
            "delivered",
            "dup stored",
            "lost",
            "charges",
            "2x charged",
            "resent",
        )
        lines = [head, "  " + " ".join(f"{c:>12}" if i else f"{c:<14}" for i, c in enumerate(columns))]
        for row in [*self.rows, self.total]:
            delivered = f"{row.delivered}/{row.deliverable}"
            cells = [
                row.sent, row.acked, row.stored, delivered, row.duplicates, row.lost,
                "-" if row.charges is None else row.charges,
                "-" if row.double_charges is None else row.double_charges, row.resent,
            ]  # fmt: skip
            lines.append("  " + f"{row.kind:<14}" + " ".join(f"{cell!s:>12}" for cell in cells))
        lines += [f"  {note}" for note in self.notes]
        lines += [f"  FAILED: {failure}" for failure in self.failures]
        return "\n".join(lines)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stored_rows(sessions: sessionmaker[Session], senders: Iterable[str]) -> dict[tuple[str, str, str], int]:
    """Rows in ``messages`` per (sender, client id, recipient) for these senders."""
    with unit_of_work(sessions) as session:
        rows = session.execute(
            select(Message.sender_id, Message.client_msg_id, Message.recipient_id, func.count())
            .where(Message.sender_id.in_(list(senders)))
            .group_by(Message.sender_id, Message.client_msg_id, Message.recipient_id)
        )
        return {(s, c, r): int(n) for s, c, r, n in rows}


def count(load: Load, scenario: str, notes: list[str] | None = None) -> Counts:
    """The count table: sent/acked/resent from the clients' records, stored and duplicates from
    the database, delivered from the recipients, charges from the fake billing service."""
    notes = list(notes or [])
    stored = _stored_rows(load.sessions, [*load.senders, load.creator])
    by_command: Counter[tuple[str, str]] = Counter()
    rows_of: Counter[tuple[str, str]] = Counter()
    for (sender, cid, _recipient), n in stored.items():
        by_command[(sender, cid)] += 1  # distinct recipients
        rows_of[(sender, cid)] += n
    with load.lock:
        commands = list(load.plan)
        received = {user: dict(got) for user, got in load.received.items()}
    known = {(c.sender, c.cid) for c in commands}
    unexpected = sum(n for key, n in rows_of.items() if key not in known)

    rows = {kind: Row(label) for kind, label in (
        ("mqtt", "1:1 over MQTT"), ("rest", "1:1 over REST"), ("tip", "tips"), ("mass", "mass copies"),
    )}  # fmt: skip
    lost_ids: list[str] = []
    live_delays: list[float] = []
    late_delays: list[float] = []
    for command in commands:
        row = rows[command.kind]
        row.resent += command.resends + command.retries
        key = (command.sender, command.cid)
        if command.kind == "mass":
            copies = {recipient: n for (s, c, recipient), n in stored.items() if (s, c) == key}
            row.sent += len(load.members)
            row.acked += len(load.members) if command.acked is not None else 0
            row.stored += len(copies)
            row.duplicates += sum(n - 1 for n in copies.values())
            row.lost += len(set(load.members) - set(copies))
            lost_ids += [f"{command.cid} -> {m}" for m in sorted(set(load.members) - set(copies))][:20]
            recipients = [m for m in load.members if m in received]
        else:
            row.sent += 1
            row.acked += command.acked is not None
            row.stored += by_command[key] > 0
            row.duplicates += max(0, rows_of[key] - 1)
            if by_command[key] == 0 and not command.failed:
                row.lost += 1
                lost_ids.append(f"{command.sender}/{command.cid}")
            recipients = [command.to] if by_command[key] else []
        for recipient in recipients:
            row.deliverable += 1
            got = received[recipient].get(key)
            if got is None or command.first_sent is None:
                continue
            row.delivered += 1
            (live_delays if got.live else late_delays).append(got.first - command.first_sent)

    tips = rows["tip"]
    payers = set(load.senders)
    with load.fake.lock:
        charges = [c for c in load.fake.charges.values() if c.status == "succeeded" and c.payer in payers]
    tips.charges = len(charges)
    per_tip = Counter((c.payer, c.payee, c.amount) for c in charges)
    tips.double_charges = sum(n - 1 for n in per_tip.values())
    charged_tips = {(c.sender, load.creator, c.amount) for c in commands if c.kind == "tip"}
    stray = [k for k in per_tip if k not in charged_tips]
    failed = [f"{c.cid}: {c.failed}" for c in commands if c.failed]

    with unit_of_work(load.sessions) as session:
        tip_status = Counter(session.scalars(select(Tip.status).where(Tip.payer_id.in_(list(payers)))))
        mass = session.scalars(select(MassMessage).where(MassMessage.sender_id == load.creator)).all()
    p50, p99 = _percentile(live_delays, 0.5), _percentile(live_delays, 0.99)
    notes.append(
        f"delivery delay: live p50 {p50:.2f}s p99 {p99:.2f}s max {max(live_delays, default=0.0):.2f}s "
        f"({len(live_delays)} live); by the catch-up: {len(late_delays)} "
        f"(max {max(late_delays, default=0.0):.1f}s after the send)"
    )
    ack_delays = [
        c.acked - c.first_sent for c in commands if c.acked is not None and c.first_sent is not None
    ]
    notes.append(
        f"ack delay: p50 {_percentile(ack_delays, 0.5):.2f}s max {max(ack_delays, default=0.0):.2f}s; "
        f"duplicate acks {sum(c.duplicate_acks for c in commands)}; "
        f"errors {dict(sum((c.errors for c in commands), Counter()))}"
    )
    copies_delivered = sum(got.copies - 1 for got_by in received.values() for got in got_by.values())
    notes.append(
        f"delivered twice or more (allowed, dropped by server id): {copies_delivered}; "
        f"tips in the database: {dict(tip_status)}; mass message: "
        + ", ".join(f"{m.status} {m.stored} stored of {m.recipients}" for m in mass)
    )
    reconnects = {user: c.connects - 1 for user, c in load.clients.items() if c.connects > 1}
    if reconnects:
        notes.append(f"client reconnects: {sum(reconnects.values())} over {len(reconnects)} clients")
    if load.catch_up_incomplete:
        notes.append(f"catch-up not completed for {sorted(load.catch_up_incomplete)}")
    if lost_ids:
        notes.append(f"lost (first 20): {lost_ids[:20]}")
    if stray:
        notes.append(f"charges no tip of this run asked for: {stray[:10]}")

    problems: list[str] = []
    counts = Counts(scenario, load.scale, list(rows.values()), notes, lost_ids, unexpected, problems)
    total = counts.total
    if total.lost:
        problems.append(f"{total.lost} lost (sent, never stored)")
    if total.duplicates:
        problems.append(f"{total.duplicates} duplicates stored")
    if unexpected:
        problems.append(f"{unexpected} stored rows no command of this run asked for")
    if total.double_charges:
        problems.append(f"{total.double_charges} double charges")
    if stray:
        problems.append(f"{len(stray)} charges that match no tip")
    if failed:
        problems.append(f"{len(failed)} commands refused: {failed[:5]}")
    if counts.undelivered:
        problems.append(f"{counts.undelivered} stored messages never delivered, even by the catch-up")
    return counts
