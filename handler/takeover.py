"""A dead handler's share of the stream, taken over by a live one within seconds.

Mosquitto 2.0 keeps a shared-subscription member's persistent session after its client dies,
and keeps routing that member's share of new commands into it until the session expires (an
hour for a handler). Without help, a handler that is killed and not started again under the
same name (a Kubernetes pod replaced under a new name, a scaled-down deployment, a host lost)
takes with it every command it held and, until expiry, one share of every new one, resends
included.

So handlers heartbeat in Redis, in a sorted set of handler names scored by the time of their
last beat (Redis's clock, so processes agree). A handler whose beat is older than
``dead_after_s`` is dead. A live one claims it (a leased key, so that one handler takes it),
connects with the dead one's client id and resumes its session without subscribing: the broker
first sends what the session held, in flight and queued, then nothing new, because the taker's
first packet unsubscribes the session from the shared group. The taker handles those commands
like its own (the processor is idempotent, so a command the dead one had stored is answered,
not stored twice), and once every command is acked and none came for ``idle_s``, it ends the
session (Session Expiry Interval 0 on DISCONNECT) and forgets the name.

If the dead handler comes back under its name meanwhile, its CONNECT takes the session from the
taker, which does not reconnect: the returning handler gets the rest by redelivery. A handler
stopped with SIGTERM ends its own session once it has acked all it took, and leaves the
registry; if it could not (the database or the broker away), it leaves both for a taker.

A handler judges others dead only after its own beats have succeeded for ``dead_after_s`` plus
one beat, so that after a Redis outage, when every beat is stale, the live ones have beaten
again before anyone looks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, cast

import redis

from handler.consumer import HandlerConsumer
from messenger.constants import HANDLER_TAKEOVER_KEY, HANDLERS_KEY
from messenger.exceptions import StoreUnavailable
from messenger.metrics import Metrics

logger = logging.getLogger(__name__)

# KEYS[1] the sorted set; ARGV[1] name. Scores in Redis's milliseconds.
_BEAT: Final = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1
"""
# ARGV[1] age in ms: names whose last beat is older.
_DEAD: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))
"""
# ARGV[1] name, ARGV[2] age in ms: remove the name only if it has not beaten since.
_FORGET: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < now - tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""
# KEYS[1] the claim; ARGV[1] owner, ARGV[2] lease ms: extend or drop only one's own claim.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class HandlerRegistry:
    """The handlers' heartbeats and takeover claims in Redis. Redis errors are
    :class:`StoreUnavailable`."""

    def __init__(self, client: redis.Redis, *, key: str = HANDLERS_KEY) -> None:
        self._redis = client
        self._key = key
        self._beat = client.register_script(_BEAT)
        self._dead = client.register_script(_DEAD)
        self._forget = client.register_script(_FORGET)
        self._renew = client.register_script(_RENEW)

    @classmethod
    def from_url(cls, url: str, *, key: str = HANDLERS_KEY) -> HandlerRegistry:
        return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2), key=key)

    def _claim_key(self, name: str) -> str:
        return HANDLER_TAKEOVER_KEY.format(name=name) if self._key == HANDLERS_KEY else f"{self._key}:{name}"

    def beat(self, name: str) -> None:
        self._call(self._beat, [self._key], [name])

    def dead(self, dead_after_s: float) -> list[str]:
        """Names whose last beat is older than ``dead_after_s``."""
        names = cast("list[bytes | str]", self._call(self._dead, [self._key], [int(dead_after_s * 1000)]))
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def forget(self, name: str, dead_after_s: float) -> bool:
        """Remove ``name`` unless it has beaten within ``dead_after_s`` (it came back)."""
        return bool(self._call(self._forget, [self._key], [name, int(dead_after_s * 1000)]))

    def remove(self, name: str) -> None:
        try:
            self._redis.zrem(self._key, name)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"handler registry unavailable: {exc}") from exc

    def claim(self, name: str, owner: str, lease_s: float) -> bool:
        """Take the right to empty ``name``'s session for ``lease_s`` (one handler wins)."""
        try:
            return bool(self._redis.set(self._claim_key(name), owner, nx=True, px=int(lease_s * 1000)))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"handler registry unavailable: {exc}") from exc

    def renew(self, name: str, owner: str, lease_s: float) -> bool:
        return bool(self._call(self._renew, [self._claim_key(name)], [owner, int(lease_s * 1000)]))

    def release(self, name: str, owner: str) -> None:
        self._call(self._renew, [self._claim_key(name)], [owner, 0])

    def close(self) -> None:
        self._redis.close()

    @staticmethod
    def _call(script: object, keys: list[str], args: list[object]) -> object:
        try:
            return script(keys=keys, args=args)  # type: ignore[operator]
        except redis.RedisError as exc:
            raise StoreUnavailable(f"handler registry unavailable: {exc}") from exc


#: Makes (not starts) a consumer that resumes the named handler's session to empty it.
DrainFactory = Callable[[str], HandlerConsumer]


