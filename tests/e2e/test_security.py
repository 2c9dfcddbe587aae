"""End-to-end security of the MQTT side: the broker, with its ACL plugin, against hostile clients.

Each denial is paired with the allowed neighbour (own topic, own client id, valid token) so
that a broker refusing everything fails these tests too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acl.principal import Role
from acl.tokens import issue_token
from messenger.constants import DEV_SECRET
from messenger.db import unit_of_work
from messenger.repositories import users
from tests.conftest import Stack, token
from tests.e2e.helpers import (
    QUIET,
    Clients,
    any_message,
    api,
    event,
    message,
    not_authorized,
    stored_messages,
    unsigned_token,
    wait_until,
)

OTHER_SECRET = "an-attacker-secret-that-is-long-enough-for-hs256"
SUBACK_FAILURE = 0x80


def _user_exists(stack: Stack, user_id: str) -> bool:
    with unit_of_work(stack.sessions) as session:
        return users.get(session, user_id) is not None


# subscriptions


FORBIDDEN_FILTERS: list[Callable[[str], str]] = [
    lambda alice: f"users/{alice}/messages",
    lambda alice: f"users/{alice}/events",
    lambda alice: f"users/{alice}/#",
    lambda alice: f"inbound/{alice}",
    lambda _: "#",
    lambda _: "$SYS/#",
    lambda _: "users/+/messages",
    lambda _: "users/+/events",
    lambda _: "inbound/+",
    lambda _: "+/+/+",
    lambda _: "presence/#",
]


def test_cannot_subscribe_to_other_users_topics_or_wildcards(clients: Clients) -> None:
    alice_id, bob_id, carol_id = clients.uid("alice"), clients.uid("bob"), clients.uid("carol")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)  # bob's own topics are granted (checked by connect)
    carol = clients.connect(carol_id)

    for make in FORBIDDEN_FILTERS:
        topic_filter = make(alice_id)
        codes = bob.subscribe(topic_filter)  # one filter per SUBSCRIBE: no grant can hide a refusal
        assert [c.value for c in codes] == [SUBACK_FAILURE], topic_filter
    assert bob.is_connected()

    # traffic for alice flows, and none of it reaches bob
    sent = carol.send(alice_id, "for alice only")
    alice.inbox.expect(message(client_id=sent))
    alice.command({"type": "typing", "to": carol_id})
    carol.expect_ack(sent)
    carol.inbox.expect(event("typing"))
    bob.inbox.assert_nothing(lambda r: alice_id in r.topic or carol_id in r.topic, what="others' traffic")


def test_presence_may_be_read_by_anyone(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    bob = clients.connect(bob_id)
    codes = bob.subscribe(f"presence/{alice_id}/phone", f"presence/{alice_id}/+", "presence/+/+")
    assert not any(c.is_failure for c in codes), codes


# publishing


def test_cannot_publish_as_another_user(clients: Clients) -> None:
    alice_id, bob_id, carol_id = clients.uid("alice"), clients.uid("bob"), clients.uid("carol")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    carol = clients.connect(carol_id)
    forged = f"forged-{uuid.uuid4().hex[:8]}"

    # a command on alice's inbound topic, and fake deliveries on alice's own streams
    bob.command({"type": "message", "id": forged, "to": carol_id, "body": "I am alice"})
    as_alice = {"type": "message", "id": forged, "to": carol_id, "body": "x"}
    bob.publish(f"inbound/{alice_id}", json.dumps(as_alice))
    bob.publish(f"users/{alice_id}/messages", f'{{"type": "message", "id": 1, "client_id": "{forged}"}}')
    bob.publish(f"users/{alice_id}/events", f'{{"type": "ack", "client_id": "{forged}", "id": 1}}')
    # a good message after them: once it is stored and delivered, the forged ones had their chance
    good = bob.send(carol_id, "after the forgeries")
    bob.expect_ack(good)
    carol.inbox.expect(message(client_id=good))
    barrier = carol.send(alice_id, "barrier")
    alice.inbox.expect(message(client_id=barrier))

    # bob's own command on his own topic went through, as bob
    assert [row.sender_id for row in stored_messages(clients.stack, bob_id, forged)] == [bob_id]
    # nothing was stored or delivered as alice
    assert stored_messages(clients.stack, alice_id, forged) == []
    carol.inbox.assert_nothing(message(from_=alice_id), wait=0, what="a message forged as alice")
    alice.inbox.assert_nothing(lambda r: forged.encode() in r.payload, what="a forged delivery")
    assert bob.is_connected()


def test_cannot_forge_or_clear_another_users_presence(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id, "phone", online=True)
    retained = clients.stack.app.broker.broker.retained_messages
    wait_until(lambda: f"presence/{alice_id}/phone" in retained, what="alice's retained presence")
    bob = clients.connect(bob_id, "laptop")

    bob.publish(f"presence/{alice_id}/phone", b"", retain=True)  # would clear alice's retained state
    bob.publish(f"presence/{alice_id}/phone", b"offline", retain=True)
    bob.publish(f"presence/{alice_id}/ghost", b"online", retain=True)
    bob.go_online()  # bob's own presence is fine: once it is mirrored, bob's forgeries were handled too

    with api(clients.stack, alice_id) as alice_api:
        wait_until(lambda: alice_api.get(f"/v1/presence/{bob_id}").json()["online"], what="bob online")
        state = alice_api.get(f"/v1/presence/{alice_id}").json()
    assert [d["device"] for d in state["devices"]] == ["phone"]
    assert bytes(retained[f"presence/{alice_id}/phone"].data) == b"online"
    assert f"presence/{alice_id}/ghost" not in retained
    assert alice.is_connected()


def test_retained_inbound_command_is_not_retained(clients: Clients) -> None:
    bob_id, carol_id, service_id = clients.uid("bob"), clients.uid("carol"), clients.uid("svc")
    bob = clients.connect(bob_id)
    carol = clients.connect(carol_id)
    retained = clients.stack.app.broker.broker.retained_messages

    sent = f"retained-{uuid.uuid4().hex[:8]}"
    bob.publish(
        bob.inbound_topic,
        f'{{"type": "message", "id": "{sent}", "to": "{carol_id}", "body": "r"}}',
        retain=True,
    )
    bob.expect_ack(sent)  # the handler processed it like any command
    carol.inbox.expect(message(client_id=sent))
    assert bob.inbound_topic not in retained
    assert not [topic for topic in retained if not topic.startswith("presence/")]

    # a service that subscribes later (a restarting handler) gets no replay of it
    service = clients.connect(
        service_id, "handler", subscribe=False, will=False, password=token(service_id, Role.SERVICE)
    )
    assert not any(c.is_failure for c in service.subscribe(bob.inbound_topic))
    service.inbox.assert_nothing(lambda r: r.topic == bob.inbound_topic, what="a replayed inbound command")
    assert len(stored_messages(clients.stack, bob_id, sent)) == 1
    carol.inbox.assert_nothing(message(client_id=sent), wait=0, what="a second delivery")


def test_retained_presence_is_retained_and_readable_by_other_users(clients: Clients) -> None:
    bob_id, carol_id = clients.uid("bob"), clients.uid("carol")
    clients.connect(bob_id, "phone", online=True)
    topic = f"presence/{bob_id}/phone"
    retained = clients.stack.app.broker.broker.retained_messages
    wait_until(lambda: topic in retained, what="retained presence")

    carol = clients.connect(carol_id)
    assert not any(c.is_failure for c in carol.subscribe(f"presence/{bob_id}/+"))

    state = carol.inbox.expect(lambda r: r.topic == topic, what="bob's retained presence")
    assert state.retain is True
    assert state.payload == b"online"


def test_no_retained_messages_for_topics_the_client_did_not_subscribe_to(clients: Clients) -> None:
    """amqtt 0.12 replays, on every CONNECT, the retained messages matching any filter that any
    client holds (the handler's ``presence/+/+``): a new client must get only what it asked for."""
    bob_id, carol_id = clients.uid("bob"), clients.uid("carol")
    clients.connect(bob_id, "phone", online=True)
    retained = clients.stack.app.broker.broker.retained_messages
    wait_until(lambda: f"presence/{bob_id}/phone" in retained, what="retained presence")

    carol = clients.connect(carol_id)  # subscribes to her own messages and events only

    carol.inbox.assert_nothing(lambda r: r.topic.startswith("presence/"), what="unrequested presence")
    assert not carol.inbox.matching(any_message())


# connecting


@pytest.mark.parametrize(
    "will",
    [
        lambda bob, alice: f"presence/{alice}/x",
        lambda bob, alice: f"users/{alice}/messages",
        lambda bob, alice: f"users/{bob}/events",
        lambda bob, alice: f"inbound/{bob}",
        lambda bob, alice: f"presence/{bob}/+",
        lambda bob, alice: "presence/#",
    ],
    ids=["foreign-presence", "foreign-messages", "own-events", "own-inbound", "wildcard", "hash"],
)
def test_will_outside_own_presence_is_refused(clients: Clients, will: Callable[[str, str], str]) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    code = clients.try_connect(bob_id, token(bob_id), f"{bob_id}/x", will_topic=will(bob_id, alice_id))
    assert not_authorized(code), code
    # the same client with its own presence as Will is fine
    code = clients.try_connect(bob_id, token(bob_id), f"{bob_id}/x", will_topic=f"presence/{bob_id}/x")
    assert code is not None and not code.is_failure, code


@pytest.mark.parametrize(
    "client_id",
    [
        lambda bob, alice: f"{alice}/phone",
        lambda bob, alice: f"{bob}x/phone",
        lambda bob, alice: bob,
        lambda bob, alice: f"{bob}/",
        lambda bob, alice: f"x{bob}/phone",
        lambda bob, alice: "",
    ],
    ids=["other-user", "prefix-confusion", "no-slash", "empty-suffix", "not-a-prefix", "empty"],
)
def test_client_id_must_start_with_own_user_id(
    clients: Clients, client_id: Callable[[str, str], str]
) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    code = clients.try_connect(bob_id, token(bob_id), client_id(bob_id, alice_id))
    assert not_authorized(code), code
    assert not _user_exists(clients.stack, bob_id), "a refused CONNECT must not provision the user"
    code = clients.try_connect(bob_id, token(bob_id), f"{bob_id}/phone")
    assert code is not None and not code.is_failure, code
    assert _user_exists(clients.stack, bob_id)


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "expired": lambda bob: issue_token(
        DEV_SECRET, bob, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2)
    ),
    "not-yet-valid": lambda bob: issue_token(DEV_SECRET, bob, now=datetime.now(UTC) + timedelta(hours=1)),
    "forged": lambda bob: issue_token(OTHER_SECRET, bob),
    "alg-none": lambda bob: unsigned_token(bob),
    "someone-elses": lambda bob: token(f"{bob}-other"),
    "garbage": lambda bob: "not.a.jwt",
    "empty": lambda bob: "",
}


