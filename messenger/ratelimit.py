"""Rate limits: one named token bucket per action and user (or client address), shared by MQTT
and HTTP.

A bucket ``(action, key)`` holds ``burst`` tokens, refilled at ``rate`` per second; each action
has its own :class:`Limit` (the ``MESSENGER_*_RATE_PER_S`` / ``*_BURST`` settings). In-process
for ``messenger serve`` without Redis; in Redis (one Lua script per bucket, every bucket of a
batch in one pipelined round trip, so several processes share them) otherwise. A rate of 0
turns an action's limit off.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis

from messenger.constants import RATE_LIMIT_KEY
from messenger.exceptions import Rejected, StoreUnavailable

#: Buckets idle for this long are full again and may be forgotten.
_IDLE_FACTOR = 2.0


class Action(StrEnum):
    """What a bucket limits. Its key is the user id, except for :attr:`ADDRESS`."""

    SEND = "send"  # message commands and POST /v1/messages, 1:1 and list messages
    TIP = "tip"  # tips, MQTT and REST together
    CHARGE_DECLINED = "charge_declined"  # declined charges; empty: tips refused before billing
    RESEND = "resend"  # REST replays of a stored message that publish it again
    TYPING = "typing"  # typing events (dropped beyond the limit)
    READ = "read"  # read marks, MQTT and REST
    SYNC = "sync"  # catch-ups over MQTT (sync commands, devices coming online)
    REQUEST = "request"  # authenticated REST requests, per user
    ADDRESS = "address"  # public REST requests, per client address

    @property
    def too_many(self) -> str:
        """What a refusal says there were too many of."""
        return _TOO_MANY[self]


_TOO_MANY = {
    Action.SEND: "messages",
    Action.TIP: "tips",
    Action.CHARGE_DECLINED: "declined charges",
    Action.RESEND: "resends of stored messages",
    Action.TYPING: "typing events",
    Action.READ: "read marks",
    Action.SYNC: "catch-up requests",
    Action.REQUEST: "requests",
    Action.ADDRESS: "requests from your address",
}

#: One bucket: an action and whose it is (a user id, or a client address).
Bucket = tuple[Action, str]


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many of the asked-for tokens may go now, and when to retry the rest."""

    granted: int
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate > 0


#: The limit of each action; an action not in it is not limited.
Limits = Mapping[Action, Limit]


class RateLimiter(Protocol):
    def acquire(self, requests: Mapping[Bucket, int]) -> dict[Bucket, Allowance]:
        """Take ``count`` tokens from each bucket (fewer when it runs dry). A count of 0 only
        looks: its ``retry_after`` is 0 while the bucket holds a whole token, else the wait for
        one. A bucket whose action is not limited grants everything."""
        ...

    def enabled(self, action: Action) -> bool:
        """Whether ``action`` is limited at all."""
        ...

    def close(self) -> None: ...


def _take(tokens: float, count: int, limit: Limit) -> tuple[int, float, float]:
    """(granted, tokens left, retry_after) for a bucket holding ``tokens``."""
    granted = min(count, int(tokens))
    left = tokens - granted
    # refused (or, for a look, empty): granted == floor(tokens), the next token is 1 - left away.
    # Whole milliseconds, rounded up (as the Redis script does): never 0 for a refusal.
    short = granted < count or (count == 0 and left < 1)
    retry_after = math.ceil((1 - left) * 1000 / limit.rate) / 1000 if short else 0.0
    return granted, left, retry_after


class MemoryRateLimiter:
    """Buckets in this process (thread-safe)."""

    def __init__(self, limits: Limits) -> None:
        self._limits = {action: limit for action, limit in limits.items() if limit.enabled}
        self._lock = threading.Lock()
        self._buckets: dict[Bucket, tuple[float, float]] = {}  # bucket -> (tokens, at)

    def enabled(self, action: Action) -> bool:
        return action in self._limits

    def acquire(self, requests: Mapping[Bucket, int]) -> dict[Bucket, Allowance]:
        now = time.monotonic()
        result = {}
        with self._lock:
            for bucket, count in requests.items():
                limit = self._limits.get(bucket[0])
                if limit is None:
                    result[bucket] = Allowance(count)
                    continue
                tokens, at = self._buckets.get(bucket, (float(limit.burst), now))
                tokens = min(float(limit.burst), tokens + (now - at) * limit.rate)
                granted, left, retry_after = _take(tokens, count, limit)
                self._buckets[bucket] = (left, now)
                result[bucket] = Allowance(granted, retry_after)
            if len(self._buckets) > 100_000:
                self._forget_idle(now)
        return result

    def _forget_idle(self, now: float) -> None:
        idle = {action: _IDLE_FACTOR * limit.burst / limit.rate for action, limit in self._limits.items()}
        for bucket in [b for b, (_, at) in self._buckets.items() if now - at > idle[b[0]]]:
            del self._buckets[bucket]

    def close(self) -> None:
        pass


