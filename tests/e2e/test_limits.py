"""What one client can do to the shared broker and handler is bounded."""

from __future__ import annotations

import json

from acl.limits import MAX_RETAINED_BYTES, PAYLOAD_LIMITS, TopicClass
from tests.e2e.helpers import Clients, api, event, message, stored_messages, wait_until


def test_deeply_nested_json_is_an_error_and_the_handler_goes_on(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    # under the 64 KiB limit, but deep enough to exhaust Python's recursion in json.loads
    alice.publish(alice.inbound_topic, b'{"a":' + b"[" * 30_000 + b"]" * 30_000 + b"}")
    alice.inbox.expect(event("error", code="invalid_json"), what="invalid_json for deep nesting")

    good = alice.send(bob_id, "still here")
    assert bob.inbox.expect(message(client_id=good)).data["body"] == "still here"


def test_deeply_nested_presence_does_not_stop_the_bridge(clients: Clients) -> None:
    mallory_id, bob_id = clients.uid("mallory"), clients.uid("bob")
    mallory = clients.connect(mallory_id)
    mallory.publish(mallory.presence_topic, b"[" * 30_000 + b"]" * 30_000)
    bob = clients.connect(bob_id, online=True)

    with api(clients.stack, bob_id) as http:
        wait_until(
            lambda: http.get(f"/v1/presence/{bob_id}").json()["online"], what="bob online via the bridge"
        )
    assert bob.is_connected()


def test_a_publish_over_the_broker_limit_is_dropped_and_the_client_goes_on(clients: Clients) -> None:
    limit = PAYLOAD_LIMITS[TopicClass.INBOUND]
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)
    huge = json.dumps(
        {"type": "message", "id": "huge", "to": bob_id, "body": "z" * limit}
    ).encode()
    assert len(huge) > limit
    alice.publish(alice.inbound_topic, huge)

    good = alice.send(bob_id, "after the huge one")
    assert bob.inbox.expect(message(client_id=good)).data["body"] == "after the huge one"
    # the handler never saw it: no error event, nothing stored
    alice.inbox.assert_nothing(event("error"), wait=0)
    assert stored_messages(clients.stack, alice_id, "huge") == []


def test_oversized_presence_is_not_retained(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    clients.connect(alice_id)
    bob = clients.connect(bob_id)
    retained = clients.stack.app.broker.broker.retained_messages

    def settled() -> None:
        # the broker handles one client's publishes in order: once a later command is acked,
        # the presence publish before it has been dealt with
        bob.expect_ack(bob.send(alice_id, "sync point"))

    bob.publish(bob.presence_topic, b"online", retain=True)
    settled()
    assert retained[bob.presence_topic].data == b"online"

    large = json.dumps({"status": "online", "pad": "p" * MAX_RETAINED_BYTES})
    bob.publish(bob.presence_topic, large, retain=True)
    settled()
    # the small state stays; the large one was not kept
    assert retained[bob.presence_topic].data == b"online"
