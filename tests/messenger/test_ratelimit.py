"""Rate limits: the same named token buckets in-process and in Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from messenger import ratelimit
from messenger.constants import RATE_LIMIT_KEY
from messenger.exceptions import Rejected, StoreUnavailable
from messenger.ratelimit import (
    Action,
    Limit,
    Limits,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    _take,
)
from tests.conftest import PRESENCE, REDIS_URL

SEND = Action.SEND


def _limiter(kind: str, limits: Limits) -> RateLimiter:
    return RedisRateLimiter(REDIS_URL, limits) if kind == "redis" else MemoryRateLimiter(limits)


@pytest.fixture(params=PRESENCE)
def kind(request: pytest.FixtureRequest) -> str:
    return "redis" if request.param == "redis" else "memory"


@pytest.fixture
def user() -> str:
    return f"rl-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def slow(kind: str) -> Iterator[RateLimiter]:
    """Sends: burst 3, tips: burst 1, declined charges: burst 2, then one every 100 s: nothing
    refills during a test. Typing is not limited."""
    limiter = _limiter(
        kind,
        {
            SEND: Limit(rate=0.01, burst=3),
            Action.TIP: Limit(rate=0.01, burst=1),
            Action.CHARGE_DECLINED: Limit(rate=0.01, burst=2),
            Action.TYPING: Limit(rate=0, burst=1),
        },
    )
    yield limiter
    limiter.close()


def test_burst_then_refused_with_retry_after(slow: RateLimiter, user: str) -> None:
    bucket = (SEND, user)
    assert slow.acquire({bucket: 2})[bucket].granted == 2
    allowance = slow.acquire({bucket: 5})[bucket]
    assert allowance.granted == 1
    assert 0 < allowance.retry_after <= 100
    refused = slow.acquire({bucket: 1})[bucket]
    assert refused.granted == 0
    assert refused.retry_after > 90  # a whole token is 100 s away


def test_a_refusal_never_says_retry_now() -> None:
    # a bucket a hair short of a whole token: the wait rounds up to a millisecond, not down to 0
    granted, _, retry_after = _take(30.9999999, 31, Limit(rate=5, burst=30))
    assert granted == 30
    assert retry_after == 0.001


def test_users_have_their_own_buckets(slow: RateLimiter, user: str) -> None:
    other = user + "-other"
    got = slow.acquire({(SEND, user): 10, (SEND, other): 1})
    assert (got[(SEND, user)].granted, got[(SEND, other)].granted) == (3, 1)
    assert slow.acquire({(SEND, other): 5})[(SEND, other)].granted == 2


def test_actions_have_their_own_buckets_and_limits(slow: RateLimiter, user: str) -> None:
    """One round trip serves several named buckets of one user, each with its own limit; an
    action without a limit (rate 0, or not configured) grants everything."""
    asked = {(SEND, user): 5, (Action.TIP, user): 5, (Action.TYPING, user): 500, (Action.SYNC, user): 50}
    got = {bucket: a.granted for bucket, a in slow.acquire(asked).items()}
    assert got == {
        (SEND, user): 3,
        (Action.TIP, user): 1,
        (Action.TYPING, user): 500,
        (Action.SYNC, user): 50,
    }
    assert slow.enabled(Action.TIP)
    assert not slow.enabled(Action.TYPING)
    assert not slow.enabled(Action.SYNC)


def test_a_look_takes_nothing_and_says_whether_a_token_is_left(slow: RateLimiter, user: str) -> None:
    declines = (Action.CHARGE_DECLINED, user)
    for _ in range(3):
        assert slow.acquire({declines: 0})[declines] == ratelimit.Allowance(0, 0.0)
    assert slow.acquire({declines: 2})[declines].granted == 2  # the looks took nothing
    empty = slow.acquire({declines: 0})[declines]
    assert empty.granted == 0
    assert 90 < empty.retry_after <= 100


def test_grants_hand_out_the_tokens_in_order(slow: RateLimiter, user: str) -> None:
    tipped, declines = (Action.TIP, user), (Action.CHARGE_DECLINED, user)
    grants = ratelimit.acquire(slow, [tipped, tipped], [declines])
    assert grants.take(tipped) is None
    wait = grants.take(tipped)
    assert wait is not None and wait > 90
    assert grants.look(declines) is None
    assert grants.take((Action.READ, user)) is None  # not asked: not limited
    with pytest.raises(ValueError, match="both"):
        ratelimit.acquire(slow, [tipped], [tipped])
    # without a limiter everything goes
    assert ratelimit.acquire(None, [tipped] * 10).take(tipped) is None


def test_spend_raises_the_rate_limited_refusal(slow: RateLimiter, user: str) -> None:
    ratelimit.spend(slow, Action.TIP, user)
    with pytest.raises(Rejected) as refused:
        ratelimit.spend(slow, Action.TIP, user)
    assert refused.value.code == "rate_limited"
    assert refused.value.detail.startswith("too many tips; retry in ")
    assert 90 < float(refused.value.extra["retry_after"]) <= 100


def test_redis_keys_name_the_action(user: str) -> None:
    if "redis" not in PRESENCE:
        pytest.skip("Redis is not among MESSENGER_TEST_PRESENCE")
    limiter = RedisRateLimiter(REDIS_URL, {Action.TIP: Limit(0.01, 3), SEND: Limit(0.01, 3)})
    client = redis.Redis.from_url(REDIS_URL)
    try:
        limiter.acquire({(Action.TIP, user): 1})
        assert client.exists(RATE_LIMIT_KEY.format(action="tip", key=user)) == 1
        assert client.exists(RATE_LIMIT_KEY.format(action="send", key=user)) == 0
        assert 0 < client.pttl(RATE_LIMIT_KEY.format(action="tip", key=user)) <= 601_000
    finally:
        limiter.close()
        client.close()


def test_tokens_come_back_at_the_rate(kind: str, user: str) -> None:
    limiter = _limiter(kind, {SEND: Limit(rate=50, burst=1)})
    bucket = (SEND, user)
    try:
        assert limiter.acquire({bucket: 1})[bucket].granted == 1
        assert limiter.acquire({bucket: 1})[bucket].granted == 0
        time.sleep(0.1)  # 5 tokens' worth at 50/s; the bucket holds 1
        assert limiter.acquire({bucket: 3})[bucket].granted == 1
    finally:
        limiter.close()


def test_rate_zero_turns_the_limit_off(kind: str, user: str) -> None:
    limiter = _limiter(kind, {SEND: Limit(rate=0, burst=1)})
    try:
        assert limiter.acquire({(SEND, user): 10_000})[(SEND, user)].granted == 10_000
    finally:
        limiter.close()


def test_buckets_in_redis_are_shared_by_processes(user: str) -> None:
    if "redis" not in PRESENCE:
        pytest.skip("Redis is not among MESSENGER_TEST_PRESENCE")
    limits = {SEND: Limit(0.01, 3)}
    one, two = RedisRateLimiter(REDIS_URL, limits), RedisRateLimiter(REDIS_URL, limits)
    try:
        assert one.acquire({(SEND, user): 2})[(SEND, user)].granted == 2
        assert two.acquire({(SEND, user): 2})[(SEND, user)].granted == 1
    finally:
        one.close()
        two.close()


def test_redis_down_is_store_unavailable(user: str) -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", {SEND: Limit(1, 1)})
    try:
        with pytest.raises(StoreUnavailable):
            limiter.acquire({(SEND, user): 1})
    finally:
        limiter.close()
