"""End-to-end messaging through the real broker, handler, bridge and REST API, with paho clients.

Every test runs against each stack of the ``stack`` fixture (SQLite/MariaDB x memory/Redis
presence) and uses its own user ids.
"""

from __future__ import annotations

import json

import pytest

from messenger.constants import MAX_PAYLOAD_BYTES
from tests.e2e.helpers import (
    Clients,
    any_message,
    api,
    event,
    message,
    stored_messages,
    wait_until,
)


def test_message_reaches_online_recipient_and_sender_gets_ack(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)

    sent = alice.send(bob_id, "hi bob")

    got = bob.inbox.expect(message(client_id=sent), what="alice's message").data
    assert got["from"] == alice_id
    assert got["to"] == bob_id
    assert got["body"] == "hi bob"
    assert got["tip"] is None and got["list"] is None
    assert isinstance(got["id"], int)
    assert got["sent_at"].endswith("Z")
    ack = alice.expect_ack(sent)
    assert ack["id"] == got["id"]
    assert ack["status"] == "sent"
    assert ack["duplicate"] is False
    # each side gets only its own half
    alice.inbox.assert_nothing(any_message(), what="message to the sender")
    bob.inbox.assert_nothing(event("ack"), wait=0, what="ack to the recipient")


def test_offline_recipient_gets_missed_messages_in_order_once_online(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    clients.ensure_user(bob_id)  # bob exists but is not connected
    alice = clients.connect(alice_id)

    sent = [alice.send(bob_id, f"missed {n}") for n in range(3)]
    ids = [alice.expect_ack(client_msg_id)["id"] for client_msg_id in sent]
    assert ids == sorted(ids) and len(set(ids)) == 3

    bob = clients.connect(bob_id, "phone")  # subscribes before presence, as clients must
    bob.go_online()

    received = [r.data for r in bob.inbox.expect_n(message(from_=alice_id), 3, what="the 3 missed messages")]
    assert [m["id"] for m in received] == ids
    assert [m["client_id"] for m in received] == sent
    assert [m["body"] for m in received] == ["missed 0", "missed 1", "missed 2"]
    synced = bob.inbox.expect(event("synced"), what="synced").data
    assert synced["last_id"] == ids[-1]
    assert synced["more"] is False
    # none twice
    bob.inbox.assert_nothing(any_message(), what="a second delivery")
    assert len(bob.inbox.matching(any_message())) == 3


def test_redelivered_command_is_stored_once_and_acked_twice(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    command = {"type": "message", "id": "redelivered-1", "to": bob_id, "body": "once"}

    alice.command(command)
    alice.command(command)

    acks = [r.data for r in alice.inbox.expect_n(event("ack", client_id="redelivered-1"), 2, what="two acks")]
    assert acks[0]["id"] == acks[1]["id"]
    assert sorted(a["duplicate"] for a in acks) == [False, True]
    rows = stored_messages(clients.stack, alice_id, "redelivered-1")
    assert [row.id for row in rows] == [acks[0]["id"]]
    assert rows[0].recipient_id == bob_id and rows[0].body == "once"
    # at least once: bob has it (a redelivery may push it again, always with the same server id)
    deliveries = bob.inbox.expect(message(client_id="redelivered-1")).data
    assert deliveries["id"] == acks[0]["id"]
    assert {r.data["id"] for r in bob.inbox.matching(any_message())} == {acks[0]["id"]}


def test_blocked_sender_gets_a_normal_ack_and_nothing_is_delivered(clients: Clients) -> None:
    alice_id, bob_id, carol_id = clients.uid("alice"), clients.uid("bob"), clients.uid("carol")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    carol = clients.connect(carol_id)
    with api(clients.stack, bob_id) as bob_api:
        response = bob_api.put(f"/v1/blocks/{alice_id}")
        assert response.status_code == 200, response.text

        blocked = alice.send(bob_id, "into the void")
        ack = alice.expect_ack(blocked)
        assert ack["status"] == "sent"
        assert ack["duplicate"] is False
        alice.inbox.assert_nothing(event("error"), wait=0)
        # carol's later message reaches bob; alice's earlier one never does
        barrier = carol.send(bob_id, "after the blocked one")
        bob.inbox.expect(message(client_id=barrier))
        bob.inbox.assert_nothing(message(from_=alice_id), what="a message from a blocked sender")

        rows = stored_messages(clients.stack, alice_id, blocked)
        assert len(rows) == 1 and rows[0].blocked is True
        history = bob_api.get("/v1/messages", params={"with": alice_id})
        assert history.status_code == 200, history.text
        assert blocked not in [m["client_id"] for m in history.json()["messages"]]

        # the sender's own history still shows it: hiding it would reveal the block
        with api(clients.stack, alice_id) as alice_api:
            own = alice_api.get("/v1/messages", params={"with": bob_id}).json()["messages"]
        assert blocked in [m["client_id"] for m in own]

        # after unblocking, messages flow again (the block, not the pair, stopped it)
        assert bob_api.delete(f"/v1/blocks/{alice_id}").status_code == 204
        later = alice.send(bob_id, "unblocked")
        assert bob.inbox.expect(message(client_id=later)).data["body"] == "unblocked"
    bob.inbox.assert_nothing(message(client_id=blocked), wait=0)


def test_bad_input_gets_error_events_and_the_next_message_flows(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)

    alice.publish(alice.inbound_topic, b'{"type": "message", "id": "broken", "to": ')
    error = alice.inbox.expect(event("error", code="invalid_json"), what="invalid_json").data
    assert error["detail"]

    template = {"type": "message", "id": "too-big", "to": bob_id, "body": ""}
    padding = MAX_PAYLOAD_BYTES + 1 - len(json.dumps(template).encode())
    oversized = json.dumps({**template, "body": "x" * padding}).encode()
    assert len(oversized) == MAX_PAYLOAD_BYTES + 1
    alice.publish(alice.inbound_topic, oversized)
    alice.inbox.expect(event("error", code="payload_too_large"), what="payload_too_large")

    good = alice.send(bob_id, "still working")
    assert bob.inbox.expect(message(client_id=good)).data["body"] == "still working"
    alice.expect_ack(good)
    assert stored_messages(clients.stack, alice_id, "too-big") == []
    bob.inbox.assert_nothing(message(client_id="too-big"), wait=0)


def test_largest_allowed_payload_is_delivered(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    template = {"type": "message", "id": "just-fits", "to": bob_id, "body": ""}
    padding = MAX_PAYLOAD_BYTES - len(json.dumps(template).encode())
    payload = json.dumps({**template, "body": "y" * padding}).encode()
    assert len(payload) == MAX_PAYLOAD_BYTES

    alice.publish(alice.inbound_topic, payload)

    assert len(bob.inbox.expect(message(client_id="just-fits")).data["body"]) == padding
    alice.expect_ack("just-fits")


def test_read_receipt_then_sync(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    sent = [alice.send(bob_id, f"m{n}") for n in range(3)]
    ids = [r.data["id"] for r in bob.inbox.expect_n(message(from_=alice_id), 3)]
    assert [alice.expect_ack(c)["id"] for c in sent] == ids

    bob.command({"type": "read", "up_to": ids[1]})
    read = alice.inbox.expect(event("read", by=bob_id), what="read receipt").data
    assert read["up_to"] == ids[1]

    # sync after the first message: the two later ones again, in order
    bob.command({"type": "sync", "after": ids[0]})
    again = [r.data["id"] for r in bob.inbox.expect_n(message(from_=alice_id), 2, what="synced messages")]
    assert again == ids[1:]
    synced = {"type": "synced", "last_id": ids[2], "more": False, "client_id": None}
    assert bob.inbox.expect(event("synced")).data == synced

    # plain sync: only what is still unread
    bob.command({"type": "sync"})
    unread = bob.inbox.expect(message(from_=alice_id), what="the unread message").data
    assert unread["id"] == ids[2]
    assert bob.inbox.expect(event("synced")).data["last_id"] == ids[2]
    bob.inbox.assert_nothing(any_message(), what="an already read message")


def test_typing_reaches_the_peer(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)

    alice.command({"type": "typing", "to": bob_id})

    bob.inbox.expect(event("typing", **{"from": alice_id}), what="typing")


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_presence_is_mirrored_and_goes_offline_when_the_connection_dies(
    clients: Clients, transport: str
) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    clients.ensure_user(alice_id)
    bob = clients.connect(bob_id, "phone-1", transport=transport)

    def presence() -> dict[str, object]:
        with api(clients.stack, alice_id) as alice_api:
            response = alice_api.get(f"/v1/presence/{bob_id}")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    assert presence()["online"] is False
    bob.go_online()
    online = wait_until(lambda: (p := presence())["online"] and p, what="bob online")
    assert online["user"] == bob_id
    assert [d["device"] for d in online["devices"]] == ["phone-1"]
    assert online["since"] is not None

    bob.kill()  # no DISCONNECT: the broker publishes bob's Last Will

    offline = wait_until(lambda: (p := presence())["online"] is False and p, what="bob offline")
    assert offline["devices"] == []
    assert offline["last_seen"] is not None
    retained = clients.stack.app.broker.broker.retained_messages[f"presence/{bob_id}/phone-1"]
    assert bytes(retained.data) == b"offline"


def test_clean_disconnect_does_not_fire_the_last_will(clients: Clients) -> None:
    bob_id = clients.uid("bob")
    bob = clients.connect(bob_id, "phone", online=True)
    retained = clients.stack.app.broker.broker.retained_messages
    wait_until(lambda: f"presence/{bob_id}/phone" in retained, what="retained presence")

    bob.close()

    carol = clients.connect(clients.uid("carol"))
    assert not any(c.is_failure for c in carol.subscribe(f"presence/{bob_id}/+"))
    state = carol.inbox.expect(lambda r: r.topic == f"presence/{bob_id}/phone", what="retained presence")
    assert state.retain and state.payload == b"online"
    topic = f"presence/{bob_id}/phone"
    carol.inbox.assert_nothing(lambda r: r.topic == topic and r.payload != b"online", what="a Last Will")


def test_chat_over_websockets(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id, "browser", transport="websockets")
    bob = clients.connect(bob_id, "phone")

    to_bob = alice.send(bob_id, "from the browser")
    assert bob.inbox.expect(message(client_id=to_bob)).data["from"] == alice_id
    alice.expect_ack(to_bob)

    to_alice = bob.send(alice_id, "back to the browser")
    assert alice.inbox.expect(message(client_id=to_alice)).data["body"] == "back to the browser"
    bob.expect_ack(to_alice)

    # presence over WebSocket too: coming online pushes what is unread
    alice.go_online()
    pushed = alice.inbox.expect(message(client_id=to_alice), what="unread message on presence").data
    assert pushed["from"] == bob_id
    assert alice.inbox.expect(event("synced")).data["more"] is False
