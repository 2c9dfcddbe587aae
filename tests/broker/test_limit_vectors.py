"""The shared limit vectors (``tests/acl/limit_vectors.json``) through the embedded broker's paths.

``tests/acl/test_limit_vectors.py`` checks :mod:`acl.limits` itself; here a
:class:`~broker.server.MessengerBroker` (built, not listening) with the Messenger plugin answers
each row, clients authenticated with a token of the row's role:

* ``payload``: the PUBLISH as the broker receives it (``_handle_message_delivery``): allowed
  means it was queued for delivery, and, retained and not empty, kept retained. Control messages
  are consumed by the broker, never relayed: their rows run through the C port and
  :mod:`acl.limits` only.
* ``subscriptions``: ``held`` filters added with ``add_subscription``, then the row's filter.
* ``connections``: ``others`` connections counted for the user (as the service account, which
  has no limit, so that any number can be set up), then the row's client asks to be admitted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import IncomingApplicationMessage, Session

from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier, issue_token
from acl.topics import CONTROL_TOPIC
from messenger.constants import DEV_SECRET
from tests.acl.test_limit_vectors import row_id
from tests.broker.test_acl_vectors import _Harness

VECTORS_PATH = Path(__file__).resolve().parent.parent / "acl" / "limit_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
ROWS = [r for r in VECTORS if not (r["limit"] == "payload" and r["topic"] == CONTROL_TOPIC)]
SUBACK_FAILURE = 0x80


class Harness(_Harness):
    def session(self, user: str, role: str, device: str = "t") -> Session:
        session = Session()
        session.client_id = f"{user}/{device}"
        session.username = user
        session.password = issue_token(DEV_SECRET, user, role=Role(role))
        session.clean_session = True
        session.keep_alive = 60
        return session

    async def connected(self, user: str, role: str, device: str = "t") -> Session:
        session = self.session(user, role, device)
        assert await self.authenticate(session), (user, role)
        return session

    async def decide(self, row: dict[str, Any]) -> bool:
        if row["limit"] == "payload":
            return await self.publish(row)
        if row["limit"] == "subscriptions":
            return await self.subscribe(row)
        return await self.admit(row)

    async def publish(self, row: dict[str, Any]) -> bool:
        session = await self.connected(row["user"], row["role"])
        topic, data, retain = row["topic"], b"x" * row["size"], row["retain"]
        message = IncomingApplicationMessage(1, topic, 1, data, retain)
        message.publish_packet = PublishPacket.build(topic, data, 1, False, 1, retain)
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivered.set_result(message)
        queue, retained = self.broker._broadcast_queue, self.broker.retained_messages
        retained.pop(topic, None)
        try:
            assert await self.broker._handle_message_delivery(session, None, delivered)  # type: ignore[arg-type]
            relayed = queue.qsize() == 1
            kept = topic in retained
        finally:
            while not queue.empty():
                queue.get_nowait()
            retained.pop(topic, None)
        return relayed and (kept if retain and data else not kept)

    async def subscribe(self, row: dict[str, Any]) -> bool:
        session = await self.connected(row["user"], row["role"])
        # filters the topic rules allow this role
        pattern = "inbound/u{}" if row["role"] == Role.SERVICE else "presence/u{}/+"
        try:
            for n in range(row["held"]):
                assert await self.broker.add_subscription((pattern.format(n), 1), session) != SUBACK_FAILURE
            wanted = pattern.format(0 if row["again"] else "new")
            return await self.broker.add_subscription((wanted, 1), session) != SUBACK_FAILURE
        finally:
            await self.broker._del_all_subscriptions(session)

    async def admit(self, row: dict[str, Any]) -> bool:
        connections = []
        try:
            for n in range(row["others"]):
                other = await self.connected(row["user"], Role.SERVICE, f"other-{n}")
                connections.append(object())
                assert self.broker._admit(other, connections[-1])  # type: ignore[arg-type]
            session = await self.connected(row["user"], row["role"])
            connections.append(object())
            return self.broker._admit(session, connections[-1])  # type: ignore[arg-type]
        finally:
            for connection in connections:
                self.broker._user_connections.release(connection)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    harness = Harness(TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET)))
    try:
        yield harness
    finally:
        harness.close()


def test_rows_cover_every_limit() -> None:
    assert {r["limit"] for r in ROWS} == {"payload", "subscriptions", "connections"}
    assert len(VECTORS) - len(ROWS) == sum(r.get("topic") == CONTROL_TOPIC for r in VECTORS) > 0


@pytest.mark.parametrize("row", ROWS, ids=[row_id(r) for r in ROWS])
def test_broker_limit_decision(harness: Harness, row: dict[str, Any]) -> None:
    assert harness.run(harness.decide(row)) is row["allow"], row["note"]
    assert harness.broker._user_connections.count(row["user"]) == 0  # nothing left counted
