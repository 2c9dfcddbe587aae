"""The embedded broker's accounting for the limits of :mod:`acl.limits`.

The decisions are :mod:`acl.limits`'s (the Mosquitto plugin makes the same ones in C); what the
broker adds is the counting: live connections per user, subscribed filters per client id.
"""

from __future__ import annotations

from collections import Counter
from typing import Generic, TypeVar

from acl.limits import connection_allowed, subscription_allowed
from acl.principal import Principal

#: What identifies one connection (amqtt's writer adapter: one per socket).
Connection = TypeVar("Connection")


class UserConnections(Generic[Connection]):
    """Live connections per user, by client id.

    A CONNECT with the client id of a live connection takes that one over, so it never counts as
    one more device: the limit is on distinct client ids. During a takeover both connections are
    live for a moment; the client id is counted once, and released when the last of them ends.
    """

    def __init__(self) -> None:
        self._live: dict[str, Counter[str]] = {}
        self._held: dict[Connection, tuple[str, str]] = {}

    def admit(self, p: Principal, client_id: str, connection: Connection) -> bool:
        """Count ``connection`` for ``p`` unless that would exceed the limit; False if refused."""
        live = self._live.get(p.user_id)
        others = 0 if live is None else len(live) - (client_id in live)
        if not connection_allowed(p, others):
            return False
        self._live.setdefault(p.user_id, Counter())[client_id] += 1
        self._held[connection] = (p.user_id, client_id)
        return True

    def release(self, connection: Connection) -> None:
        """``connection`` has ended (nothing happens for one that was never admitted)."""
        held = self._held.pop(connection, None)
        if held is None:
            return
        user, client_id = held
        live = self._live[user]
        live[client_id] -= 1
        if live[client_id] <= 0:
            del live[client_id]
            if not live:
                del self._live[user]

    def count(self, user: str) -> int:
        """Distinct client ids of ``user`` with a live connection."""
        return len(self._live.get(user, ()))


class ClientSubscriptions:
    """The distinct topic filters each client id holds (a session's, so they outlive a connection
    of a persistent session and end with the session)."""

    def __init__(self) -> None:
        self._filters: dict[str, set[str]] = {}

    def allows(self, client_id: str, topic_filter: str) -> bool:
        """May ``client_id`` subscribe to ``topic_filter`` (again, or as one filter more)?"""
        held = self._filters.get(client_id, set())
        return subscription_allowed(len(held), already_held=topic_filter in held)

    def add(self, client_id: str, topic_filter: str) -> None:
        self._filters.setdefault(client_id, set()).add(topic_filter)

    def discard(self, client_id: str, topic_filter: str) -> None:
        held = self._filters.get(client_id)
        if held is not None:
            held.discard(topic_filter)
            if not held:
                del self._filters[client_id]

    def forget(self, client_id: str) -> None:
        """The session ended: every filter with it."""
        self._filters.pop(client_id, None)

    def count(self, client_id: str) -> int:
        return len(self._filters.get(client_id, ()))
