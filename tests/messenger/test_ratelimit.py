"""Send rate limits: the same token bucket in-process and in Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from messenger.exceptions import StoreUnavailable
from messenger.ratelimit import Limit, MemoryRateLimiter, RateLimiter, RedisRateLimiter, _take
from tests.conftest import PRESENCE, REDIS_URL


def _limiter(kind: str, limit: Limit) -> RateLimiter:
    return RedisRateLimiter(REDIS_URL, limit) if kind == "redis" else MemoryRateLimiter(limit)


@pytest.fixture(params=PRESENCE)
def kind(request: pytest.FixtureRequest) -> str:
    return "redis" if request.param == "redis" else "memory"


@pytest.fixture
def user() -> str:
    return f"rl-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def slow(kind: str) -> Iterator[RateLimiter]:
    """Burst 3, then one send every 100 s: nothing refills during a test."""
    limiter = _limiter(kind, Limit(rate=0.01, burst=3))
    yield limiter
    limiter.close()


def test_burst_then_refused_with_retry_after(slow: RateLimiter, user: str) -> None:
    assert slow.acquire({user: 2})[user].granted == 2
    allowance = slow.acquire({user: 5})[user]
    assert allowance.granted == 1
    assert 0 < allowance.retry_after <= 100
    refused = slow.acquire({user: 1})[user]
    assert refused.granted == 0
    assert refused.retry_after > 90  # a whole token is 100 s away


def test_a_refusal_never_says_retry_now() -> None:
    # a bucket a hair short of a whole token: the wait rounds up to a millisecond, not down to 0
    granted, _, retry_after = _take(30.9999999, 31, Limit(rate=5, burst=30))
    assert granted == 30
    assert retry_after == 0.001


def test_users_have_their_own_buckets(slow: RateLimiter, user: str) -> None:
    other = user + "-other"
    got = slow.acquire({user: 10, other: 1})
    assert (got[user].granted, got[other].granted) == (3, 1)
    assert slow.acquire({other: 5})[other].granted == 2


def test_tokens_come_back_at_the_rate(kind: str, user: str) -> None:
    limiter = _limiter(kind, Limit(rate=50, burst=1))
    try:
        assert limiter.acquire({user: 1})[user].granted == 1
        assert limiter.acquire({user: 1})[user].granted == 0
        time.sleep(0.1)  # 5 tokens' worth at 50/s; the bucket holds 1
        assert limiter.acquire({user: 3})[user].granted == 1
    finally:
        limiter.close()


def test_rate_zero_turns_the_limit_off(kind: str, user: str) -> None:
    limiter = _limiter(kind, Limit(rate=0, burst=1))
    try:
        assert limiter.acquire({user: 10_000})[user].granted == 10_000
    finally:
        limiter.close()


def test_buckets_in_redis_are_shared_by_processes(user: str) -> None:
    if "redis" not in PRESENCE:
        pytest.skip("Redis is not among MESSENGER_TEST_PRESENCE")
    one, two = RedisRateLimiter(REDIS_URL, Limit(0.01, 3)), RedisRateLimiter(REDIS_URL, Limit(0.01, 3))
    try:
        assert one.acquire({user: 2})[user].granted == 2
        assert two.acquire({user: 2})[user].granted == 1
    finally:
        one.close()
        two.close()


def test_redis_down_is_store_unavailable(user: str) -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", Limit(1, 1))
    try:
        with pytest.raises(StoreUnavailable):
            limiter.acquire({user: 1})
    finally:
        limiter.close()
