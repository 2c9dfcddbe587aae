"""Admitting an authenticated client: revoked tokens are refused, new users are provisioned.

Called for every CONNECT, by the embedded broker's plugin and by the gateway endpoint that
Mosquitto's plugin asks, after the token itself has been verified (:mod:`acl.connect`).
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Principal
from messenger.db import unit_of_work
from messenger.repositories import revocations, users


class ConnectGate:
    """Admits an authenticated CONNECT: refuses revoked tokens, provisions new users from their claims."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, principal: Principal) -> None:
        with unit_of_work(self._sessions) as session:
            if revocations.is_revoked(session, principal):
                raise PermissionError("the token is revoked")
            with self._lock:
                known = principal.user_id in self._known
            if not known:
                users.ensure(session, principal.user_id, principal.role.value)
        with self._lock:
            self._known.add(principal.user_id)

    async def admit(self, principal: Principal) -> None:
        await asyncio.to_thread(self, principal)