# KEYS[1] bucket; ARGV: rate, burst, count, ttl_ms. Returns {granted, retry_after_ms}.
# Redis TIME, not the caller's clock, so every process agrees on "now". A count of 0 looks.
_TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local granted = math.min(count, math.floor(tokens))
tokens = tokens - granted
local retry = 0
if granted < count or (count == 0 and tokens < 1) then
  retry = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {granted, retry}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every process; one round trip per batch of buckets."""

    def __init__(self, url: str, limits: Limits) -> None:
        self._limits = {action: limit for action, limit in limits.items() if limit.enabled}
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._redis.register_script(_TAKE_SCRIPT)
        self._ttl_ms = {
            action: int(1000 * _IDLE_FACTOR * limit.burst / limit.rate) + 1000
            for action, limit in self._limits.items()
        }

    def enabled(self, action: Action) -> bool:
        return action in self._limits

    def acquire(self, requests: Mapping[Bucket, int]) -> dict[Bucket, Allowance]:
        result = {b: Allowance(count) for b, count in requests.items() if b[0] not in self._limits}
        asked = [b for b in requests if b[0] in self._limits]
        if not asked:
            return result
        try:
            pipe = self._redis.pipeline(transaction=False)
            for action, key in asked:
                limit = self._limits[action]
                self._script(
                    keys=[RATE_LIMIT_KEY.format(action=action.value, key=key)],
                    args=[limit.rate, limit.burst, requests[(action, key)], self._ttl_ms[action]],
                    client=pipe,
                )
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"rate limit store unavailable: {exc}") from exc
        for bucket, (granted, retry_ms) in zip(asked, replies, strict=True):
            result[bucket] = Allowance(int(granted), int(retry_ms) / 1000)
        return result

    def close(self) -> None:
        self._redis.close()


def create_rate_limiter(redis_url: str | None, limits: Limits) -> RateLimiter:
    """Redis when a URL is configured (shared by every process), else in-process."""
    return RedisRateLimiter(redis_url, limits) if redis_url else MemoryRateLimiter(limits)


class Grants:
    """What one :meth:`RateLimiter.acquire` granted, handed out request by request, in the
    order the caller goes through its requests (so each bucket's earliest requests go first)."""

    def __init__(self, allowance: Mapping[Bucket, Allowance]) -> None:
        self._allowance = allowance
        self._left = {bucket: a.granted for bucket, a in allowance.items()}

    def take(self, bucket: Bucket) -> float | None:
        """None when one more request may go on ``bucket`` (or it was not asked: no limiter);
        else the seconds until it could."""
        left = self._left.get(bucket)
        if left is None:
            return None
        if left > 0:
            self._left[bucket] = left - 1
            return None
        return self._allowance[bucket].retry_after

    def look(self, bucket: Bucket) -> float | None:
        """None when ``bucket``, asked as a look, held a token; else the seconds until it will."""
        allowance = self._allowance.get(bucket)
        return None if allowance is None or allowance.retry_after <= 0 else allowance.retry_after


def acquire(limiter: RateLimiter | None, take: Iterable[Bucket] = (), look: Iterable[Bucket] = ()) -> Grants:
    """Ask ``limiter`` once for a whole unit of work: one token per item of ``take`` (a bucket
    named n times asks for n) and a look at each bucket of ``look`` (which ``take`` must not
    name). Without a limiter everything is granted.

    Raises StoreUnavailable when the limiter's store (Redis) does not answer.
    """
    wanted: Counter[Bucket] = Counter(take)
    for bucket in look:
        if wanted.get(bucket):
            raise ValueError(f"bucket {bucket} is both taken from and looked at")
        wanted[bucket] = 0
    if limiter is None or not wanted:
        return Grants({})
    return Grants(limiter.acquire(wanted))


def refusal(action: Action, retry_after: float) -> Rejected:
    """The ``rate_limited`` refusal of a request over ``action``'s limit (REST: 429); ``limit``
    names the bucket (``send``, ``tip``, ``read``, ``sync`` ...), ``retry_after`` the wait."""
    retry_after = round(retry_after, 3)
    return Rejected(
        f"too many {action.too_many}; retry in {retry_after:g}s",
        code="rate_limited",
        retry_after=retry_after,
        limit=action.value,
    )


def spend(limiter: RateLimiter | None, action: Action, key: str) -> None:
    """Take one token from ``key``'s ``action`` bucket; raises ``rate_limited`` when it is empty
    (and StoreUnavailable when the limiter's store does not answer)."""
    wait = acquire(limiter, [(action, key)]).take((action, key))
    if wait is not None:
        raise refusal(action, wait)
