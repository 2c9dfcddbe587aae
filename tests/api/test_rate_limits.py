"""The REST side of the rate limits (issue 16, classes 1 and 4): tips, declined charges, resends
of a stored message, read marks, and the per-user and per-address request buckets.

The app is the real ASGI app around real clients: the database through ``sessions``, the rate
limiter in Redis (in-process when the run has no Redis), the machine's Mosquitto behind a
publisher that records what it was given, and billing as a real HTTP server
(:class:`tests.fakes.FakeServices`) behind the product's HTTP client. Each test sets its small
limits through the settings (``MESSENGER_*_RATE_PER_S`` / ``*_BURST``) and talks from a client
address of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from api.app import create_app
from api.deps import ApiDeps
from handler.processor import CommandProcessor, Inbound
from messenger import fanout, tipping
from messenger.actions import Outbound
from messenger.db import unit_of_work
from messenger.models import MassMessage, Tip
from messenger.mqtt import MqttPublisher
from messenger.presence import MemoryPresenceStore
from messenger.ratelimit import RateLimiter, RedisRateLimiter, create_rate_limiter
from messenger.services import Services
from messenger.services.billing import HttpBilling
from messenger.services.http import HttpService
from messenger.services.lists import EmbeddedLists, HttpLists, ListService
from messenger.settings import CommonSettings
from messenger.tipping import TipPolicy, TipRequest
from tests.api.app import LOGIN_URL, VERIFIER
from tests.api.testclient import TestClient
from tests.conftest import PRESENCE, REDIS_URL, token
from tests.fakes import CHARGES, LIST, FakeServices

MakeUser = Callable[..., str]
Sessions = sessionmaker[Session]
#: A settlement retry an hour away: no background settler of a stack sharing the database
#: picks a pending tip of these tests up.
POLICY = TipPolicy(retry_s=3600.0)
#: Every bucket of these tests refills one token per 1000 s: none comes back during a test.
SLOW = 0.001


class Recorder:
    """The real publisher, remembering the topic of everything it was given."""

    def __init__(self, inner: MqttPublisher) -> None:
        self.inner = inner
        self.topics: list[str] = []

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def publish(self, out: Sequence[Outbound]) -> None:
        self.topics += [o.topic for o in out]
        self.inner.publish(out)


@pytest.fixture
def fake() -> Iterator[FakeServices]:
    with FakeServices() as services:
        yield services


@pytest.fixture
def recorder(publisher: MqttPublisher) -> Recorder:
    return Recorder(publisher)


def limiter_for(**limits: Any) -> RateLimiter:
    """The limiter a process builds, from settings with ``limits`` (e.g. ``tip_burst=2``)."""
    url = REDIS_URL if "redis" in PRESENCE else None
    return create_rate_limiter(url, CommonSettings(**limits).rate_limits())


Make = Callable[..., tuple[TestClient, RateLimiter]]


@pytest.fixture
def make(sessions: Sessions, recorder: Recorder, fake: FakeServices) -> Iterator[Make]:
    """``make(**limits)``: a client of the app on a limiter with those settings, from a client
    address of its own, with billing at ``fake``."""
    with ExitStack() as stack:

        def build(
            limiter: RateLimiter | None = None, lists: ListService | None = None, **limits: Any
        ) -> tuple[TestClient, RateLimiter]:
            limiter = limiter or limiter_for(**limits)
            stack.callback(limiter.close)
            billing = HttpBilling(HttpService("billing", fake.url, timeout_s=5, retries=0))
            stack.callback(billing.close)
            deps = ApiDeps(
                sessions,
                MemoryPresenceStore(),
                VERIFIER,
                recorder,
                LOGIN_URL,
                limiter=limiter,
                services=Services(lists or EmbeddedLists(sessions), billing),
                tip_policy=POLICY,
            )
            client = stack.enter_context(TestClient(create_app(deps), client=(new_address(), 50_000)))
            return client, limiter

        yield build


def new_address() -> str:
    """A client address no other test (or run: the buckets are in Redis) uses."""
    n = uuid.uuid4().int
    return f"10.{n % 256}.{(n >> 8) % 256}.{(n >> 16) % 256}"


def auth(user: str, role: Role = Role.MEMBER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}"}


def tip(client: TestClient, payer: str, payee: str, key: str) -> Any:
    payload = {"to": payee, "amount": 100, "currency": "USD", "body": "thanks"}
    return client.post("/v1/tips", json=payload, headers=auth(payer) | {"Idempotency-Key": key})


def rate_limited(response: Any, too_many: str) -> dict[str, Any]:
    """The documented 429: ``Retry-After`` and the error body."""
    assert response.status_code == 429, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == "rate_limited"
    assert body["detail"].startswith(f"too many {too_many}; retry in ")
    # the bucket by its stable name, for programs (the detail is for people)
    assert body["limit"] == {
        "tips": "tip",
        "declined charges": "charge_declined",
        "messages": "send",
        "read marks": "read",
        "requests": "request",
        "requests from your address": "address",
    }[too_many]
    assert body["retry_after"] > 0
    assert int(response.headers["Retry-After"]) >= 1
    return body


def mqtt_tip(payer: str, payee: str, client_id: str) -> Inbound:
    command = {
        "type": "message",
        "id": client_id,
        "to": payee,
        "body": "",
        "tip": {"amount": 100, "currency": "USD"},
    }
    return Inbound(f"inbound/{payer}", json.dumps(command).encode())


def mqtt_errors(out: list[Outbound], user: str) -> list[dict[str, Any]]:
    events = [json.loads(o.payload) for o in out if o.topic == f"users/{user}/events"]
    return [e for e in events if e["type"] == "error"]


def charges_of(fake: FakeServices, payer: str) -> int:
    return sum(1 for r in fake.requests_for(CHARGES) if r.json["payer"] == payer)


def forget_tips(sessions: Sessions, payer: str) -> None:
    """Settle what a test left pending, so that no settler of a stack sharing the database
    charges it later."""
    with unit_of_work(sessions) as session:
        for row in session.scalars(select(Tip).where(Tip.payer_id == payer, Tip.status == "pending")):
            row.status, row.reason = "failed", "test over"


# --- tips ---


def test_tips_share_one_bucket_over_rest_and_mqtt(
    make: Make, sessions: Sessions, fake: FakeServices, make_user: MakeUser
) -> None:
    client, limiter = make(tip_rate_per_s=SLOW, tip_burst=2)
    member, creator = make_user("member"), make_user("creator", "creator")
    fake.balances[(member, "USD")] = 10_000

    assert tip(client, member, creator, "k-1").status_code == 201
    assert tip(client, member, creator, "k-2").status_code == 201
    rate_limited(tip(client, member, creator, "k-3"), "tips")
    assert tip(client, member, creator, "k-1").status_code == 200  # a retry is answered, not limited
    assert charges_of(fake, member) == 2

    # the same bucket refuses the member's next tip over MQTT
    out = CommandProcessor(sessions, limiter=limiter).process([mqtt_tip(member, creator, "k-4")])
    ((code, client_id),) = [(e["code"], e["client_id"]) for e in mqtt_errors(out, member)]
    assert (code, client_id) == ("rate_limited", "k-4")
    with sessions() as session:
        recorded = session.scalars(select(Tip.client_msg_id).where(Tip.payer_id == member)).all()
    assert sorted(recorded) == ["k-1", "k-2"]


def test_declined_charges_stop_the_calls_to_billing(
    make: Make, sessions: Sessions, fake: FakeServices, make_user: MakeUser
) -> None:
    client, limiter = make(tip_rate_per_s=0, charge_declined_rate_per_s=SLOW, charge_declined_burst=2)
    member, creator = make_user("member"), make_user("creator", "creator")
    fake.declines[member] = "card_declined"
    try:
        assert tip(client, member, creator, "d-1").status_code == 402
        assert tip(client, member, creator, "d-2").status_code == 402
        assert charges_of(fake, member) == 2
        for n in range(3, 8):
            rate_limited(tip(client, member, creator, f"d-{n}"), "declined charges")
        assert charges_of(fake, member) == 2

        # over MQTT the tip is refused before it is recorded ...
        processor = CommandProcessor(sessions, limiter=limiter)
        out = processor.process([mqtt_tip(member, creator, "d-mqtt")])
        assert [e["code"] for e in mqtt_errors(out, member)] == ["rate_limited"]
        # ... and one recorded before the bucket ran dry fails at settlement without a charge
        request = TipRequest(member, "d-earlier", creator, "", 100, "USD")
        with unit_of_work(sessions) as session:
            ((recorded,), _) = tipping.record_tips(session, [request], POLICY, claimed_by="test")
            assert recorded.tip is not None
            tip_id = recorded.tip.id
        billing = HttpBilling(HttpService("billing", fake.url, retries=0))
        try:
            settled, out = tipping.settle(sessions, billing, tip_id, POLICY, limiter)
        finally:
            billing.close()
        assert settled is not None and settled.status == "failed"
        assert (settled.reason or "").startswith("too many declined charges")
        assert [json.loads(o.payload)["type"] for o in out] == ["tip_failed"]
        assert charges_of(fake, member) == 2
    finally:
        forget_tips(sessions, member)


def test_a_list_message_over_the_send_limit_never_reaches_the_list_service(
    make: Make, fake: FakeServices, sessions: Sessions, make_user: MakeUser
) -> None:
    lists = HttpLists(HttpService("lists", fake.url, retries=0))
    client, _ = make(lists=lists, send_rate_per_s=SLOW, send_burst=1)
    creator, member = make_user("creator", "creator"), make_user("member")
    list_id = f"l-{uuid.uuid4().hex[:8]}"
    fake.lists[list_id] = (creator, [member])
    headers = auth(creator, Role.CREATOR)
    send = {"list": list_id, "body": "new post"}
    try:
        assert client.post("/v1/messages", json=send, headers=headers).status_code == 202
        for _ in range(3):
            rate_limited(client.post("/v1/messages", json=send, headers=headers), "messages")
        assert len(fake.requests_for(LIST)) == 1
    finally:
        lists.close()
        with unit_of_work(sessions) as session:  # nothing left queued for a stack's fan-out worker
            for mass in session.scalars(select(MassMessage).where(MassMessage.sender_id == creator)):
                fanout.cancel(session, mass)


def test_a_tip_admitted_before_redis_went_down_is_still_settled(
    sessions: Sessions, fake: FakeServices, make_user: MakeUser
) -> None:
    member, creator = make_user("member"), make_user("creator", "creator")
    fake.balances[(member, "USD")] = 1000
    down = RedisRateLimiter("redis://127.0.0.1:1/0", CommonSettings().rate_limits())
    billing = HttpBilling(HttpService("billing", fake.url, retries=0))
    try:
        with unit_of_work(sessions) as session:
            request = TipRequest(member, "while-down", creator, "", 100, "USD")
            ((recorded,), _) = tipping.record_tips(session, [request], POLICY, claimed_by="test")
            assert recorded.tip is not None
            tip_id = recorded.tip.id
        settled, _ = tipping.settle(sessions, billing, tip_id, POLICY, down)
        assert settled is not None and settled.status == "succeeded"
    finally:
        billing.close()
        down.close()
        forget_tips(sessions, member)


# --- resends ---


def test_a_rest_resend_loop_publishes_one_bucket_of_replays(
    make: Make, recorder: Recorder, make_user: MakeUser
) -> None:
    client, _ = make(resend_rate_per_s=SLOW, resend_burst=2)
    alice, bob = make_user("alice"), make_user("bob")
    send = {"to": bob, "body": "hello"}
    headers = auth(alice) | {"Idempotency-Key": "r-1"}

    first = client.post("/v1/messages", json=send, headers=headers)
    assert first.status_code == 201
    answers = [client.post("/v1/messages", json=send, headers=headers) for _ in range(6)]
    assert {(a.status_code, a.json()["id"]) for a in answers} == {(200, first.json()["id"])}
    # the first send and two replays reached bob; the other replays only got their answer
    assert recorder.topics.count(f"users/{bob}/messages") == 3
    assert recorder.topics.count(f"users/{alice}/events") == 3


# --- read marks ---


def test_read_marks_beyond_the_bucket_are_429(make: Make, make_user: MakeUser) -> None:
    client, _ = make(read_rate_per_s=SLOW, read_burst=2)
    alice, bob = make_user("alice"), make_user("bob")
    for _ in range(2):
        assert client.post("/v1/messages/read", json={"up_to": 1}, headers=auth(bob)).status_code == 200
    rate_limited(client.post("/v1/messages/read", json={"up_to": 1}, headers=auth(bob)), "read marks")
    assert client.post("/v1/messages/read", json={"up_to": 1}, headers=auth(alice)).status_code == 200


# --- requests per user and per address ---


def test_authenticated_requests_have_a_bucket_per_user(make: Make, make_user: MakeUser) -> None:
    client, _ = make(request_rate_per_s=SLOW, request_burst=3)
    alice, bob = make_user("alice"), make_user("bob")
    for _ in range(3):
        assert client.get("/v1/conversations", headers=auth(alice)).status_code == 200
    rate_limited(client.get("/v1/conversations", headers=auth(alice)), "requests")
    rate_limited(client.get(f"/v1/presence/{bob}", headers=auth(alice)), "requests")
    assert client.get("/v1/conversations", headers=auth(bob)).status_code == 200


def test_every_public_request_has_a_bucket_per_client_address(make: Make) -> None:
    client, _ = make(address_rate_per_s=SLOW, address_burst=3)
    for _ in range(3):
        assert client.get("/v1/conversations").status_code == 401  # no token: still counted
    rate_limited(client.get("/v1/conversations"), "requests from your address")
    rate_limited(client.get("/openapi.json"), "requests from your address")
    rate_limited(client.get("/no/such/page"), "requests from your address")
    # load balancers' health checks are exempt
    assert {client.get("/healthz").status_code for _ in range(5)} == {200}
    # another address has its own bucket
    other = TestClient(client.app, client=(new_address(), 50_000))
    with other:
        assert other.get("/v1/conversations").status_code == 401


def test_the_request_buckets_fail_open_when_redis_is_down(make: Make, make_user: MakeUser) -> None:
    """Redis down: the shield lets requests through (reads need only the database), while the
    per-action buckets (sends) still fail closed with 503."""
    limits = CommonSettings(
        request_rate_per_s=SLOW, request_burst=1, address_rate_per_s=SLOW, address_burst=1
    )
    client, _ = make(limiter=RedisRateLimiter("redis://127.0.0.1:1/0", limits.rate_limits()))
    alice, bob = make_user("alice"), make_user("bob")
    for _ in range(3):
        assert client.get("/v1/conversations", headers=auth(alice)).status_code == 200
    sent = client.post("/v1/messages", json={"to": bob, "body": "hi"}, headers=auth(alice))
    assert sent.status_code == 503
