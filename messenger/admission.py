"""Admitting an authenticated client: revoked tokens are refused, new users are provisioned.

Called for every CONNECT, by the embedded broker's plugin and by the gateway endpoint that
Mosquitto's plugin asks, after the token itself has been verified (:mod:`acl.connect`).
"""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Principal
from messenger.db import unit_of_work
from messenger.repositories import revocations, users


class ConnectGate:
    """Admits an authenticated CONNECT: refuses revoked tokens, provisions new users from their
    claims, and keeps the stored role equal to the token's.

    The token is authoritative for the role (the login service issues both): the gateway's
    ``/mqtt/acl`` reads the stored role, so a user whose token lost the ``service`` role must
    not keep service rights there. One primary-key read per CONNECT, in the transaction that
    already checks revocations; the broker plugin's cache keeps reconnect storms off it.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def __call__(self, principal: Principal) -> None:
        with unit_of_work(self._sessions) as session:
            if revocations.is_revoked(session, principal):
                raise PermissionError("the token is revoked")
            user = users.ensure(session, principal.user_id, principal.role.value)
            if user.role != principal.role.value:
                user.role = principal.role.value

    async def admit(self, principal: Principal) -> None:
        await asyncio.to_thread(self, principal)
