"""Who sees whose presence over REST (issue 16, class 8; the rule is in docs/security.md).

Any authenticated member may look up anyone's presence, as any member may subscribe to any
``presence/{uid}/+`` over MQTT, except across a block: a user who blocked the caller, or whom the
caller blocked, is answered exactly like a user who was never online (so the answer does not say
there is a block). A batch asks for at most 100 users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from messenger.mqtt import MqttPublisher
from messenger.presence import PresenceStore
from tests.api.app import MakeClient, client_maker
from tests.api.testclient import TestClient
from tests.conftest import token

MakeUser = Callable[..., str]
MakeUid = Callable[[str], str]

T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
#: The most users one ``POST /v1/presence/query`` may ask for (docs/api.md).
MAX_USERS = 100
NEVER_SEEN = {"online": False, "devices": [], "since": None, "last_seen": None}


@pytest.fixture
def make_client(sessions: sessionmaker[Session], publisher: MqttPublisher) -> Iterator[MakeClient]:
    with client_maker(sessions=sessions, publisher=publisher) as make:
        yield make


def auth(user: str, role: Role = Role.MEMBER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}"}


def look_up(client: TestClient, viewer: str, user: str) -> dict[str, Any]:
    response = client.get(f"/v1/presence/{user}", headers=auth(viewer))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def query(client: TestClient, viewer: str, users: list[str], role: Role = Role.MEMBER) -> Any:
    return client.post("/v1/presence/query", json={"users": users}, headers=auth(viewer, role))


def batch(client: TestClient, viewer: str, users: list[str]) -> list[dict[str, Any]]:
    response = query(client, viewer, users)
    assert response.status_code == 200, response.text
    answers: list[dict[str, Any]] = response.json()["presence"]
    return answers


def seen(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: answer[key] for key in NEVER_SEEN}


def block(client: TestClient, blocker: str, blocked: str) -> None:
    response = client.put(f"/v1/blocks/{blocked}", headers=auth(blocker))
    assert response.status_code == 200, response.text


def test_a_block_hides_presence_both_ways(
    make_client: MakeClient, presence_store: PresenceStore, make_user: MakeUser
) -> None:
    client = make_client(presence=presence_store)
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    for user in (alice, bob, carol):
        presence_store.set_device(user, "phone", online=True, node="node-1", at=T0)
    bob_as_carol_sees_him = look_up(client, carol, bob)
    assert bob_as_carol_sees_him["online"] is True

    block(client, alice, bob)

    # neither side of the block sees the other, on either endpoint
    assert seen(look_up(client, alice, bob)) == NEVER_SEEN
    assert seen(look_up(client, bob, alice)) == NEVER_SEEN
    assert [seen(a) for a in batch(client, alice, [carol, bob])] == [
        seen(look_up(client, carol, alice)),
        NEVER_SEEN,
    ]
    assert [(a["user"], seen(a)) for a in batch(client, bob, [alice, carol, alice])] == [
        (alice, NEVER_SEEN),
        (carol, seen(look_up(client, alice, carol))),
    ]
    # everyone else still sees both, and each sees themselves
    assert look_up(client, carol, bob) == bob_as_carol_sees_him
    assert look_up(client, carol, alice)["online"] is True
    assert look_up(client, alice, alice)["online"] is True
    assert look_up(client, bob, bob)["online"] is True

    client.delete(f"/v1/blocks/{bob}", headers=auth(alice))

    assert look_up(client, alice, bob) == bob_as_carol_sees_him
    assert look_up(client, bob, alice)["online"] is True


def test_a_hidden_user_looks_like_one_never_seen(
    make_client: MakeClient, presence_store: PresenceStore, make_user: MakeUser, make_uid: MakeUid
) -> None:
    """The answer for a blocked relation is the one for a user who was never online."""
    client = make_client(presence=presence_store)
    alice, bob, nobody = make_user("alice"), make_user("bob"), make_uid("nobody")
    presence_store.set_device(bob, "phone", online=True, node="node-1", at=T0)
    presence_store.set_device(bob, "phone", online=False, node="node-1", at=T0.replace(hour=11))
    block(client, bob, alice)

    hidden, never = look_up(client, alice, bob), look_up(client, alice, nobody)

    assert {**hidden, "user": None} == {**never, "user": None}


def test_the_batch_is_capped(make_client: MakeClient, make_user: MakeUser, make_uid: MakeUid) -> None:
    client = make_client()
    alice = make_user("alice")
    most = [make_uid("p") for _ in range(MAX_USERS)]

    assert [a["user"] for a in batch(client, alice, most)] == most
    too_many = query(client, alice, [*most, make_uid("one-more")])
    assert too_many.status_code == 422, too_many.text
    assert too_many.json()["code"] == "invalid_request"
    # repeats count: the cap bounds the request, not the answer
    assert query(client, alice, [alice] * (MAX_USERS + 1)).status_code == 422


def test_the_service_sees_everyone(
    make_client: MakeClient, presence_store: PresenceStore, make_user: MakeUser
) -> None:
    client = make_client(presence=presence_store)
    alice, bob = make_user("alice"), make_user("bob")
    presence_store.set_device(bob, "phone", online=True, node="node-1", at=T0)
    block(client, bob, alice)

    answers = query(client, "service", [alice, bob], role=Role.SERVICE)

    assert answers.status_code == 200, answers.text
    assert [a["online"] for a in answers.json()["presence"]] == [False, True]
