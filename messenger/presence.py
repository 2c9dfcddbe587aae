"""Presence store: which devices of a user are online, on which broker node, since when.

The bridge writes it; the API reads it. In-process when no Redis URL is set, Redis otherwise.
A user is online while any of their devices is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import redis

from messenger.constants import PRESENCE_DEVICES_KEY, PRESENCE_LAST_SEEN_KEY, PRESENCE_NODE_KEY
from messenger.exceptions import StoreUnavailable


@dataclass(frozen=True, slots=True)
class DeviceState:
    device: str
    node: str
    since: datetime


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    user_id: str
    devices: list[DeviceState] = field(default_factory=list)
    last_seen: datetime | None = None

    @property
    def online(self) -> bool:
        return bool(self.devices)

    @property
    def since(self) -> datetime | None:
        return min((d.since for d in self.devices), default=None)


class PresenceStore(Protocol):
    def set_device(self, user_id: str, device: str, *, online: bool, node: str, at: datetime) -> None: ...

    def get(self, user_id: str) -> PresenceInfo: ...

    def get_many(self, user_ids: Sequence[str]) -> list[PresenceInfo]:
        """Presence of each of ``user_ids``, in order (one round trip on Redis)."""
        ...

    def reset_node(self, node: str, at: datetime) -> int:
        """Mark offline every device recorded as online on ``node``; returns how many.

        A broker node that restarts (or crashed) sends no Last Wills, so its bridge calls this
        before it subscribes; the broker's retained presence then brings back who is online.
        """
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class MemoryPresenceStore:
    """Presence for one process (``messenger serve`` without Redis)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, DeviceState]] = {}
        self._last_seen: dict[str, datetime] = {}

    def set_device(self, user_id: str, device: str, *, online: bool, node: str, at: datetime) -> None:
        at = at.astimezone(UTC)
        with self._lock:
            devices = self._devices.setdefault(user_id, {})
            if online:
                if device not in devices:
                    devices[device] = DeviceState(device, node, at)
            else:
                devices.pop(device, None)
                self._last_seen[user_id] = at

    def get(self, user_id: str) -> PresenceInfo:
        with self._lock:
            devices = sorted(self._devices.get(user_id, {}).values(), key=lambda d: d.device)
            return PresenceInfo(user_id, devices, self._last_seen.get(user_id))

    def get_many(self, user_ids: Sequence[str]) -> list[PresenceInfo]:
        return [self.get(user_id) for user_id in user_ids]

    def reset_node(self, node: str, at: datetime) -> int:
        at = at.astimezone(UTC)
        reset = 0
        with self._lock:
            for user_id, devices in self._devices.items():
                stale = [name for name, state in devices.items() if state.node == node]
                for name in stale:
                    del devices[name]
                    self._last_seen[user_id] = at
                reset += len(stale)
        return reset

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisPresenceStore:
    """Presence in Redis: a hash of online devices per user, and a last-seen time."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def set_device(self, user_id: str, device: str, *, online: bool, node: str, at: datetime) -> None:
        devices_key = PRESENCE_DEVICES_KEY.format(uid=user_id)
        try:
            pipe = self._redis.pipeline()
            if online:
                state = json.dumps({"node": node, "since": at.timestamp()})
                # keep the first "since" when a device repeats its online state
                pipe.hsetnx(devices_key, device, state)
                pipe.sadd(PRESENCE_NODE_KEY.format(node=node), f"{user_id}/{device}")
            else:
                _queue_offline(pipe, user_id, device, node, at)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"presence store unavailable: {exc}") from exc

    def get(self, user_id: str) -> PresenceInfo:
        return self.get_many([user_id])[0]

    def get_many(self, user_ids: Sequence[str]) -> list[PresenceInfo]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for user_id in user_ids:
                pipe.hgetall(PRESENCE_DEVICES_KEY.format(uid=user_id))
                pipe.get(PRESENCE_LAST_SEEN_KEY.format(uid=user_id))
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"presence store unavailable: {exc}") from exc
        result = []
        for i, user_id in enumerate(user_ids):
            raw_devices, raw_last_seen = replies[2 * i], replies[2 * i + 1]
            devices = []
            for device, raw in sorted(raw_devices.items()):
                state = json.loads(raw)
                devices.append(
                    DeviceState(device.decode(), state["node"], datetime.fromtimestamp(state["since"], UTC))
                )
            last_seen = datetime.fromtimestamp(float(raw_last_seen), UTC) if raw_last_seen else None
            result.append(PresenceInfo(user_id, devices, last_seen))
        return result

    def reset_node(self, node: str, at: datetime) -> int:
        node_key = PRESENCE_NODE_KEY.format(node=node)
        reset = 0
        try:
            for member in self._redis.smembers(node_key):
                text = member.decode() if isinstance(member, bytes) else member
                user_id, _, device = text.partition("/")
                raw = self._redis.hget(PRESENCE_DEVICES_KEY.format(uid=user_id), device)
                pipe = self._redis.pipeline()
                if raw is not None and json.loads(raw)["node"] == node:
                    _queue_offline(pipe, user_id, device, node, at)
                    reset += 1
                else:  # gone already, or now recorded by another node
                    pipe.srem(node_key, member)
                pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"presence store unavailable: {exc}") from exc
        return reset

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self._redis.close()


def _queue_offline(pipe: redis.client.Pipeline, user_id: str, device: str, node: str, at: datetime) -> None:
    """Queue on ``pipe`` what a device going offline changes: its state, last seen, its node's set."""
    pipe.hdel(PRESENCE_DEVICES_KEY.format(uid=user_id), device)
    pipe.set(PRESENCE_LAST_SEEN_KEY.format(uid=user_id), str(at.timestamp()))
    pipe.srem(PRESENCE_NODE_KEY.format(node=node), f"{user_id}/{device}")


def create_presence_store(redis_url: str | None) -> PresenceStore:
    """Redis when a URL is configured, else in-process."""
    return RedisPresenceStore(redis_url) if redis_url else MemoryPresenceStore()
