"""REST and MQTT together: the same message is one message whichever way it went in or out.

Sent over HTTP, it arrives over MQTT; sent over MQTT, it is found over HTTP; a read mark set
over HTTP reaches the sender over MQTT; a revoked token loses both REST and its live MQTT
connections; the send rate limit is one budget for both ways in.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx

from acl.principal import Role
from tests.conftest import token
from tests.e2e.helpers import TIMEOUT, Clients, api, event, message, not_authorized, wait_until


def _admin(clients: Clients) -> httpx.Client:
    service = clients.uid("ops")
    headers = {"Authorization": f"Bearer {token(service, Role.SERVICE)}"}
    return httpx.Client(base_url=clients.stack.api_url, headers=headers, timeout=TIMEOUT)


def test_sent_over_http_arrives_over_mqtt(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice_phone = clients.connect(alice_id, "phone")  # alice's other device sees the ack
    bob = clients.connect(bob_id)

    with api(clients.stack, alice_id) as rest:
        response = rest.post("/v1/messages", json={"to": bob_id, "body": "from the web"})
    assert response.status_code == 201, response.text
    sent = response.json()

    got = bob.inbox.expect(message(id=sent["id"]), what="the message sent over HTTP").data
    assert (got["from"], got["body"], got["client_id"]) == (alice_id, "from the web", sent["client_id"])
    ack = alice_phone.expect_ack(sent["client_id"])
    assert ack["id"] == sent["id"]


def test_sent_over_mqtt_is_found_over_http_and_read_over_http_reaches_the_sender(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    clients.ensure_user(bob_id)

    sent = [alice.send(bob_id, f"over mqtt {n}") for n in range(3)]
    ids = [alice.expect_ack(client_id)["id"] for client_id in sent]

    with api(clients.stack, bob_id) as rest:
        history = rest.get("/v1/messages", params={"with": alice_id}).json()
        assert [m["id"] for m in history["messages"]] == ids[::-1]
        unread = rest.get("/v1/messages/unread").json()
        assert [m["id"] for m in unread["messages"]] == ids
        (conversation,) = rest.get("/v1/conversations").json()["conversations"]
        assert (conversation["peer"], conversation["unread"]) == (alice_id, 3)
        assert conversation["last_message"]["id"] == ids[-1]

        marked = rest.post("/v1/messages/read", json={"up_to": ids[1]})
        assert marked.json() == {"read": [{"from": alice_id, "up_to": ids[1]}]}

    alice.inbox.expect(event("read", by=bob_id, up_to=ids[1]), what="bob's read mark")
    with api(clients.stack, bob_id) as rest:
        assert [m["id"] for m in rest.get("/v1/messages/unread").json()["messages"]] == ids[2:]


def test_revoking_a_user_refuses_rest_and_drops_the_live_connection(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice_token = token(alice_id)
    alice = clients.connect(alice_id, "phone", password=alice_token)
    bob = clients.connect(bob_id)
    bob.subscribe(f"presence/{alice_id}/+")
    alice.go_online()
    bob.inbox.expect(lambda r: r.topic == alice.presence_topic and r.payload == b"online", what="online")

    with _admin(clients) as admin:
        revoked = admin.post("/v1/admin/revocations", json={"user": alice_id, "reason": "lost phone"})
    assert revoked.status_code == 201, revoked.text

    # REST: the next call fails
    with httpx.Client(base_url=clients.stack.api_url, timeout=TIMEOUT) as rest:
        refused = rest.get("/v1/me", headers={"Authorization": f"Bearer {alice_token}"})
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized"
    # MQTT: the broker drops the connection (so the Last Will says offline) and refuses it back
    assert alice.disconnected.wait(TIMEOUT), "the broker kept the revoked client connected"
    bob.inbox.expect(lambda r: r.topic == alice.presence_topic and r.payload == b"offline", what="Will")
    code = clients.try_connect(alice_id, alice_token, f"{alice_id}/phone")
    assert not_authorized(code), f"a revoked token reconnected: {code}"
    # a token issued after the revocation works on both (iat has whole seconds: wait for the next)
    cutoff = datetime.fromisoformat(revoked.json()["issued_before"])
    time.sleep(
        max(0.0, (cutoff.replace(microsecond=0) + timedelta(seconds=1) - datetime.now(UTC)).total_seconds())
    )
    fresh = token(alice_id)
    assert not not_authorized(clients.try_connect(alice_id, fresh, f"{alice_id}/phone"))
    with httpx.Client(base_url=clients.stack.api_url, timeout=TIMEOUT) as rest:
        assert rest.get("/v1/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_revoking_one_token_drops_only_its_device(clients: Clients) -> None:
    alice_id = clients.uid("alice")
    phone_token, laptop_token = token(alice_id, jti="phone-" + alice_id), token(alice_id)
    phone = clients.connect(alice_id, "phone", password=phone_token)
    laptop = clients.connect(alice_id, "laptop", password=laptop_token)

    with _admin(clients) as admin:
        assert admin.post("/v1/admin/revocations", json={"jti": "phone-" + alice_id}).status_code == 201

    assert phone.disconnected.wait(TIMEOUT), "the revoked device stayed connected"
    assert not laptop.disconnected.wait(1.0), "a device with another token was dropped"
    assert laptop.is_connected()


def test_members_cannot_revoke_or_publish_control_messages(clients: Clients) -> None:
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    bob = clients.connect(bob_id)
    with api(clients.stack, alice_id) as rest:
        response = rest.post("/v1/admin/revocations", json={"user": bob_id})
    assert response.status_code == 403
    # publishing the control message directly is refused by the ACL: bob stays connected
    alice = clients.connect(alice_id)
    payload = b'{"command":"revoke","jti":null,"user":"%s","issued_before":9999999999}' % bob_id.encode()
    alice.paho.publish("$CONTROL/messenger/v1", payload, qos=0)
    assert not bob.disconnected.wait(1.0), "a member's control message kicked another user"


def test_the_send_rate_limit_is_shared_by_mqtt_and_http(clients: Clients) -> None:
    limit = clients.stack.app.settings.send_burst
    alice_id, bob_id = clients.uid("alice"), clients.uid("bob")
    alice = clients.connect(alice_id)
    clients.ensure_user(bob_id)

    for n in range(limit + 20):
        alice.send(bob_id, f"burst {n}")
    error = alice.inbox.expect(event("error", code="rate_limited"), what="a rate_limited error").data
    assert error["retry_after"] > 0
    assert error["client_id"]

    def http_refused() -> bool:
        with api(clients.stack, alice_id) as rest:
            response = rest.post("/v1/messages", json={"to": bob_id, "body": "one more"})
        return response.status_code == 429 and response.json()["code"] == "rate_limited"

    wait_until(http_refused, timeout=2.0, what="HTTP refused with 429 while the bucket is empty")
    # another user has a budget of their own
    with api(clients.stack, bob_id) as rest:
        assert rest.post("/v1/messages", json={"to": alice_id, "body": "hi"}).status_code == 201
