"""The list and billing service clients.

The HTTP clients talk to :class:`tests.fakes.FakeServices`, a real HTTP server on a loopback
port that answers from memory or as scripted (5xx, slow, garbage, dropped connections); the
embedded implementations run against each database backend (the ``sessions`` fixture).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import unit_of_work
from messenger.exceptions import ServiceUnavailable
from messenger.repositories import ledger, lists
from messenger.services import create_services
from messenger.services.billing import Charge, ChargeResult, ChargeStatus, HttpBilling, LedgerBilling
from messenger.services.http import CircuitBreaker, HttpService
from messenger.services.lists import EmbeddedLists, HttpLists, ListInfo, MemberPage
from messenger.settings import ProductSettings
from tests.fakes import CHARGES, LIST, MEMBERS, FakeServices, Recorded

MakeUid = Callable[[str], str]
MakeUser = Callable[..., str]
Sessions = sessionmaker[Session]

#: Client timeout in these tests; the fake's "slow" answers take 1 s, so they always time out.
TIMEOUT_S = 0.2


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeServices]:
    with FakeServices(slow_s=1.0) as services:
        yield services


@pytest.fixture
def make_http(fake: FakeServices) -> Iterator[Callable[..., HttpService]]:
    """HttpService clients of the fake with small timeouts and backoff; closed after the test."""
    made: list[HttpService] = []

    def make(name: str = "svc", **kwargs: Any) -> HttpService:
        kwargs.setdefault("timeout_s", TIMEOUT_S)
        kwargs.setdefault("retries", 2)
        kwargs.setdefault("backoff_s", 0.01)
        service = HttpService(name, fake.url, **kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def http_lists(make_http: Callable[..., HttpService]) -> HttpLists:
    return HttpLists(make_http("lists"))


@pytest.fixture
def http_billing(make_http: Callable[..., HttpService]) -> HttpBilling:
    return HttpBilling(make_http("billing"))


def new_charge(payer: str, payee: str, amount: int = 100, currency: str = "USD", key: str = "") -> Charge:
    return Charge(payer, payee, amount, currency, key or f"tip:{payer}:{uuid.uuid4().hex}", "a tip")


def all_members(service: EmbeddedLists | HttpLists, list_id: str, limit: int) -> tuple[list[str], int]:
    """Every member, following ``next``; also how many pages it took."""
    members: list[str] = []
    after: str | None = None
    for pages in range(1, 100):
        page = service.members(list_id, after=after, limit=limit)
        members += page.members
        if page.next is None:
            return members, pages
        after = page.next
    raise AssertionError("the pages never end")


# --- HttpLists ---


def test_get_answers_owner_and_member_count(fake: FakeServices, http_lists: HttpLists) -> None:
    fake.lists["fans"] = ("creator-1", ["m1", "m2", "m3"])
    assert http_lists.get("fans") == ListInfo("fans", "creator-1", 3)
    [request] = fake.requests
    assert (request.method, request.path) == ("GET", "/lists/fans")


def test_get_of_an_unknown_list_is_none(fake: FakeServices, http_lists: HttpLists) -> None:
    assert http_lists.get("nope") is None
    assert [r.status for r in fake.requests] == [404]  # a 404 is an answer: not retried


def test_get_accepts_a_list_without_member_count(fake: FakeServices, http_lists: HttpLists) -> None:
    fake.script(LIST, [lambda _: (200, {"owner": "creator-1"})])
    assert http_lists.get("fans") == ListInfo("fans", "creator-1", None)


def test_members_pages_through_a_long_list_with_the_services_cursors(
    fake: FakeServices, http_lists: HttpLists
) -> None:
    members = [f"member-{i:03d}" for i in range(25)]
    fake.lists["big"] = ("creator-1", members)
    got, pages = all_members(http_lists, "big", limit=10)
    assert (got, pages) == (members, 3)
    requests = fake.requests_for(MEMBERS)
    assert [r.query.get("limit") for r in requests] == ["10", "10", "10"]
    # the first page has no cursor; each later one hands back the service's opaque cursor
    assert "after" not in requests[0].query
    assert all(r.status == 200 for r in requests)
    assert all(r.query["after"] not in members for r in requests[1:])


def test_members_follows_next_when_the_service_sends_short_pages(
    fake: FakeServices, http_lists: HttpLists
) -> None:
    fake.max_page = 4  # the service answers at most 4 however many are asked for
    members = [f"member-{i:02d}" for i in range(10)]
    fake.lists["big"] = ("creator-1", members)
    assert all_members(http_lists, "big", limit=100) == (members, 3)


def test_members_drops_ids_that_are_not_user_ids(fake: FakeServices, http_lists: HttpLists) -> None:
    fake.lists["mixed"] = ("creator-1", ["a"] * 3)  # for the cursor the fake checks
    odd: list[Any] = ["ok-1", "a/b", "", "x" * 65, "sp ace", "+", "#", ".", "..", "é", 7, None, {}, "ok-2"]

    def page(request: Recorded) -> tuple[int, Any]:
        return 200, {"members": odd, "next": "cursor-2"}

    fake.script(MEMBERS, [page])
    assert http_lists.members("mixed", after=None, limit=50) == MemberPage(["ok-1", "ok-2"], "cursor-2")


def test_members_of_a_list_gone_is_an_empty_last_page(fake: FakeServices, http_lists: HttpLists) -> None:
    assert http_lists.members("gone", after="somewhere", limit=10) == MemberPage([], None)
    [request] = fake.requests
    assert request.query == {"after": "somewhere", "limit": "10"}


@pytest.mark.parametrize("failures", [["500"], ["503", "502"], ["429"], ["drop", "504"], ["slow"]])
def test_failures_then_success_are_retried(
    fake: FakeServices, http_lists: HttpLists, failures: list[str]
) -> None:
    fake.lists["fans"] = ("creator-1", ["m1"])
    fake.script(LIST, failures)
    assert http_lists.get("fans") == ListInfo("fans", "creator-1", 1)
    assert [r.behaviour for r in fake.requests] == [*failures, "ok"]


def test_timeouts_raise_service_unavailable_after_the_retries(
    fake: FakeServices, http_lists: HttpLists
) -> None:
    fake.lists["fans"] = ("creator-1", ["m1"])
    fake.script(LIST, [], then="slow")
    with pytest.raises(ServiceUnavailable) as raised:
        http_lists.get("fans")
    assert raised.value.code == "service_unavailable"
    assert len(fake.requests) == 3  # the first try and two retries


def test_5xx_for_good_raises_service_unavailable(
    fake: FakeServices, make_http: Callable[..., HttpService]
) -> None:
    fake.script(MEMBERS, [], then="500")
    with pytest.raises(ServiceUnavailable, match="HTTP 500"):
        HttpLists(make_http(retries=1)).members("fans", after=None, limit=10)
    assert len(fake.requests) == 2


def _respond(status: int, body: Any) -> Callable[[Recorded], tuple[int, Any]]:
    return lambda _request: (status, body)


@pytest.mark.parametrize(
    "answer",
    [
        "garbage",
        _respond(200, ["creator-1", 3]),
        _respond(200, {"member_count": 3}),
        _respond(200, {"owner": 5, "member_count": 3}),
        _respond(200, {"owner": "creator-1", "member_count": "3"}),
        _respond(200, b"\xff\xfe not utf-8 json"),
        "400",
        "401",
        "409",
        _respond(403, {"owner": "creator-1", "member_count": 3}),  # a refusal, whatever its body
        _respond(201, {"owner": "creator-1", "member_count": 3}),
    ],
    ids=[
        "html", "json-list", "no-owner", "owner-int", "count-str", "bytes",
        "400", "401", "409", "403-with-a-list", "201",
    ],
)  # fmt: skip
def test_get_with_a_malformed_answer_raises_service_unavailable(
    fake: FakeServices, http_lists: HttpLists, answer: Any
) -> None:
    fake.script(LIST, [answer])
    with pytest.raises(ServiceUnavailable):
        http_lists.get("fans")


@pytest.mark.parametrize(
    "answer",
    [
        "garbage",
        _respond(200, None),
        _respond(200, {"next": None}),
        _respond(200, {"members": "m1,m2", "next": None}),
        _respond(200, {"members": ["m1"], "next": 2}),
        _respond(200, {"members": {"m1": True}, "next": None}),
        "403",
        _respond(401, {"members": ["m1"], "next": None}),
    ],
    ids=["html", "null", "no-members", "members-str", "next-int", "members-dict", "403", "401-with-a-page"],
)
def test_members_with_a_malformed_answer_raises_service_unavailable(
    fake: FakeServices, http_lists: HttpLists, answer: Any
) -> None:
    fake.script(MEMBERS, [answer])
    with pytest.raises(ServiceUnavailable):
        http_lists.members("fans", after=None, limit=10)


def test_the_services_token_is_sent_as_a_bearer_token(
    fake: FakeServices, make_http: Callable[..., HttpService]
) -> None:
    fake.lists["fans"] = ("creator-1", ["m1"])
    HttpLists(make_http(token="s3cret-token")).get("fans")
    HttpLists(make_http()).get("fans")
    with_token, without = fake.requests
    assert with_token.headers["authorization"] == "Bearer s3cret-token"
    assert "authorization" not in without.headers
    assert with_token.headers["accept"] == "application/json"


def test_a_list_id_cannot_change_the_path(fake: FakeServices, http_lists: HttpLists) -> None:
    odd = "a/b?c=1#d%2F e"
    fake.lists[odd] = ("creator-1", ["m1"])
    assert http_lists.get(odd) == ListInfo(odd, "creator-1", 1)
    assert http_lists.members(odd, after=None, limit=5) == MemberPage(["m1"], None)
    assert [(r.route, r.list_id) for r in fake.requests] == [(LIST, odd), (MEMBERS, odd)]


@pytest.mark.parametrize("list_id", [".", ".."])
def test_a_dot_list_id_cannot_change_the_path(
    fake: FakeServices, http_lists: HttpLists, list_id: str
) -> None:
    fake.lists[list_id] = ("creator-1", ["m1"])
    fake.lists["members"] = ("someone-else", [])
    http_lists.get(list_id)
    http_lists.members(list_id, after=None, limit=5)
    assert [(r.route, r.list_id) for r in fake.requests] == [(LIST, list_id), (MEMBERS, list_id)]


# --- HttpBilling ---


def test_charge_succeeds_and_moves_the_money(fake: FakeServices, http_billing: HttpBilling) -> None:
    fake.balances[("fan", "USD")] = 1000
    result = http_billing.charge(new_charge("fan", "creator", 300))
    [made] = fake.succeeded()
    assert result == ChargeResult(ChargeStatus.SUCCEEDED, charge_id=made.id)
    assert (fake.balances[("fan", "USD")], fake.balances[("creator", "USD")]) == (700, 300)


def test_charge_sends_the_idempotency_key_in_header_and_body(
    fake: FakeServices, http_billing: HttpBilling
) -> None:
    fake.balances[("fan", "EUR")] = 1000
    charge = new_charge("fan", "creator", 250, "EUR", key="tip:fan:client-42")
    fake.script(CHARGES, ["503"])
    assert http_billing.charge(charge).status == ChargeStatus.SUCCEEDED
    first, retry = fake.requests
    for request in (first, retry):
        assert (request.method, request.path) == ("POST", "/charges")
        assert request.headers["idempotency-key"] == "tip:fan:client-42"
        assert request.json == asdict(charge)
        assert request.json["idempotency_key"] == "tip:fan:client-42"


def test_charge_failed_with_a_reason(fake: FakeServices, http_billing: HttpBilling) -> None:
    fake.balances[("fan", "USD")] = 1000
    fake.declines["fan"] = "card_declined"
    result = http_billing.charge(new_charge("fan", "creator"))
    assert (result.status, result.reason) == (ChargeStatus.FAILED, "card_declined")
    assert fake.balances == {("fan", "USD"): 1000}


def test_charge_without_funds_is_a_402_failure(fake: FakeServices, http_billing: HttpBilling) -> None:
    fake.balances[("fan", "USD")] = 99
    result = http_billing.charge(new_charge("fan", "creator", 100))
    assert (result.status, result.reason) == (ChargeStatus.FAILED, "insufficient_funds")
    assert [r.status for r in fake.requests] == [402]
    assert result.charge_id == fake.charges[fake.requests[0].json["idempotency_key"]].id


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (_respond(402, {}), "declined"),
        (_respond(402, b"Payment Required"), "declined"),
        (_respond(402, {"reason": "card_expired"}), "card_expired"),
        (_respond(200, {"status": "failed"}), "declined"),
    ],
)
def test_a_failure_without_a_usable_reason_still_fails(
    fake: FakeServices, http_billing: HttpBilling, answer: Any, reason: str
) -> None:
    fake.script(CHARGES, [answer])
    result = http_billing.charge(new_charge("fan", "creator"))
    assert (result.status, result.reason) == (ChargeStatus.FAILED, reason)


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "422"])
def test_other_4xx_fail_without_a_retry(fake: FakeServices, http_billing: HttpBilling, status: str) -> None:
    fake.balances[("fan", "USD")] = 1000
    fake.script(CHARGES, [status])
    result = http_billing.charge(new_charge("fan", "creator"))
    assert result.status == ChargeStatus.FAILED
    assert result.reason
    assert len(fake.requests) == 1
    assert fake.charges == {}


def test_a_key_reused_for_another_amount_fails(fake: FakeServices, http_billing: HttpBilling) -> None:
    fake.balances[("fan", "USD")] = 1000
    first = http_billing.charge(new_charge("fan", "creator", 100, key="k-1"))
    other = http_billing.charge(new_charge("fan", "creator", 200, key="k-1"))
    assert first.status == ChargeStatus.SUCCEEDED
    assert (other.status, other.reason) == (ChargeStatus.FAILED, "idempotency_conflict")
    assert fake.balances[("fan", "USD")] == 900


@pytest.mark.parametrize("status", ["408", "409"])
def test_408_and_409_leave_the_outcome_unknown(
    fake: FakeServices, http_billing: HttpBilling, status: str
) -> None:
    fake.script(CHARGES, [status])
    assert http_billing.charge(new_charge("fan", "creator")).status == ChargeStatus.UNKNOWN
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        "500",
        "503",
        "429",
        "slow",
        "drop",
        "garbage",
        _respond(200, {"status": "processing"}),
        _respond(200, {"id": "ch_1"}),
        _respond(200, ["succeeded"]),
        _respond(302, {"status": "succeeded"}),
        _respond(409, {"status": "succeeded", "id": "ch_1"}),
    ],
    ids=[
        "500", "503", "429", "slow", "drop", "garbage",
        "processing", "no-status", "json-list", "302", "409-succeeded",
    ],
)  # fmt: skip
def test_no_usable_answer_is_unknown_and_never_raises(
    fake: FakeServices, http_billing: HttpBilling, answer: Any
) -> None:
    fake.balances[("fan", "USD")] = 1000
    fake.script(CHARGES, [], then=answer)
    result = http_billing.charge(new_charge("fan", "creator"))
    assert result.status == ChargeStatus.UNKNOWN
    assert result.reason


def test_a_charge_retried_after_a_timeout_is_made_once(fake: FakeServices, http_billing: HttpBilling) -> None:
    fake.balances[("fan", "USD")] = 1000
    charge = new_charge("fan", "creator", 400)
    fake.script(CHARGES, ["slow"])  # the service charges, then answers after the client gave up
    result = http_billing.charge(charge)
    assert result.status == ChargeStatus.SUCCEEDED
    [made] = fake.charges.values()
    assert result.charge_id == made.id
    assert [r.headers["idempotency-key"] for r in fake.requests] == [charge.idempotency_key] * 2
    assert (fake.balances[("fan", "USD")], fake.balances[("creator", "USD")]) == (600, 400)
    # asked again later (the tip settler's retry): the same answer, still one charge
    assert http_billing.charge(charge) == result
    assert fake.balances[("fan", "USD")] == 600


def test_a_charge_whose_every_try_timed_out_is_unknown_then_settles_once(
    fake: FakeServices, http_billing: HttpBilling
) -> None:
    fake.balances[("fan", "USD")] = 1000
    charge = new_charge("fan", "creator", 400)
    fake.script(CHARGES, ["slow"] * 3)
    assert http_billing.charge(charge).status == ChargeStatus.UNKNOWN
    assert http_billing.charge(charge).status == ChargeStatus.SUCCEEDED
    assert len(fake.charges) == 1
    assert fake.balances[("fan", "USD")] == 600


# --- CircuitBreaker ---


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_breaker_opens_after_threshold_failures_and_fails_fast(
    fake: FakeServices, make_http: Callable[..., HttpService], clock: FakeClock
) -> None:
    breaker = CircuitBreaker(threshold=3, reset_s=10, clock=clock)
    lists_ = HttpLists(make_http(retries=0, breaker=breaker))
    fake.script(LIST, [], then="500")
    for _ in range(3):
        assert not breaker.open
        with pytest.raises(ServiceUnavailable):
            lists_.get("fans")
    assert breaker.open
    for _ in range(5):
        with pytest.raises(ServiceUnavailable, match="circuit open"):
            lists_.get("fans")
    assert len(fake.requests) == 3  # nothing reached the service while open


def test_retries_count_towards_the_threshold(
    fake: FakeServices, make_http: Callable[..., HttpService], clock: FakeClock
) -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=clock)
    lists_ = HttpLists(make_http(retries=5, breaker=breaker))
    fake.script(LIST, [], then="503")
    with pytest.raises(ServiceUnavailable, match="circuit open"):
        lists_.get("fans")
    assert len(fake.requests) == 2


def test_breaker_half_opens_after_reset_and_closes_on_success(
    fake: FakeServices, make_http: Callable[..., HttpService], clock: FakeClock
) -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=clock)
    lists_ = HttpLists(make_http(retries=0, breaker=breaker))
    fake.lists["fans"] = ("creator-1", ["m1"])
    fake.script(LIST, ["500", "500"])
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            lists_.get("fans")
    clock.advance(9.9)
    with pytest.raises(ServiceUnavailable, match="circuit open"):
        lists_.get("fans")
    assert len(fake.requests) == 2
    clock.advance(0.1)
    assert not breaker.open
    assert lists_.get("fans") == ListInfo("fans", "creator-1", 1)  # the trial call
    assert len(fake.requests) == 3
    # closed again, and its count of failures starts over: one failure does not reopen it
    fake.script(LIST, ["500"])
    with pytest.raises(ServiceUnavailable):
        lists_.get("fans")
    assert not breaker.open
    assert lists_.get("fans") is not None
    assert len(fake.requests) == 5


def test_a_failed_trial_reopens_the_breaker(
    fake: FakeServices, make_http: Callable[..., HttpService], clock: FakeClock
) -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=clock)
    lists_ = HttpLists(make_http(retries=0, breaker=breaker))
    fake.script(LIST, [], then="502")
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            lists_.get("fans")
    clock.advance(10)
    with pytest.raises(ServiceUnavailable, match="HTTP 502"):
        lists_.get("fans")  # the trial reaches the service and fails
    assert breaker.open
    with pytest.raises(ServiceUnavailable, match="circuit open"):
        lists_.get("fans")
    assert len(fake.requests) == 3


def test_half_open_lets_one_trial_through(clock: FakeClock) -> None:
    breaker = CircuitBreaker(threshold=1, reset_s=5, clock=clock)
    assert breaker.allow()
    breaker.failed()
    assert breaker.open
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else while it runs
    breaker.succeeded()
    assert breaker.allow()
    assert breaker.allow()


def test_4xx_answers_are_not_failures_of_the_service(
    fake: FakeServices, make_http: Callable[..., HttpService], clock: FakeClock
) -> None:
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=clock)
    lists_ = HttpLists(make_http(retries=0, breaker=breaker))
    for _ in range(5):
        assert lists_.get("unknown") is None  # 404
    assert not breaker.open


def test_billing_with_an_open_breaker_is_unknown_without_a_request(
    fake: FakeServices, make_http: Callable[..., HttpService], clock: FakeClock
) -> None:
    breaker = CircuitBreaker(threshold=1, reset_s=10, clock=clock)
    billing = HttpBilling(make_http(retries=0, breaker=breaker))
    fake.balances[("fan", "USD")] = 1000
    fake.script(CHARGES, ["503"])
    assert billing.charge(new_charge("fan", "creator")).status == ChargeStatus.UNKNOWN
    result = billing.charge(new_charge("fan", "creator"))
    assert result.status == ChargeStatus.UNKNOWN
    assert "circuit open" in (result.reason or "")
    assert len(fake.requests) == 1
    clock.advance(10)
    assert billing.charge(new_charge("fan", "creator")).status == ChargeStatus.SUCCEEDED


# --- create_services ---


def product_settings(**kwargs: Any) -> ProductSettings:
    values: dict[str, Any] = {"lists_url": None, "billing_url": None, "services_token": None}
    return ProductSettings(**(values | kwargs))


def test_create_services_uses_http_clients_when_urls_are_set(fake: FakeServices, sessions: Sessions) -> None:
    settings = product_settings(
        lists_url=fake.url + "/",
        billing_url=fake.url,
        services_token="svc-token",
        services_timeout_s=TIMEOUT_S,
        services_retries=1,
    )
    services = create_services(settings, sessions)
    try:
        assert isinstance(services.lists, HttpLists)
        assert isinstance(services.billing, HttpBilling)
        assert not services.lists_embedded
        fake.lists["fans"] = ("creator-1", ["m1"])
        fake.balances[("fan", "USD")] = 1000
        fake.script(LIST, ["500"])  # one retry, from services_retries
        assert services.lists.get("fans") == ListInfo("fans", "creator-1", 1)
        # services_timeout_s: a 1 s answer is too late, twice (the try and its one retry)
        fake.script(CHARGES, ["slow", "slow"])
        assert services.billing.charge(new_charge("fan", "creator")).status == ChargeStatus.UNKNOWN
        assert [r.route for r in fake.requests] == [LIST, LIST, CHARGES, CHARGES]
        assert {r.headers.get("authorization") for r in fake.requests} == {"Bearer svc-token"}
    finally:
        services.close()


def test_create_services_embeds_what_has_no_url(fake: FakeServices, sessions: Sessions) -> None:
    services = create_services(product_settings(), sessions)
    assert isinstance(services.lists, EmbeddedLists)
    assert isinstance(services.billing, LedgerBilling)
    assert services.lists_embedded
    services.close()

    mixed = create_services(product_settings(lists_url=fake.url), sessions)
    try:
        assert isinstance(mixed.lists, HttpLists)
        assert isinstance(mixed.billing, LedgerBilling)
    finally:
        mixed.close()
    mixed = create_services(product_settings(billing_url=fake.url), sessions)
    try:
        assert isinstance(mixed.lists, EmbeddedLists)
        assert isinstance(mixed.billing, HttpBilling)
    finally:
        mixed.close()


# --- EmbeddedLists ---


def make_list(sessions: Sessions, owner: str, members: list[str]) -> str:
    with unit_of_work(sessions) as session:
        list_id = lists.create(session, owner, "fans").id
        lists.add_members(session, list_id, members)
    return list_id


def test_embedded_get_and_count(sessions: Sessions, make_user: MakeUser, make_uid: MakeUid) -> None:
    owner = make_user("creator", "creator")
    members = [make_uid("m") for _ in range(4)]
    list_id = make_list(sessions, owner, members)
    embedded = EmbeddedLists(sessions)
    assert embedded.get(list_id) == ListInfo(list_id, owner, 4)
    assert embedded.get(uuid.uuid4().hex) is None
    empty = make_list(sessions, owner, [])
    assert embedded.get(empty) == ListInfo(empty, owner, 0)


@pytest.mark.parametrize(("size", "limit"), [(7, 3), (6, 3), (2, 10), (0, 5), (1, 1)])
def test_embedded_members_page_by_limit_and_cursor(
    sessions: Sessions, make_user: MakeUser, make_uid: MakeUid, size: int, limit: int
) -> None:
    owner = make_user("creator", "creator")
    members = sorted(make_uid("m") for _ in range(size))
    list_id = make_list(sessions, owner, members)
    embedded = EmbeddedLists(sessions)
    first = embedded.members(list_id, after=None, limit=limit)
    assert first.members == members[:limit]
    got, pages = all_members(embedded, list_id, limit)
    assert got == members
    assert pages in (-(-size // limit), size // limit + 1)  # an exact multiple may end on an empty page


def test_embedded_members_of_an_unknown_list_is_empty(sessions: Sessions) -> None:
    assert EmbeddedLists(sessions).members(uuid.uuid4().hex, after=None, limit=10) == MemberPage([], None)


# --- LedgerBilling (the embedded billing) ---


def top_up(sessions: Sessions, user: str, amount: int, currency: str = "USD") -> None:
    with unit_of_work(sessions) as session:
        ledger.top_up(session, user, currency, amount)


def balances(sessions: Sessions, *users: str) -> list[dict[str, int]]:
    with unit_of_work(sessions) as session:
        return [ledger.balances(session, user) for user in users]


def test_ledger_charge_without_funds_fails(sessions: Sessions, make_uid: MakeUid) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    billing = LedgerBilling(sessions)
    result = billing.charge(new_charge(payer, payee, 100))
    assert (result.status, result.reason) == (ChargeStatus.FAILED, "insufficient_funds")
    top_up(sessions, payer, 99)
    top_up(sessions, payer, 5000, "EUR")
    result = billing.charge(new_charge(payer, payee, 100, "USD"))
    assert (result.status, result.reason) == (ChargeStatus.FAILED, "insufficient_funds")
    assert balances(sessions, payer, payee) == [{"USD": 99, "EUR": 5000}, {}]


def test_ledger_charge_moves_funds_from_payer_to_payee(sessions: Sessions, make_uid: MakeUid) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    top_up(sessions, payer, 1000)
    billing = LedgerBilling(sessions)
    first = billing.charge(new_charge(payer, payee, 300))
    assert first.status == ChargeStatus.SUCCEEDED
    assert first.reason is None
    assert first.charge_id
    assert balances(sessions, payer, payee) == [{"USD": 700}, {"USD": 300}]
    second = billing.charge(new_charge(payer, payee, 700))  # the whole rest
    assert second.status == ChargeStatus.SUCCEEDED
    assert second.charge_id != first.charge_id
    assert balances(sessions, payer, payee) == [{"USD": 0}, {"USD": 1000}]


def test_ledger_repeat_returns_the_first_result_and_charges_once(
    sessions: Sessions, make_uid: MakeUid
) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    top_up(sessions, payer, 1000)
    billing = LedgerBilling(sessions)
    charge = new_charge(payer, payee, 300)
    first = billing.charge(charge)
    assert first.status == ChargeStatus.SUCCEEDED
    assert billing.charge(charge) == first
    assert LedgerBilling(sessions).charge(charge) == first
    assert balances(sessions, payer, payee) == [{"USD": 700}, {"USD": 300}]


def test_ledger_repeat_of_a_failure_stays_a_failure(sessions: Sessions, make_uid: MakeUid) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    billing = LedgerBilling(sessions)
    charge = new_charge(payer, payee, 300)
    failed = billing.charge(charge)
    assert failed.status == ChargeStatus.FAILED
    top_up(sessions, payer, 1000)
    assert billing.charge(charge) == failed  # the key's outcome is final
    assert balances(sessions, payer) == [{"USD": 1000}]


@pytest.mark.parametrize("change", ["amount", "currency", "payee", "payer"])
def test_ledger_same_key_for_another_charge_is_a_conflict(
    sessions: Sessions, make_uid: MakeUid, change: str
) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    top_up(sessions, payer, 1000)
    top_up(sessions, payer, 1000, "EUR")
    billing = LedgerBilling(sessions)
    charge = new_charge(payer, payee, 300)
    assert billing.charge(charge).status == ChargeStatus.SUCCEEDED
    other = {"amount": 301, "currency": "EUR", "payee": make_uid("other"), "payer": make_uid("other")}[change]
    clash = Charge(**(asdict(charge) | {change: other}))
    result = billing.charge(clash)
    assert (result.status, result.reason) == (ChargeStatus.FAILED, "idempotency_conflict")
    assert balances(sessions, payer, payee) == [{"USD": 700, "EUR": 1000}, {"USD": 300}]


def _race(n: int, work: Callable[[int], ChargeResult]) -> list[ChargeResult]:
    """Run ``work(i)`` for i in range(n) in n threads released at once."""
    start = threading.Barrier(n)
    results: list[ChargeResult | BaseException | None] = [None] * n

    def run(i: int) -> None:
        try:
            start.wait(10)
            results[i] = work(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, ChargeResult)]


def test_ledger_concurrent_charges_of_one_payer_never_overspend(
    engine: Engine, sessions: Sessions, make_uid: MakeUid
) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    top_up(sessions, payer, 1000)
    billing = LedgerBilling(sessions)
    results = _race(20, lambda i: billing.charge(new_charge(payer, payee, 100, key=f"{payer}:{i}")))
    assert Counter((r.status, r.reason) for r in results) == {
        (ChargeStatus.SUCCEEDED, None): 10,
        (ChargeStatus.FAILED, "insufficient_funds"): 10,
    }
    assert balances(sessions, payer, payee) == [{"USD": 0}, {"USD": 1000}]


def test_ledger_concurrent_charges_with_one_key_charge_once(sessions: Sessions, make_uid: MakeUid) -> None:
    payer, payee = make_uid("fan"), make_uid("creator")
    top_up(sessions, payer, 1000)
    billing = LedgerBilling(sessions)
    charge = new_charge(payer, payee, 100)
    results = _race(8, lambda _: billing.charge(charge))
    assert {r.status for r in results} == {ChargeStatus.SUCCEEDED}
    assert len({r.charge_id for r in results}) == 1
    assert balances(sessions, payer, payee) == [{"USD": 900}, {"USD": 100}]


class _PauseAfter:
    """Holds each of two threads right after it ran a ``ledger_balances`` query about ``user``,
    until both got there (or 1 s went by: the other is waiting on a lock, as it should)."""

    def __init__(self, engine: Engine, user: str) -> None:
        self.engine, self.user = engine, user
        self.barrier = threading.Barrier(2)
        self.paused = threading.local()

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "ledger_balances" not in statement or self.user not in repr(parameters):
            return
        if getattr(self.paused, "done", False):
            return
        self.paused.done = True
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(1.0)

    def __enter__(self) -> _PauseAfter:
        event.listen(self.engine, "after_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "after_cursor_execute", self)


def test_ledger_a_balance_read_at_once_is_spent_once(
    engine: Engine, sessions: Sessions, make_uid: MakeUid
) -> None:
    """Two charges that both read the payer's balance before either writes it: only one may
    spend it (the deterministic form of the race of the test above)."""
    payer, payee = make_uid("fan"), make_uid("creator")
    top_up(sessions, payer, 100)
    billing = LedgerBilling(sessions)
    with _PauseAfter(engine, payer):
        results = _race(2, lambda i: billing.charge(new_charge(payer, payee, 100, key=f"{payer}:{i}")))
    assert sorted((r.status, r.reason or "") for r in results) == [
        (ChargeStatus.FAILED, "insufficient_funds"),
        (ChargeStatus.SUCCEEDED, ""),
    ]
    assert balances(sessions, payer, payee) == [{"USD": 0}, {"USD": 100}]


def test_ledger_first_charges_to_a_new_payee_at_once_both_succeed(
    engine: Engine, sessions: Sessions, make_uid: MakeUid
) -> None:
    """Two fans tip a creator who has no balance row yet, at the same moment."""
    fans, payee = [make_uid("fan"), make_uid("fan")], make_uid("creator")
    for fan in fans:
        top_up(sessions, fan, 500)
    billing = LedgerBilling(sessions)
    with _PauseAfter(engine, payee):
        results = _race(2, lambda i: billing.charge(new_charge(fans[i], payee, 100)))
    assert [r.status for r in results] == [ChargeStatus.SUCCEEDED] * 2
    assert balances(sessions, payee, *fans) == [{"USD": 200}, {"USD": 400}, {"USD": 400}]