@pytest.mark.parametrize("make_token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_bad_tokens_are_refused(clients: Clients, make_token: Callable[[str], str]) -> None:
    bob_id = clients.uid("bob")
    code = clients.try_connect(bob_id, make_token(bob_id), f"{bob_id}/phone")
    assert not_authorized(code), code
    assert not _user_exists(clients.stack, bob_id)


def test_valid_token_is_accepted_and_provisions_the_user(clients: Clients) -> None:
    bob_id = clients.uid("bob")
    code = clients.try_connect(bob_id, token(bob_id, Role.CREATOR), f"{bob_id}/phone")
    assert code is not None and not code.is_failure, code
    with unit_of_work(clients.stack.sessions) as session:
        user = users.get(session, bob_id)
        assert user is not None and user.role == "creator"


@pytest.mark.parametrize("clean_session", [True, False], ids=["clean", "persistent"])
@pytest.mark.parametrize("attacker", ["bob-with-alices-client-id", "forged-alice"])
def test_refused_connect_does_not_kick_the_live_connection(
    clients: Clients, attacker: str, clean_session: bool
) -> None:
    alice_id, bob_id, carol_id = clients.uid("alice"), clients.uid("bob"), clients.uid("carol")
    alice = clients.connect(alice_id, "phone")
    carol = clients.connect(carol_id)
    clients.ensure_user(bob_id)

    if attacker == "forged-alice":
        code = clients.try_connect(
            alice_id, issue_token(OTHER_SECRET, alice_id), alice.client_id or "", clean_session=clean_session
        )
    else:
        code = clients.try_connect(bob_id, token(bob_id), alice.client_id or "", clean_session=clean_session)
    assert not_authorized(code), code

    # alice is still connected, still subscribed, and still receives
    sent = carol.send(alice_id, "are you still there?")
    alice.inbox.expect(message(client_id=sent), what="a message after the refused take-over")
    assert not alice.disconnected.wait(QUIET), "alice was kicked"  # give a late kick time to show
    assert alice.is_connected()


def _open_connections(server: Any) -> int:
    """asyncio's count of a server's open connections (a set of them from Python 3.13)."""
    clients = getattr(server, "_clients", None)
    return len(clients) if clients is not None else int(server._active_count)


def test_broker_releases_the_connections_of_gone_clients(clients: Clients) -> None:
    """Clean disconnects, dropped connections and refused CONNECTs all leave no open socket
    behind (amqtt alone leaks one now and then: see MessengerBroker.stream_connected)."""
    server = clients.stack.app.broker.broker._servers["default"].instance
    baseline = _open_connections(server)  # the handler, the bridge and whatever is still closing

    for n in range(6):
        user = clients.uid("churn")
        client = clients.connect(user, online=True)
        client.send(user + "-nobody", "x")
        if n % 2:
            client.kill()
        else:
            client.close()
        assert not_authorized(clients.try_connect(user, "garbage", f"{user}/x"))

    wait_until(lambda: _open_connections(server) <= baseline, what=f"open connections back to {baseline}")
