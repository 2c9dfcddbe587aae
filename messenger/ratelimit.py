"""Per-user rate limits on sends, shared by MQTT and HTTP.

A token bucket per user: ``burst`` sends at once, refilled at ``rate`` per second. In-process
for ``messenger serve`` without Redis; in Redis (one Lua script, so several processes share the
buckets) otherwise. A rate of 0 turns the limit off.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import redis

from messenger.constants import RATE_LIMIT_KEY
from messenger.exceptions import StoreUnavailable

#: Buckets idle for this long are full again and may be forgotten.
_IDLE_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many of the asked-for sends may go now, and when to retry the rest."""

    granted: int
    retry_after: float = 0.0


class RateLimiter(Protocol):
    def acquire(self, requests: Mapping[str, int]) -> dict[str, Allowance]:
        """Take ``count`` tokens for each user in ``requests`` (fewer when the bucket runs dry)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate > 0


def _take(tokens: float, count: int, limit: Limit) -> tuple[int, float, float]:
    """(granted, tokens left, retry_after) for a bucket holding ``tokens``."""
    granted = min(count, int(tokens))
    left = tokens - granted
    # when some are refused, granted == floor(tokens): the next token is 1 - left away.
    # Whole milliseconds, rounded up (as the Redis script does): never 0 for a refusal.
    retry_after = 0.0 if granted == count else math.ceil((1 - left) * 1000 / limit.rate) / 1000
    return granted, left, retry_after


class MemoryRateLimiter:
    """Buckets in this process (thread-safe)."""

    def __init__(self, limit: Limit) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)

    def acquire(self, requests: Mapping[str, int]) -> dict[str, Allowance]:
        if not self._limit.enabled:
            return {user: Allowance(count) for user, count in requests.items()}
        now = time.monotonic()
        result = {}
        with self._lock:
            for user, count in requests.items():
                tokens, at = self._buckets.get(user, (float(self._limit.burst), now))
                tokens = min(float(self._limit.burst), tokens + (now - at) * self._limit.rate)
                granted, left, retry_after = _take(tokens, count, self._limit)
                self._buckets[user] = (left, now)
                result[user] = Allowance(granted, retry_after)
            if len(self._buckets) > 100_000:
                self._forget_idle(now)
        return result

    def _forget_idle(self, now: float) -> None:
        idle = _IDLE_FACTOR * self._limit.burst / self._limit.rate
        for user in [u for u, (_, at) in self._buckets.items() if now - at > idle]:
            del self._buckets[user]

    def close(self) -> None:
        pass


# KEYS[1] bucket; ARGV: rate, burst, count, ttl_ms. Returns {granted, retry_after_ms}.
# Redis TIME, not the caller's clock, so every process agrees on "now".
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
if granted < count then
  retry = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {granted, retry}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every process; one round trip per batch of users."""

    def __init__(self, url: str, limit: Limit) -> None:
        self._limit = limit
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._redis.register_script(_TAKE_SCRIPT)
        self._ttl_ms = int(1000 * _IDLE_FACTOR * limit.burst / limit.rate) + 1000 if limit.enabled else 0

    def acquire(self, requests: Mapping[str, int]) -> dict[str, Allowance]:
        if not self._limit.enabled:
            return {user: Allowance(count) for user, count in requests.items()}
        users = list(requests)
        args = (self._limit.rate, self._limit.burst)
        try:
            pipe = self._redis.pipeline(transaction=False)
            for user in users:
                self._script(
                    keys=[RATE_LIMIT_KEY.format(uid=user)],
                    args=[*args, requests[user], self._ttl_ms],
                    client=pipe,
                )
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"rate limit store unavailable: {exc}") from exc
        return {
            user: Allowance(int(granted), int(retry_ms) / 1000)
            for user, (granted, retry_ms) in zip(users, replies, strict=True)
        }

    def close(self) -> None:
        self._redis.close()


def create_rate_limiter(redis_url: str | None, limit: Limit) -> RateLimiter:
    """Redis when a URL is configured (shared by every process), else in-process."""
    return RedisRateLimiter(redis_url, limit) if redis_url else MemoryRateLimiter(limit)