class Takeover:
    """This handler's heartbeat, and the emptying of dead handlers' sessions.

    Two threads: one beats every ``beat_s`` and nothing else (so that a long takeover never
    makes this handler look dead); one looks for dead handlers and empties their sessions, one
    at a time, with a consumer from ``drain`` started on ``host:port``.
    """

    def __init__(
        self,
        registry: HandlerRegistry,
        name: str,
        drain: DrainFactory,
        *,
        host: str,
        port: int,
        beat_s: float = 1.0,
        dead_after_s: float = 5.0,
        idle_s: float = 1.0,
        connect_timeout_s: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        if dead_after_s < 2 * beat_s:
            raise ValueError("dead_after_s must be at least two beats")
        self._registry = registry
        self._name = name
        self._drain = drain
        self._where = (host, port)
        self._beat_s = beat_s
        self._dead_after_s = dead_after_s
        self._idle_s = idle_s
        self._connect_timeout_s = connect_timeout_s
        self._lease_s = max(30.0, 4 * dead_after_s)
        self._metrics = metrics
        self._stopping = threading.Event()
        self._beats_stopping = threading.Event()
        self._healthy_since: float | None = None  # monotonic time of the first beat of a good run
        self._threads = [
            threading.Thread(target=self._run_beats, name="handler-heartbeat", daemon=True),
            threading.Thread(target=self._run_takeovers, name="handler-takeover", daemon=True),
        ]
        #: names whose sessions this handler ended
        self.ended: list[str] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop_taking_over(self, join_timeout: float = 40.0) -> None:
        """Empty no more sessions (one being emptied is left to another); keep beating."""
        self._stopping.set()
        if self._threads[1].is_alive():
            self._threads[1].join(timeout=join_timeout)

    def stop(self, *, leave: bool) -> None:
        """Stop beating. ``leave``: this handler ended its own session on the way out, so there
        is nothing to take over; it leaves the registry."""
        self.stop_taking_over()
        self._beats_stopping.set()
        if self._threads[0].is_alive():
            self._threads[0].join(timeout=5)
        if leave:
            try:
                self._registry.remove(self._name)
            except StoreUnavailable as exc:
                logger.warning("handler %s could not leave the registry (%s)", self._name, exc)

    # heartbeat thread

    def _run_beats(self) -> None:
        failing = False
        while not self._beats_stopping.is_set():
            try:
                self._registry.beat(self._name)
            except StoreUnavailable as exc:
                self._healthy_since = None
                if not failing:
                    logger.warning(
                        "handler %s cannot beat (%s); not judging others meanwhile", self._name, exc
                    )
                failing = True
            else:
                if self._healthy_since is None:
                    self._healthy_since = time.monotonic()
                if failing:
                    logger.info("handler %s beats again", self._name)
                failing = False
            self._beats_stopping.wait(self._beat_s)

    def _may_judge(self) -> bool:
        since = self._healthy_since
        return since is not None and time.monotonic() - since >= self._dead_after_s + self._beat_s

    # takeover thread

    def _run_takeovers(self) -> None:
        while not self._stopping.wait(self._beat_s):
            if not self._may_judge():
                continue
            try:
                dead = [n for n in self._registry.dead(self._dead_after_s) if n != self._name]
                for other in dead:
                    if self._stopping.is_set() or not self._may_judge():
                        break
                    if self._registry.claim(other, self._name, self._lease_s):
                        self._take_over(other)
            except StoreUnavailable as exc:
                logger.warning("handler %s: takeover paused (%s)", self._name, exc)
            except Exception:
                logger.exception("handler %s: takeover failed; trying again", self._name)

    def _take_over(self, other: str) -> None:
        logger.warning(
            "handler %s: %s has not beaten for %.0fs; emptying its session",
            self._name,
            other,
            self._dead_after_s,
        )
        consumer = self._drain(other)
        consumer.start(*self._where, wait_s=None)
        emptied = False
        try:
            emptied = self._wait_emptied(other, consumer)
        finally:
            # ended only if every command it sent was handled and acked; else the broker keeps
            # the rest (unacked) for the next try
            ended = consumer.stop(end_session=emptied)
            if ended:
                self._registry.forget(other, self._dead_after_s)
                self.ended.append(other)
            self._registry.release(other, self._name)
            if self._metrics is not None:
                self._metrics.handler_takeovers.labels("ended" if ended else "abandoned").inc()
            logger.warning(
                "handler %s: %s's session %s after %d commands",
                self._name,
                other,
                "ended" if ended else "left for a later try",
                consumer.processed,
            )

    def _wait_emptied(self, other: str, consumer: HandlerConsumer) -> bool:
        """True once the session sent everything it held and all of it was handled; False when
        giving up on it (stopping, taken back, not connected in time)."""
        connect_deadline = time.monotonic() + self._connect_timeout_s
        next_check = 0.0
        while not self._stopping.wait(0.1):
            if consumer.lost.is_set():
                return False  # taken back (the dead one returned) or the broker went away
            if not consumer.ready:
                if time.monotonic() > connect_deadline:
                    return False
                continue
            if time.monotonic() >= next_check:  # Redis once a beat, not ten times
                next_check = time.monotonic() + self._beat_s
                self._registry.renew(other, self._name, self._lease_s)
                if other not in self._registry.dead(self._dead_after_s):
                    return False  # it beats again: its session is its own
            if consumer.settled(self._idle_s):
                return True
        return False
