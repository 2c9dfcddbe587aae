"""Helpers of the mass-message and tip e2e tests, for a ``messenger serve`` stack or the
Mosquitto topology alike (anything shaped like :class:`tests.e2e.helpers.Target`)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from messenger.db import unit_of_work
from messenger.models import Message
from tests.conftest import token
from tests.e2e.helpers import TIMEOUT, ChatClient, Clients, Target, message


def rest(target: Target, user: str, role: Role = Role.MEMBER) -> httpx.Client:
    """A REST client of ``user`` with a token of ``role``."""
    headers = {"Authorization": f"Bearer {token(user, role)}"}
    return httpx.Client(base_url=target.api_url, headers=headers, timeout=TIMEOUT)


def connect_creator(clients: Clients, user: str, device: str = "t") -> ChatClient:
    return clients.connect(user, device, password=token(user, Role.CREATOR))


def make_list(target: Target, creator: str, members: list[str]) -> str:
    """A list of the creator's through the REST API, members added in pages of 1,000."""
    with rest(target, creator, Role.CREATOR) as api:
        created = api.post("/v1/lists", json={"name": "fans"})
        assert created.status_code == 201, created.text
        list_id: str = created.json()["id"]
        for start in range(0, len(members), 1000):
            added = api.post(f"/v1/lists/{list_id}/members", json={"members": members[start : start + 1000]})
            assert added.status_code == 200, added.text
        assert api.get(f"/v1/lists/{list_id}").json()["members"] == len(members)
    return list_id


def block(target: Target, blocker: str, blocked: str, role: Role = Role.MEMBER) -> None:
    with rest(target, blocker, role) as api:
        response = api.put(f"/v1/blocks/{blocked}")
        assert response.status_code in (200, 201), response.text


def list_message(sender: ChatClient, list_id: str, body: str = "new post") -> str:
    """Send a list message over MQTT; returns its client id."""
    cid = uuid.uuid4().hex
    sender.command({"type": "message", "id": cid, "list": list_id, "body": body})
    return cid


def copies(sessions: sessionmaker[Session], sender: str, cid: str) -> dict[str, int]:
    """How many rows each recipient has of one client message id of ``sender``."""
    with unit_of_work(sessions) as session:
        rows = session.execute(
            select(Message.recipient_id, func.count())
            .where(Message.sender_id == sender, Message.client_msg_id == cid)
            .group_by(Message.recipient_id)
        )
        return {recipient: int(n) for recipient, n in rows}


def deliveries(client: ChatClient, cid: str) -> list[dict[str, Any]]:
    """The messages with client id ``cid`` that ``client`` received."""
    return [r.data for r in client.inbox.matching(message(client_id=cid))]


def tip_command(to: str, amount: int, body: str = "thanks!", cid: str | None = None) -> dict[str, Any]:
    """A ``message`` command with a tip in USD, under ``cid`` or a fresh client id."""
    tip = {"amount": amount, "currency": "USD"}
    return {"type": "message", "id": cid or uuid.uuid4().hex, "to": to, "body": body, "tip": tip}
