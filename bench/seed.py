"""``python -m bench seed``: fill a database with a realistic chat history, fast.

The shape (full size; ``--scale 0.01`` shrinks every count, single flags set one):

- 10,000,000 messages between 1,000,000 users, 1,000 of them creators. Creator ``c0001`` is the
  heaviest: it sent 1,000,000 messages to 100,000 distinct members; the others follow it down a
  power law by rank (``sent_r = sent_1 * r^-a``, the exponent chosen so that creators send about
  55% of the messages). Members reply to creators (~30% as many messages as they receive) and
  chat with each other: a few members in many conversations, most in one or two.
- Lists: each creator owns a few; creator 1's first list has 100,000 members, the sizes fall
  with the creators' rank and within a creator.
- Blocks: ~1% of members block a creator they talk to; what it sends them afterwards is stored
  with ``blocked = 1`` (never unread, never in their conversation).
- Tips: ~1% of members' messages to creators carry a settled tip (a ``tips`` row, ``succeeded``,
  pointing at its message).
- Read state is per conversation, as read marks make it: all but the last few of a peer's
  messages are read. Two members are built for benchmarks: the *catch-up* member has exactly
  10,000 unread messages from many peers, the *worst-case* member 100,000 unread from creator 1.
- ``conversations`` holds both sides of every pair (``last_message_id`` the newest message the
  owner can see, ``unread_count`` what the peer sent that the owner has not read).

Messages go in id order with ``sent_at`` growing with the id, over ``--days`` up to ``--until``
(default: today 00:00 UTC), so a run with the same ``--seed`` and ``--until`` writes the same rows.

Speed: the rows are generated in chunks by a producer thread while the main thread writes the
previous chunk, one statement per chunk and a commit per chunk. On MariaDB a chunk is a
tab-separated file read by ``LOAD DATA LOCAL INFILE`` (two to three times the rows/s of the
same chunk as one JSON parameter read by ``JSON_TABLE``, which is the fallback when the server
has ``local_infile`` off); on SQLite it is one JSON parameter read by ``json_each``. The secondary
indexes of ``messages`` are dropped for the load and added back afterwards in one
``ALTER TABLE`` (their definitions come from :mod:`messenger.models`); if the process dies in
between, ``--restore-indexes`` adds them back.

A manifest (JSON, ``--manifest``, default ``var/bench/seed-<database>.json``) names the ids a
benchmark needs and the counts and load times. A database that already holds any of the tables'
rows is refused: the ids are generated from 1 and the shape would not hold.

    python -m bench seed                                   # full size into messenger_seed
    python -m bench seed --scale 0.01 --database-url sqlite:///var/seed.db
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from pymysql.constants import CLIENT
from sqlalchemy import Connection, Engine, Index, UniqueConstraint, inspect, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bench.stacks import ensure_database
from bench.suite import Progress
from messenger.db import create_db_engine, migrate
from messenger.models import Base
from messenger.repositories import json_rows
from scripts.topology import ROOT

DEFAULT_SEED_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/messenger_seed"

#: the tables a seed fills, in load order; any row in one of them and the load is refused
TABLES = ("users", "member_lists", "list_members", "messages", "blocked_users", "tips", "conversations")
#: tables whose secondary indexes are dropped for the load and added back after it
REINDEXED = ("messages",)

BODIES = (
    "hey!",
    "ok",
    "thank you so much",
    "love this <3",
    "when is the next drop?",
    "haha",
    "good morning :)",
    "did you see my last message?",
    "new set is up, check your inbox",
    "thanks for the support, it means a lot",
    "can you do a custom one?",
    "sure, give me a day or two",
    "that was amazing",
    "see you at the live tonight",
    "what time?",
    "9pm CET",
    "you're the best",
    "sent you something special",
    "omg yes",
    "no worries",
    "how was your weekend?",
    "busy but good, yours?",
    "here's a little tip for you",
    "just subscribed, hi!",
)
# Values are written unescaped into tab-separated files (LOAD DATA): none may hold a separator.
if any(c in body for body in BODIES for c in "\t\n\\"):
    raise RuntimeError("a seed message body holds a tab, newline or backslash")
TIP_AMOUNTS = (100, 200, 500, 500, 1000, 1000, 2000, 5000)

# JSON_TABLE types of the loaded columns (the JSON loader; SQLite ignores them)
_TEXT = "TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
_SHORT = "VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
_TIME = "DATETIME(6)"
_INT = json_rows.BIGINT
_ID = json_rows.ID


class SeedError(Exception):
    """The seed cannot run as asked (parameters that do not fit, a database that is not empty)."""


# --- the shape --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What to generate. The defaults are the full size; :meth:`scaled` shrinks every count."""

    messages: int = 10_000_000
    users: int = 1_000_000
    creators: int = 1_000
    #: messages the heaviest creator sent, and its distinct peers
    largest_sent: int = 1_000_000
    largest_peers: int = 100_000
    largest_list: int = 100_000
    #: unread messages of the catch-up member (from many peers) and of the worst-case member
    #: (all from the heaviest creator)
    catchup_unread: int = 10_000
    worst_unread: int = 100_000
    lists_per_creator: int = 3
    #: the share of the messages creators send; members reply this much per message received
    creator_share: float = 0.55
    reply_share: float = 0.3
    block_share: float = 0.01
    tip_share: float = 0.01
    days: int = 365
    seed: int = 1

    COUNTS = (
        "messages",
        "users",
        "creators",
        "largest_sent",
        "largest_peers",
        "largest_list",
        "catchup_unread",
        "worst_unread",
    )

    def scaled(self, factor: float) -> Shape:
        """Every count times ``factor`` (at least 1)."""
        return replace(self, **{name: max(1, round(getattr(self, name) * factor)) for name in self.COUNTS})

    @property
    def pool(self) -> int:
        """Members other than the two designated ones: who the generated conversations pick from."""
        return self.users - self.creators - 2

    @property
    def worst_read(self) -> int:
        """Messages the worst-case member has read from creator 1 before the unread ones."""
        return max(1, self.worst_unread // 10)

    def check(self) -> None:
        """Refuse parameters the shape cannot hold, saying which."""
        for name in self.COUNTS:
            if getattr(self, name) < 1:
                raise SeedError(f"--{name.replace('_', '-')} must be at least 1")
        if self.pool < max(2, self.largest_peers - 1, self.largest_list):
            raise SeedError(
                f"{self.users:,} users with {self.creators:,} creators leave {self.pool:,} members to pick "
                f"from: too few for {self.largest_peers:,} peers of the heaviest creator or a list of "
                f"{self.largest_list:,}; raise --users"
            )
        needed = self.worst_unread + self.worst_read + self.largest_peers - 1
        if self.largest_sent < needed:
            raise SeedError(
                f"--largest-sent {self.largest_sent:,} is below what the heaviest creator must send: "
                f"{self.worst_unread + self.worst_read:,} to the worst-case member and one to each of "
                f"its {self.largest_peers - 1:,} other peers"
            )
        if not 1 <= self.lists_per_creator <= 9:
            raise SeedError("--lists-per-creator must be 1..9")
        if self.days * 86_400_000_000 // (self.messages + 1) < 2:
            raise SeedError("too many messages for --days: sent_at would not grow with the id")
        for name in ("creator_share", "reply_share", "block_share", "tip_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise SeedError(f"{name} must be within 0..1")


# --- the plan: who talks to whom, how much, what is read --------------------------------------------


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), summing to it exactly."""
    if not weights:
        return []
    weight_sum = float(sum(weights))
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    shares = [total * w / weight_sum for w in weights]
    out = [int(s) for s in shares]
    rest = total - sum(out)
    if rest > 0:
        order = sorted(range(len(shares)), key=lambda i: out[i] - shares[i])
        for n in range(rest):
            out[order[n % len(order)]] += 1
    return out


def allocate_capped(total: int, weights: Sequence[float], cap: int) -> list[int]:
    """:func:`allocate`, no share above ``cap``: what a capped share would have had goes to the
    others, in proportion (needs ``cap * len(weights) >= total``)."""
    if cap * len(weights) < total:
        raise ValueError(f"{total} cannot be split in {len(weights)} shares of at most {cap}")
    out = [0] * len(weights)
    free = list(range(len(weights)))
    while True:
        shares = allocate(total - sum(out), [weights[i] for i in free])
        over = [i for i, n in zip(free, shares, strict=True) if n > cap]
        if not over:
            for i, n in zip(free, shares, strict=True):
                out[i] = n
            return out
        for i in over:
            out[i] = cap
        capped = set(over)
        free = [i for i in free if i not in capped]


def zipf_exponent(top: int, n: int, target: float, low: float = 0.5, high: float = 4.0) -> float:
    """The exponent ``a`` for which ``sum(top * r**-a for r in 1..n)`` comes closest to
    ``target``, within [low, high] (below 0.5 the heaviest would hardly stand out)."""

    def total(a: float) -> float:
        return top * sum(math.pow(r, -a) for r in range(1, n + 1))

    if total(low) <= target:
        return low
    if total(high) >= target:
        return high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if total(mid) > target else (low, mid)
    return (low + high) / 2


@dataclass
class ListPlan:
    id: str
    owner: int
    name: str
    members: list[int]


@dataclass
class Plan:
    """Every conversation as an undirected pair ``p`` of user indexes (``pa[p]``, ``pb[p]``) and
    its two directions, ``d = 2p`` (a to b) and ``2p + 1`` (b to a). Per direction: how many
    messages, how many of them come before the recipient blocked the sender (``visible``), and
    how many of the visible ones, the newest, are unread. Users are indexes: creators first
    (``c…``), then members (``m…``), so that index order is id order."""

    shape: Shape
    until: datetime
    user_ids: list[str]
    exponent: float = 0.0
    pa: array[int] = field(default_factory=lambda: array("I"))
    pb: array[int] = field(default_factory=lambda: array("I"))
    count: array[int] = field(default_factory=lambda: array("I"))
    visible: array[int] = field(default_factory=lambda: array("I"))
    unread: array[int] = field(default_factory=lambda: array("I"))
    lists: list[ListPlan] = field(default_factory=list)
    #: directions whose recipient blocked the sender part-way (d -> the block's time in µs, set
    #: by the stream when it reaches the first blocked message)
    blocks: dict[int, int] = field(default_factory=dict)
    #: pairs [0, creator_pairs) are the creators' conversations with members of the pool
    creator_pairs: int = 0
    catchup: int = 0
    worst: int = 0

    @property
    def creators(self) -> int:
        return self.shape.creators

    def add_pair(self, a: int, b: int, ab: int, ba: int) -> int:
        self.pa.append(a)
        self.pb.append(b)
        self.count.extend((ab, ba))
        self.visible.extend((ab, ba))
        self.unread.extend((0, 0))
        return len(self.pa) - 1

    def sender(self, d: int) -> int:
        return self.pb[d >> 1] if d & 1 else self.pa[d >> 1]

    def recipient(self, d: int) -> int:
        return self.pa[d >> 1] if d & 1 else self.pb[d >> 1]


def user_ids(shape: Shape) -> list[str]:
    """Creators ``c0001``…, then members ``m000001``… (fixed widths: index order is id order)."""
    wc, wm = len(str(shape.creators)), len(str(shape.users - shape.creators))
    return [f"c{n:0{wc}d}" for n in range(1, shape.creators + 1)] + [
        f"m{n:0{wm}d}" for n in range(1, shape.users - shape.creators + 1)
    ]


def build_plan(shape: Shape, until: datetime) -> Plan:
    """The whole dataset but its rows, from ``shape`` (and its seed) alone."""
    shape.check()
    rng = random.Random(shape.seed)
    nc = shape.creators
    plan = Plan(shape, until, user_ids(shape), worst=nc, catchup=nc + 1)
    pool = range(nc + 2, shape.users)

    worst_pair = shape.worst_unread + shape.worst_read
    plan.exponent = a = zipf_exponent(shape.largest_sent, nc, shape.creator_share * shape.messages)
    sent = [shape.largest_sent - worst_pair] + [
        max(1, round(shape.largest_sent * math.pow(r, -a))) for r in range(2, nc + 1)
    ]
    peers = [shape.largest_peers - 1] + [
        max(1, min(round(shape.largest_peers * math.pow(r, -a)), sent[r - 1], len(pool)))
        for r in range(2, nc + 1)
    ]
    # creators and their members: a message to each peer, the rest by a heavy-tailed weight (a
    # few fans get thousands); replies follow what each member received, and many never reply
    for r in range(nc):
        chosen = rng.sample(pool, peers[r]) if peers[r] else []
        counts = [1 + n for n in allocate(sent[r] - len(chosen), [rng.paretovariate(1.3) for _ in chosen])]
        replies = allocate(
            round(shape.reply_share * sent[r]),
            [0.0 if rng.random() < 0.4 else n * rng.random() for n in counts],
        )
        for member, n, back in zip(chosen, counts, replies, strict=True):
            plan.add_pair(r, member, n, back)
    plan.creator_pairs = len(plan.pa)

    # the worst-case member: creator 1's unread after some read ones, and its replies; a few
    # other creators' conversations, all read
    p = plan.add_pair(0, plan.worst, worst_pair, max(1, shape.worst_read // 5))
    plan.unread[2 * p] = shape.worst_unread
    for r in range(1, min(11, nc)):
        plan.add_pair(r, plan.worst, 1 + rng.randrange(3), rng.randrange(3))
    # the catch-up member: exactly catchup_unread unread, from many creators and members (~20
    # each), after a few read ones from each
    n_peers = max(1, min(shape.catchup_unread // 20, 1000))
    from_creators = min(n_peers // 2, nc - 1)
    senders = list(range(1, 1 + from_creators)) + rng.sample(pool, min(n_peers - from_creators, len(pool)))
    extra = allocate(shape.catchup_unread - len(senders), [rng.random() for _ in senders])
    for sender, n in zip(senders, extra, strict=True):
        unread, read = 1 + n, 1 + rng.randrange(5)
        p = plan.add_pair(sender, plan.catchup, read + unread, rng.randrange(3))
        plan.unread[2 * p] = unread

    # members among themselves: what is left, about five messages a pair, over pairs picked with
    # a skew (a few members in hundreds of conversations, most in one or two)
    left = shape.messages - sum(plan.count)
    if left < 0:
        raise SeedError(
            f"--messages {shape.messages:,} is too few: the creators and the designated members alone "
            f"send {sum(plan.count):,}; raise --messages or lower --largest-sent"
        )
    if left:
        _member_pairs(plan, rng, left, pool)
    if sum(plan.count) != shape.messages:
        raise AssertionError(f"planned {sum(plan.count):,} messages, not {shape.messages:,}")
    _blocks(plan, rng)
    _read_state(plan, rng)
    _lists(plan, rng, pool)
    return plan


def _member_pairs(plan: Plan, rng: random.Random, messages: int, pool: range) -> None:
    size = len(pool)
    wanted = max(1, min(messages // 5, size * (size - 1) // 2))
    seen: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _ in range(20 * wanted):
        if len(pairs) == wanted:
            break
        a = pool.start + int(size * rng.random() ** 2)
        b = pool.start + rng.randrange(size)
        key = min(a, b) * pool.stop + max(a, b)
        if a != b and key not in seen:
            seen.add(key)
            pairs.append((a, b))
    if not pairs:
        raise SeedError("no two members to chat with each other: raise --users")
    # a heavy tail, but no pair of members outdoing the heaviest creator's volume
    cap = max(20, plan.shape.largest_sent // 50, -(-messages // len(pairs)))
    weights = [rng.paretovariate(1.5) for _ in pairs]
    counts = [1 + n for n in allocate_capped(messages - len(pairs), weights, cap - 1)]
    for (a, b), n in zip(pairs, counts, strict=True):
        ab = max(1, min(n, round(n * rng.uniform(0.4, 0.9))))
        plan.add_pair(a, b, ab, n - ab)


def _blocks(plan: Plan, rng: random.Random) -> None:
    """~block_share of the members block a creator they talk to, part-way through the
    conversation: what the creator sends them from then on is stored blocked."""
    shape = plan.shape
    wanted = min(plan.creator_pairs, round(shape.block_share * shape.pool))
    if shape.block_share > 0 and plan.creator_pairs:
        wanted = max(1, wanted)
    for p in sorted(rng.sample(range(plan.creator_pairs), wanted)):
        d = 2 * p  # creator -> member
        plan.visible[d] = rng.randrange(plan.count[d])
        plan.blocks[d] = 0


def _read_state(plan: Plan, rng: random.Random) -> None:
    """Unread tails per direction: users who have been away have a few unread from each peer,
    the others now and then one. The designated members' tails are the plan's own."""
    creators = plan.creators
    away = bytearray(rng.random() < (0.3 if u < creators else 0.1) for u in range(len(plan.user_ids)))
    designated = (plan.worst, plan.catchup)
    for d in range(len(plan.count)):
        visible = plan.visible[d]
        recipient = plan.recipient(d)
        if not visible or recipient in designated:
            continue
        if away[recipient]:
            plan.unread[d] = min(visible, 1 + int(rng.expovariate(1 / 3)))
        elif rng.random() < 0.03:
            plan.unread[d] = 1


LIST_NAMES = (
    "Top fans",
    "VIP",
    "Regulars",
    "New this month",
    "Everyone",
    "Tippers",
    "Old friends",
    "Beta",
    "Misc",
)


def _lists(plan: Plan, rng: random.Random, pool: range) -> None:
    """Each creator's lists, the largest first, sizes falling with the rank and within a
    creator; members are the creator's own peers first."""
    shape = plan.shape
    peers_of: dict[int, list[int]] = {}
    for p in range(plan.creator_pairs):
        peers_of.setdefault(plan.pa[p], []).append(plan.pb[p])
    width = len(str(shape.creators))
    for r in range(shape.creators):
        n_lists = shape.lists_per_creator if r == 0 else 1 + rng.randrange(shape.lists_per_creator)
        top = (
            shape.largest_list
            if r == 0
            else max(1, round(shape.largest_list * math.pow(r + 1, -plan.exponent)))
        )
        own = peers_of.get(r, [])
        for k in range(n_lists):
            size = max(1, round(top * 0.3**k))
            chosen = set(rng.sample(own, size) if size <= len(own) else own)
            while len(chosen) < size:
                chosen.add(rng.randrange(pool.start, pool.stop))
            plan.lists.append(ListPlan(f"l{r + 1:0{width}d}-{k}", r, LIST_NAMES[k], sorted(chosen)))


# --- the rows -----------------------------------------------------------------------------------------

Row = tuple[object, ...]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


#: "HH:MM:" for each minute of a day, "SS.mmm" for each millisecond of a minute, "uuu" for each
#: microsecond of a millisecond
_MINUTES = [f"{n // 60:02d}:{n % 60:02d}:" for n in range(1440)]
_MILLIS = [f"{n // 1000:02d}.{n % 1000:03d}" for n in range(60_000)]
_MICROS = [f"{n:03d}" for n in range(1000)]


def timestamps() -> Callable[[int], str]:
    """A formatter of microseconds since the epoch as ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive UTC,
    how both backends store ``UTCDateTime``): the day's date cached, the rest looked up in
    tables. With strftime, three timestamps a message were most of the generation time."""
    dates: dict[int, str] = {}
    cached = dates.get
    minutes, millis, micros = _MINUTES, _MILLIS, _MICROS

    def format_micros(moment: int) -> str:
        day, rest = divmod(moment, 86_400_000_000)
        date = cached(day)
        if date is None:
            date = dates[day] = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d ")
        minute, rest = divmod(rest, 60_000_000)
        return date + minutes[minute] + millis[rest // 1000] + micros[rest % 1000]

    return format_micros


def _tip_row(
    tip_id: int,
    payer: str,
    payee: str,
    cid: str,
    amount: int,
    body: str,
    message_id: int,
    recorded: str,
    settled: str,
) -> Row:
    """A tips row as its settlement leaves it: ``succeeded``, pointing at its message."""
    return (
        tip_id,
        payer,
        payee,
        cid,
        amount,
        "USD",
        body,
        "succeeded",
        f"ch_seed{cid}",
        message_id,
        1,
        recorded,
        settled,
    )


class Stream:
    """The rows of a plan: users and lists, the messages in id order and what they leave behind
    (the conversations, the tips and the blocks' times)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        shape = plan.shape
        self.rng = random.Random(f"{shape.seed}:rows")
        self.until_us = _micros(plan.until)
        self.start_us = self.until_us - shape.days * 86_400_000_000
        #: sent_at of message ``id`` is start_us + id * step_us
        self.step_us = (self.until_us - self.start_us) // (shape.messages + 1)
        self.ts = timestamps()
        directions = len(plan.count)
        self.seen = array("I", bytes(4 * directions))
        self.last_sent = array("Q", bytes(8 * directions))
        self.last_visible = array("Q", bytes(8 * directions))
        self.tips: list[Row] = []

    @property
    def start(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.start_us)

    def users(self, size: int) -> Iterator[list[Row]]:
        rng, ts, ids = self.rng, self.ts, self.plan.user_ids
        creators = self.plan.creators
        day = 86_400_000_000
        for first in range(0, len(ids), size):
            yield [
                (
                    ids[u],
                    "creator" if u < creators else "member",
                    f"Creator {u + 1}" if u < creators else f"Member {u + 1 - creators}",
                    ts(self.start_us - int(rng.random() * 365 * day)),
                )
                for u in range(first, min(first + size, len(ids)))
            ]

    def member_lists(self, size: int) -> Iterator[list[Row]]:
        ids, ts = self.plan.user_ids, self.ts
        rows: list[Row] = [
            (lst.id, ids[lst.owner], lst.name, ts(self.start_us + n)) for n, lst in enumerate(self.plan.lists)
        ]
        for first in range(0, len(rows), size):
            yield rows[first : first + size]

    def list_members(self, size: int) -> Iterator[list[Row]]:
        ids, ts, rng = self.plan.user_ids, self.ts, self.rng
        span = self.until_us - self.start_us
        rows: list[Row] = []
        for lst in self.plan.lists:
            for member in lst.members:
                rows.append((lst.id, ids[member], ts(self.start_us + int(rng.random() * span))))
                if len(rows) == size:
                    yield rows
                    rows = []
        if rows:
            yield rows

    def messages(self, size: int) -> Iterator[list[Row]]:
        """The messages in id order (ids from 1), in chunks of ``size``: who sends what to whom
        is the plan's, shuffled in time; blocked, unread and read follow each direction's
        counts. Fills the state :meth:`conversations`, :meth:`blocked_users` and :attr:`tips`
        read afterwards."""
        plan, shape = self.plan, self.plan.shape
        slots = array("I")
        for d, n in enumerate(plan.count):
            slots.extend(array("I", (d,)) * n)
        self.rng.shuffle(slots)
        ids, pa, pb, visible = plan.user_ids, plan.pa, plan.pb, plan.visible
        first_unread = array("I", (v - u for v, u in zip(plan.visible, plan.unread, strict=True)))
        seen, last_sent, last_visible, blocks = self.seen, self.last_sent, self.last_visible, plan.blocks
        rnd, log, ts = self.rng.random, math.log, self.ts
        start, step, until = self.start_us, self.step_us, self.until_us
        creators, tip_share, tips = plan.creators, shape.tip_share, self.tips
        bodies, n_bodies, amounts = BODIES, len(BODIES), TIP_AMOUNTS
        total = len(slots)
        for first in range(0, total, size):
            rows: list[Row] = []
            append = rows.append
            for i in range(first, min(first + size, total)):
                mid = i + 1
                d = slots[i]
                p = d >> 1
                s, r = (pb[p], pa[p]) if d & 1 else (pa[p], pb[p])
                j = seen[d]
                seen[d] = j + 1
                last_sent[d] = mid
                sent = start + mid * step
                cid = f"{mid:x}"
                body = bodies[int(rnd() * n_bodies)]
                if j >= visible[d]:  # after the recipient blocked the sender
                    if j == visible[d]:  # the block: after this direction's previous message
                        blocks[d] = sent - 1 - int(rnd() * (step - 1))
                    append((mid, ids[s], ids[r], cid, body, ts(sent), None, None, None, None, None, 1))
                    continue
                last_visible[d] = mid
                delivered = sent + int(rnd() * 2_000_000)
                if j >= first_unread[d]:  # the newest of the direction: unread, maybe delivered
                    delivered_at = ts(delivered) if delivered < until and rnd() < 0.5 else None
                    read_at = None
                else:  # read a while later: exponential, ten minutes on average
                    delivered = min(delivered, until)
                    delivered_at = ts(delivered)
                    read_at = ts(min(until, delivered - int(log(1.0 - rnd()) * 600_000_000)))
                if s < creators or r >= creators or rnd() >= tip_share:
                    append(
                        (mid, ids[s], ids[r], cid, body, ts(sent), delivered_at, read_at, None, None, None, 0)
                    )
                    continue
                # a settled tip: the message its settlement stored, and the tips row
                amount, payer, payee, sent_at = amounts[int(rnd() * len(amounts))], ids[s], ids[r], ts(sent)
                append(
                    (
                        mid,
                        payer,
                        payee,
                        cid,
                        body,
                        sent_at,
                        delivered_at,
                        read_at,
                        amount,
                        "USD",
                        "succeeded",
                        0,
                    )
                )
                tips.append(
                    _tip_row(
                        len(tips) + 1, payer, payee, cid, amount, body, mid, ts(sent - 1_000_000), sent_at
                    )
                )
            yield rows

    def blocked_users(self) -> list[Row]:
        plan, ids = self.plan, self.plan.user_ids
        found = sorted((plan.recipient(d), plan.sender(d), at) for d, at in plan.blocks.items())
        return [(ids[blocker], ids[blocked], self.ts(at)) for blocker, blocked, at in found]

    def conversations(self) -> list[int]:
        """Both sides of every pair that has a message the owner can see, packed as
        ``(owner * users + peer) << 80 | last_message_id << 40 | unread_count`` and sorted:
        primary-key order, in a tenth of the memory of tuples. A blocked message moves only its
        sender's side (as ``conversations.touch_many``)."""
        plan = self.plan
        users = len(plan.user_ids)
        last_sent, last_visible, unread = self.last_sent, self.last_visible, plan.unread
        packed: list[int] = []
        for p in range(len(plan.pa)):
            a, b, ab, ba = plan.pa[p], plan.pb[p], 2 * p, 2 * p + 1
            last = max(last_sent[ab], last_visible[ba])
            if last:
                packed.append((a * users + b) << 80 | last << 40 | unread[ba])
            last = max(last_sent[ba], last_visible[ab])
            if last:
                packed.append((b * users + a) << 80 | last << 40 | unread[ab])
        packed.sort()
        return packed

    def conversation_rows(self, packed: list[int], size: int) -> Iterator[list[Row]]:
        ids, users, mask = self.plan.user_ids, len(self.plan.user_ids), (1 << 40) - 1
        for first in range(0, len(packed), size):
            rows: list[Row] = []
            for value in packed[first : first + size]:
                owner, peer = divmod(value >> 80, users)
                rows.append((ids[owner], ids[peer], value >> 40 & mask, value & mask))
            yield rows


# --- writing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table as loaded: its name and the columns given, with their JSON_TABLE types."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> str:
        return ", ".join(name for name, _ in self.columns)


USERS = Table("users", (("id", _ID), ("role", _SHORT), ("display_name", _SHORT), ("created_at", _TIME)))
MEMBER_LISTS = Table(
    "member_lists", (("id", _ID), ("owner_id", _ID), ("name", _SHORT), ("created_at", _TIME))
)
LIST_MEMBERS = Table("list_members", (("list_id", _ID), ("member_id", _ID), ("added_at", _TIME)))
MESSAGES = Table(
    "messages",
    (
        ("id", _INT),
        ("sender_id", _ID),
        ("recipient_id", _ID),
        ("client_msg_id", _ID),
        ("body", _TEXT),
        ("sent_at", _TIME),
        ("delivered_at", _TIME),
        ("read_at", _TIME),
        ("tip_amount", _INT),
        ("tip_currency", _SHORT),
        ("tip_status", _SHORT),
        ("blocked", "BOOLEAN"),
    ),
)
BLOCKED_USERS = Table("blocked_users", (("blocker_id", _ID), ("blocked_id", _ID), ("created_at", _TIME)))
TIPS = Table(
    "tips",
    (
        ("id", _INT),
        ("payer_id", _ID),
        ("payee_id", _ID),
        ("client_msg_id", _ID),
        ("amount", _INT),
        ("currency", _SHORT),
        ("body", _TEXT),
        ("status", _SHORT),
        ("charge_id", _SHORT),
        ("message_id", _INT),
        ("attempts", _INT),
        ("created_at", _TIME),
        ("settled_at", _TIME),
    ),
)
CONVERSATIONS = Table(
    "conversations", (("owner_id", _ID), ("peer_id", _ID), ("last_message_id", _INT), ("unread_count", _INT))
)
LOADED = (USERS, MEMBER_LISTS, LIST_MEMBERS, MESSAGES, BLOCKED_USERS, TIPS, CONVERSATIONS)


def is_mysql(conn: Connection | Engine) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


class Loader:
    """How a chunk of rows gets into a table: :meth:`encode` (in the producer thread) makes the
    payload, :meth:`write` (in the main thread) sends it as one statement and commits."""

    name = ""
    chunk_rows = 20_000

    def encode(self, table: Table, rows: list[Row]) -> Any:
        raise NotImplementedError

    def write(self, conn: Connection, table: Table, payload: Any, rows: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Remove what the loader left behind."""


class JsonLoader(Loader):
    """``INSERT … SELECT`` from the chunk bound as one JSON array (:mod:`json_rows`)."""

    name = "json"
    chunk_rows = 20_000  # ~3.5 MB of messages: well under MariaDB's default max_allowed_packet

    def __init__(self) -> None:
        self._statements: dict[str, Any] = {}

    def encode(self, table: Table, rows: list[Row]) -> str:
        return json_rows.dumps(rows)

    def write(self, conn: Connection, table: Table, payload: Any, rows: int) -> None:
        statement = self._statements.get(table.name)
        if statement is None:
            # a Session only to let json_rows pick the backend's table function
            source = json_rows.table(Session(bind=conn), "rows", table.columns)
            statement = text(
                f"INSERT INTO {table.name} ({table.names}) "  # noqa: S608 - names, not values
                f"SELECT {', '.join(f'j.{name}' for name, _ in table.columns)} FROM {source}"
            )
            self._statements[table.name] = statement
        written = conn.execute(statement, {"rows": payload}).rowcount
        if written != rows:
            raise SeedError(f"{table.name}: {written} of {rows} rows inserted")
        conn.commit()


class InfileLoader(Loader):
    """``LOAD DATA LOCAL INFILE`` of the chunk written as a tab-separated file (in /dev/shm when
    there is room): about three times the rows/s of :class:`JsonLoader` on MariaDB."""

    name = "infile"
    chunk_rows = 50_000

    def __init__(self) -> None:
        shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private directory in it
        where = shm if shm.is_dir() and _free_bytes(shm) > 1 << 30 else None
        self._dir = Path(tempfile.mkdtemp(prefix="messenger-seed-", dir=where))
        self._files = 0

    def encode(self, table: Table, rows: list[Row]) -> Path:
        self._files += 1
        path = self._dir / f"{table.name}-{self._files}.tsv"
        # \N is NULL; no value holds a tab, newline or backslash (ids, numbers, times, BODIES)
        path.write_text(
            "".join("\t".join(["\\N" if v is None else str(v) for v in row]) + "\n" for row in rows),
            encoding="utf-8",
        )
        return path

    def write(self, conn: Connection, table: Table, payload: Any, rows: int) -> None:
        try:
            result = conn.exec_driver_sql(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {table.name} CHARACTER SET utf8mb4 ({table.names})",
                (str(payload),),
            )
        finally:
            Path(payload).unlink(missing_ok=True)
        # LOAD DATA LOCAL turns errors (a duplicate key, a bad value) into warnings: any is fatal
        warnings = conn.exec_driver_sql("SHOW WARNINGS LIMIT 3").all()
        if warnings or result.rowcount != rows:
            detail = "; ".join(str(tuple(w)) for w in warnings)
            raise SeedError(f"{table.name}: {result.rowcount} of {rows} rows loaded {detail}".strip())
        conn.commit()

    def close(self) -> None:
        for path in self._dir.glob("*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir.rmdir()


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def choose_loader(engine: Engine, wanted: str) -> Loader:
    """``auto``: LOAD DATA on a MariaDB server that allows it, else JSON."""
    if not is_mysql(engine):
        if wanted == "infile":
            raise SeedError("--loader infile needs MariaDB/MySQL")
        return JsonLoader()
    if wanted in ("auto", "infile"):
        with engine.connect() as conn:
            server = bool(conn.exec_driver_sql("SELECT @@local_infile").scalar())
            client = getattr(conn.connection.dbapi_connection, "client_flag", 0) & CLIENT.LOCAL_FILES
        if server and client:
            return InfileLoader()
        why = "the server has local_infile off" if not server else "the engine is not seed_engine()'s"
        if wanted == "infile":
            raise SeedError(f"{why}: use --loader json")
        print(f"{why}: loading as JSON (slower)", file=sys.stderr)
    return JsonLoader()


T = TypeVar("T")


class _Producer(Generic[T]):
    """Runs an iterator in a thread, a few items ahead of whoever takes them: the rows of the
    next chunk are generated while the database writes this one (the server works on the other
    core, and the driver waits for it without the GIL)."""

    _DONE = object()

    def __init__(self, items: Iterator[T], depth: int = 2) -> None:
        self._items = items
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seed-rows", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()
            self._thread.join(10)


def write_table(
    conn: Connection,
    loader: Loader,
    table: Table,
    chunks: Iterator[list[Row]],
    total: int,
    progress: Progress,
) -> int:
    """All of ``chunks`` into ``table``, one statement and one commit per chunk; returns the rows."""
    progress.step(table.name)
    done, started = 0, time.monotonic()

    def encoded() -> Iterator[tuple[Any, int]]:
        for rows in chunks:
            yield loader.encode(table, rows), len(rows)

    logged = 0  # without the bar (a log file): a line at every tenth
    for payload, n in _Producer(encoded()):
        loader.write(conn, table, payload, n)
        done += n
        rate = done / max(time.monotonic() - started, 1e-6)
        progress.update(done, total, f"{done:,}/{total:,} rows  {rate:,.0f} rows/s")
        if not progress.enabled and total >= 1_000_000 and done * 10 // total > logged:
            logged = done * 10 // total
            print(f"{table.name}: {done:,}/{total:,} rows, {rate:,.0f} rows/s", file=sys.stderr, flush=True)
    progress.finish()
    return done


# --- secondary indexes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexDef:
    table: str
    name: str
    columns: tuple[str, ...]
    unique: bool


def model_indexes(table: str) -> list[IndexDef]:
    """The secondary indexes and unique constraints :mod:`messenger.models` declares on ``table``."""
    t = Base.metadata.tables[table]
    found = [
        IndexDef(table, str(ix.name), tuple(c.name for c in ix.columns), bool(ix.unique))
        for ix in t.indexes
        if isinstance(ix, Index)
    ]
    found += [
        IndexDef(table, str(c.name), tuple(col.name for col in c.columns), True)
        for c in t.constraints
        if isinstance(c, UniqueConstraint)
    ]
    return sorted(found, key=lambda ix: ix.name)


def database_indexes(conn: Connection, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    """Name -> (columns, unique) of the indexes ``table`` has (SQLite's unnamed constraint
    indexes not included: they cannot be dropped)."""
    return {
        str(ix["name"]): (tuple(str(c) for c in ix["column_names"]), bool(ix["unique"]))
        for ix in inspect(conn).get_indexes(table)
    }


def drop_indexes(conn: Connection, tables: Sequence[str]) -> list[IndexDef]:
    """Drop the secondary indexes of ``tables`` that the models declare and the database has
    with the same columns (any other index is left alone); returns what was dropped."""
    dropped: list[IndexDef] = []
    quote = conn.dialect.identifier_preparer.quote
    for table in tables:
        present = database_indexes(conn, table)
        mine = [ix for ix in model_indexes(table) if present.get(ix.name) == (ix.columns, ix.unique)]
        kept = sorted(set(present) - {ix.name for ix in mine})
        if kept:
            print(
                f"{table}: kept during the load (not as in messenger.models): {', '.join(kept)}",
                file=sys.stderr,
            )
        if not mine:
            continue
        if is_mysql(conn):
            conn.exec_driver_sql(
                f"ALTER TABLE {table} " + ", ".join(f"DROP INDEX {quote(ix.name)}" for ix in mine)
            )
        else:
            for ix in mine:
                conn.exec_driver_sql(f"DROP INDEX {quote(ix.name)}")
        conn.commit()
        dropped += mine
    return dropped


def add_indexes(conn: Connection, indexes: Sequence[IndexDef]) -> None:
    """Create ``indexes``: on MariaDB one ``ALTER TABLE`` per table (one scan builds them all)."""
    quote = conn.dialect.identifier_preparer.quote
    by_table: dict[str, list[IndexDef]] = {}
    for ix in indexes:
        by_table.setdefault(ix.table, []).append(ix)

    def columns(ix: IndexDef) -> str:
        return ", ".join(quote(c) for c in ix.columns)

    for table, wanted in by_table.items():
        if is_mysql(conn):
            adds = ", ".join(
                f"ADD {'UNIQUE ' if ix.unique else ''}INDEX {quote(ix.name)} ({columns(ix)})" for ix in wanted
            )
            conn.exec_driver_sql(f"ALTER TABLE {table} {adds}")
        else:
            for ix in wanted:
                unique = "UNIQUE " if ix.unique else ""
                conn.exec_driver_sql(f"CREATE {unique}INDEX {quote(ix.name)} ON {table} ({columns(ix)})")
        conn.commit()


def missing_indexes(conn: Connection, tables: Sequence[str] = REINDEXED) -> list[IndexDef]:
    """The model's indexes on ``tables`` that the database lacks (after an interrupted load)."""
    missing: list[IndexDef] = []
    for table in tables:
        present = database_indexes(conn, table)
        missing += [ix for ix in model_indexes(table) if ix.name not in present]
    if not is_mysql(conn):  # SQLite's unique constraints live in the table itself
        missing = [ix for ix in missing if not _is_constraint(ix)]
    return missing


def _is_constraint(ix: IndexDef) -> bool:
    t = Base.metadata.tables[ix.table]
    return any(isinstance(c, UniqueConstraint) and c.name == ix.name for c in t.constraints)


@contextlib.contextmanager
def _alter_progress(engine: Engine, conn: Connection, progress: Progress) -> Iterator[None]:
    """While MariaDB builds indexes: its own progress report (stage, percent), polled each second
    from another connection."""
    if not is_mysql(conn) or not progress.enabled:
        yield
        return
    connection_id = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    stop = threading.Event()
    started = time.monotonic()

    def watch() -> None:
        query = text("SELECT stage, max_stage, progress FROM information_schema.processlist WHERE id = :id")
        with contextlib.suppress(Exception), engine.connect() as watcher:
            while not stop.wait(1.0):
                row = watcher.execute(query, {"id": connection_id}).first()
                watcher.rollback()
                if row is not None and row[1]:
                    done = (row[0] - 1 + float(row[2]) / 100) / row[1]
                    elapsed = time.monotonic() - started
                    progress.update(done, 1.0, f"stage {row[0]}/{row[1]}  {elapsed:,.0f} s")

    thread = threading.Thread(target=watch, name="seed-alter-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


# --- the load ------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What a load wrote: rows and seconds per table (and per step), and the manifest."""

    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def refuse_if_loaded(conn: Connection, where: str) -> None:
    """Raise :class:`SeedError` when any table a seed fills has a row."""
    full = [t for t in TABLES if conn.execute(text(f"SELECT 1 FROM {t} LIMIT 1")).first() is not None]  # noqa: S608
    conn.rollback()
    if full:
        raise SeedError(
            f"{where} already has rows in {', '.join(full)}: a seed numbers its messages, tips and "
            "users from the start, and its shape (counts, unread, conversations) only holds in an "
            "empty database. Seed a new database (--database-url) or drop this one first."
        )


@contextlib.contextmanager
def bulk_session(conn: Connection) -> Iterator[None]:
    """This connection only: no foreign key (or unique) checks while loading rows that are
    consistent by construction; SQLite also gets a larger page cache for the index builds."""
    if is_mysql(conn):
        conn.exec_driver_sql("SET SESSION foreign_key_checks = 0, unique_checks = 0")
    else:
        conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
        conn.exec_driver_sql("PRAGMA cache_size = -262144")
    conn.commit()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
            if is_mysql(conn):
                conn.exec_driver_sql("SET SESSION foreign_key_checks = 1, unique_checks = 1")
            else:
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
            conn.commit()


def _add_back(engine: Engine, conn: Connection, dropped: Sequence[IndexDef], restore_hint: str) -> None:
    """Add the dropped indexes back, on a new connection if the load's broke off mid-statement;
    if that fails too, say how to do it."""
    try:
        try:
            conn.rollback()
            add_indexes(conn, dropped)
        except DBAPIError:
            with engine.connect() as fresh:
                add_indexes(fresh, dropped)
    except BaseException:
        print(f"the indexes of messages are still missing: run {restore_hint}", file=sys.stderr)
        raise


def load(engine: Engine, plan: Plan, loader: Loader, progress: Progress, *, restore_hint: str = "") -> Report:
    """Write ``plan`` into the (migrated, empty) database of ``engine``."""
    report = Report()
    stream = Stream(plan)
    size = loader.chunk_rows

    with engine.connect() as conn:
        refuse_if_loaded(conn, engine.url.render_as_string(hide_password=True))

        def write(table: Table, chunks: Iterator[list[Row]], total: int) -> None:
            started = time.monotonic()
            report.counts[table.name] = write_table(conn, loader, table, chunks, total, progress)
            report.seconds[table.name] = round(time.monotonic() - started, 2)

        with bulk_session(conn):
            write(USERS, stream.users(size), len(plan.user_ids))
            write(MEMBER_LISTS, stream.member_lists(size), len(plan.lists))
            write(LIST_MEMBERS, stream.list_members(size), sum(len(lst.members) for lst in plan.lists))
            dropped = drop_indexes(conn, REINDEXED)
            if dropped:
                print(
                    f"dropped {len(dropped)} indexes of {', '.join(REINDEXED)} for the load; they are added "
                    f"back after it. If this process is killed before that, run: {restore_hint}",
                    file=sys.stderr,
                )
            try:
                write(MESSAGES, stream.messages(size), plan.shape.messages)
            finally:
                if dropped:
                    progress.step("messages: building indexes")
                    started = time.monotonic()
                    with _alter_progress(engine, conn, progress):
                        _add_back(engine, conn, dropped, restore_hint)
                    progress.finish()
                    report.seconds["messages indexes"] = round(time.monotonic() - started, 2)
            blocked = stream.blocked_users()
            write(BLOCKED_USERS, iter([blocked] if blocked else []), len(blocked))
            write(
                TIPS, (stream.tips[i : i + size] for i in range(0, len(stream.tips), size)), len(stream.tips)
            )
            started = time.monotonic()
            packed = stream.conversations()
            report.seconds["conversations (sorting)"] = round(time.monotonic() - started, 2)
            write(CONVERSATIONS, stream.conversation_rows(packed, size), len(packed))
            if is_mysql(conn):  # fresh statistics for the planner, as after a long life
                started = time.monotonic()
                conn.exec_driver_sql(f"ANALYZE TABLE {', '.join(TABLES)}").all()
                conn.commit()
                report.seconds["analyze"] = round(time.monotonic() - started, 2)
    report.manifest = manifest(plan, stream, report)
    return report


def manifest(plan: Plan, stream: Stream, report: Report) -> dict[str, Any]:
    """The ids a benchmark needs (heaviest creator, its largest list, the catch-up and worst-case
    members, heavy senders and their peers, light members) and the counts."""
    ids, shape, users = plan.user_ids, plan.shape, len(plan.user_ids)
    sent = array("Q", bytes(8 * users))
    received = array("Q", bytes(8 * users))
    peers = array("I", bytes(4 * users))
    for p in range(len(plan.pa)):
        a, b, ab, ba = plan.pa[p], plan.pb[p], plan.count[2 * p], plan.count[2 * p + 1]
        sent[a] += ab
        sent[b] += ba
        received[b] += ab
        received[a] += ba
        peers[a] += 1
        peers[b] += 1
    heavy = heapq.nlargest(5, range(users), key=sent.__getitem__)
    top_peers: dict[int, list[tuple[int, int]]] = {u: [] for u in heavy}
    for p in range(len(plan.pa)):
        a, b = plan.pa[p], plan.pb[p]
        n = plan.count[2 * p] + plan.count[2 * p + 1]
        if a in top_peers:
            top_peers[a].append((n, b))
        if b in top_peers:
            top_peers[b].append((n, a))
    rng = random.Random(f"{shape.seed}:manifest")
    light = [u for u in range(plan.creators + 2, users) if 1 <= sent[u] + received[u] <= 3]
    lists = [lst for lst in plan.lists if lst.owner == 0]
    largest = max(plan.lists, key=lambda lst: len(lst.members))
    blocks = stream.blocked_users()

    def user(u: int) -> dict[str, Any]:
        return {"id": ids[u], "sent": sent[u], "received": received[u], "conversations": peers[u]}

    return {
        "shape": asdict(shape),
        "zipf_exponent": round(plan.exponent, 4),
        "timeline": {"from": stream.start.isoformat(), "until": plan.until.isoformat()},
        "heaviest_creator": user(0)
        | {"lists": [{"id": lst.id, "members": len(lst.members)} for lst in lists]},
        "largest_list": {"id": largest.id, "owner": ids[largest.owner], "members": len(largest.members)},
        "catchup_member": user(plan.catchup)
        | {"unread": sum(plan.unread[2 * p] for p in range(len(plan.pa)) if plan.pb[p] == plan.catchup)},
        "worst_case_member": user(plan.worst)
        | {"unread": plan.unread[2 * plan.creator_pairs], "unread_from": ids[plan.pa[plan.creator_pairs]]},
        "heavy_senders": [
            user(u)
            | {
                "role": "creator" if u < plan.creators else "member",
                "top_peers": [
                    {"id": ids[peer], "messages": n} for n, peer in sorted(top_peers[u], reverse=True)[:10]
                ],
            }
            for u in heavy
        ],
        "light_members": [ids[u] for u in sorted(rng.sample(light, min(20, len(light))))],
        "blocks": {"count": len(blocks), "sample": [{"blocker": b[0], "blocked": b[1]} for b in blocks[:5]]},
        "tips": {"count": len(stream.tips), "sample_message_ids": [t[9] for t in stream.tips[:5]]},
        "counts": dict(report.counts),
    }


# --- command line ----------------------------------------------------------------------------------------


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench seed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--database-url", default=DEFAULT_SEED_DATABASE_URL, help=f"default: {DEFAULT_SEED_DATABASE_URL}"
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply every count of the full size (0.01: 100k messages)"
    )
    full = Shape()
    shape = p.add_argument_group("shape (after --scale)")
    for name in (*Shape.COUNTS, "lists_per_creator", "days", "seed"):
        shape.add_argument(
            f"--{name.replace('_', '-')}", type=int, metavar="N", help=f"full size: {getattr(full, name):,}"
        )
    shape.add_argument("--until", type=_utc, help="end of the timeline, UTC (default: today 00:00)")
    p.add_argument("--manifest", type=Path, help="default: var/bench/seed-<database>.json")
    p.add_argument(
        "--loader",
        choices=("auto", "infile", "json"),
        default="auto",
        help="default: infile on MariaDB when allowed",
    )
    p.add_argument(
        "--chunk", type=int, metavar="ROWS", help="rows per statement (default: 50,000 infile, 20,000 json)"
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="default: on a terminal"
    )
    p.add_argument(
        "--restore-indexes",
        action="store_true",
        help="add back the indexes an interrupted load dropped, and exit",
    )
    return p


def shape_of(args: argparse.Namespace) -> Shape:
    shape = Shape().scaled(args.scale) if args.scale != 1 else Shape()
    given = {f.name: getattr(args, f.name) for f in fields(Shape) if getattr(args, f.name, None) is not None}
    return replace(shape, **given)


def _database_name(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "memory").stem
    return url.database or "default"


def seed_engine(url: str) -> Engine:
    """The engine a seed loads with: a MariaDB database is created when missing, and its
    connections may send files (``LOAD DATA LOCAL``)."""
    if make_url(url).get_backend_name() in ("mysql", "mariadb"):
        ensure_database(url)
        return create_db_engine(url, connect_args={"local_infile": True}, pool_size=2)
    return create_db_engine(url)


def _restore(engine: Engine) -> int:
    with engine.connect() as conn:
        missing = missing_indexes(conn)
        if not missing:
            print("no index missing")
            return 0
        print(f"adding {', '.join(ix.name for ix in missing)}", flush=True)
        add_indexes(conn, missing)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = make_url(args.database_url)
    shown = url.render_as_string(hide_password=True)
    try:
        shape = shape_of(args)
        shape.check()
    except SeedError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 2
    engine = seed_engine(args.database_url)
    loader: Loader | None = None
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)  # unwinds through the finally that re-adds indexes
    try:
        if args.restore_indexes:
            return _restore(engine)
        started = time.monotonic()
        migrate(engine)
        with engine.connect() as conn:
            refuse_if_loaded(conn, shown)
        loader = choose_loader(engine, args.loader)
        if args.chunk:
            loader.chunk_rows = args.chunk
        until = args.until or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        progress = Progress(args.progress)
        print(f"planning {shape.messages:,} messages, {shape.users:,} users", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        plan = build_plan(shape, until)
        planned = round(time.monotonic() - t0, 2)
        hint = f"python -m bench seed --database-url '{shown}' --restore-indexes"
        report = load(engine, plan, loader, progress, restore_hint=hint)
        report.seconds = {"plan": planned, **report.seconds, "total": round(time.monotonic() - started, 2)}
        path = args.manifest or ROOT / "var" / "bench" / f"seed-{_database_name(url)}.json"
        document = {
            "database": shown,
            "backend": engine.dialect.name,
            "loader": loader.name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **report.manifest,
            "seconds": report.seconds,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        print_summary(report, shown, loader.name)
        print(f"manifest: {path}")
        return 0
    except SeedError as exc:
        print(f"seed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"seed: interrupted; {shown} holds a partial load: drop it before seeding it again",
            file=sys.stderr,
        )
        return 130
    finally:
        if loader is not None:
            loader.close()
        engine.dispose()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _terminated(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def print_summary(report: Report, database: str, loader: str) -> None:
    print(f"\nseeded {database} ({loader})")
    print(f"{'step':<26}{'rows':>14}{'seconds':>10}{'rows/s':>12}")
    for step, seconds in report.seconds.items():
        rows = report.counts.get(step)
        rate = f"{rows / seconds:,.0f}" if rows and seconds else ""
        print(f"{step:<26}{'' if rows is None else f'{rows:,}':>14}{seconds:>10,.1f}{rate:>12}")
