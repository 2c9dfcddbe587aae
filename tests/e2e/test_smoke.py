"""Smoke test of the stack fixture: one message from alice reaches bob, and alice gets the ack."""

from __future__ import annotations

from tests.e2e.helpers import Clients, message


def test_alice_to_bob(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    bob = clients.connect(bob_id)

    sent = alice.send(bob_id, "hi")

    assert bob.inbox.expect(message(client_id=sent)).data["body"] == "hi"
    alice.expect_ack(sent)
