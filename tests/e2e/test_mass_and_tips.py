"""Mass messages to member lists and tips, end to end through the embedded broker.

Each test starts its own ``messenger serve`` stack (on each database backend) with the
settings it needs: the embedded list service and ledger, or the list and billing services
played by a real HTTP server (:class:`tests.fakes.FakeServices`). A stack of its own also means
that no other fan-out or tip worker of this test run shares its database while it runs (those
workers take any free mass message or due tip they find there: another process running a
Messenger on the same MariaDB at the same time, a benchmark say, can take this test's work).

Covers a creator's message to 1,000 members (live, catch-up, blocks, one copy each, the
creator's acks), the refusals (``not_a_creator``, ``list_not_owned``), tips (succeeded,
declined for funds, redelivered and charged once) on the ledger and over HTTP, a billing
service that times out (pending, then settled with one charge), canceling a fan-out in the
middle, and two fan-out workers of which the first dies and the second resumes from its cursor.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from messenger import fanout
from messenger.db import unit_of_work
from messenger.fanout import FanoutRunner, MassRequest
from messenger.models import MassMessage, Message, Tip, utcnow
from messenger.repositories import blocks, lists, mass_messages, users
from messenger.services.http import HttpService
from messenger.services.lists import EmbeddedLists, HttpLists
from tests.conftest import (
    BACKENDS,
    PRESENCE,
    REDIS_URL,
    Stack,
    _database_url,
    running_stack,
    stack_settings,
    token,
)
from tests.e2e.helpers import (
    QUIET,
    TIMEOUT,
    ChatClient,
    Clients,
    any_message,
    event,
    message,
)
from tests.e2e.lists import (
    block,
    connect_creator,
    copies,
    deliveries,
    list_message,
    make_list,
    rest,
    tip_command,
)
from tests.fakes import CHARGES, LIST, MEMBERS, FakeServices, Recorded

Launch = Callable[..., tuple[Stack, Clients]]


@pytest.fixture(params=BACKENDS)
def launch(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launch]:
    """Start a stack on this backend with settings of the test's choosing, and its clients."""
    backend = request.param
    with ExitStack() as cleanup:

        def start(**overrides: Any) -> tuple[Stack, Clients]:
            redis_url = REDIS_URL if "redis" in PRESENCE else None
            settings = stack_settings(_database_url(backend, tmp_path_factory), redis_url, **overrides)
            stack = cleanup.enter_context(running_stack(settings))
            pool = Clients(stack)
            cleanup.callback(pool.close_all)
            return stack, pool

        yield start


@pytest.fixture
def fake() -> Iterator[FakeServices]:
    with FakeServices() as services:
        yield services


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def mass_message(stack: Stack, creator: str, mass_id: int) -> dict[str, Any]:
    with rest(stack, creator, Role.CREATOR) as api:
        response = api.get(f"/v1/mass-messages/{mass_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- mass messages ---


def test_a_list_message_reaches_every_member_once_except_those_who_blocked(launch: Launch) -> None:
    stack, clients = launch(fanout_page_size=100)  # ten pages, ten transactions
    creator = uid("creator")
    prefix = uid("fan")
    members = [f"{prefix}-{n:04d}" for n in range(1000)]  # listed in this order (by id)
    online = [members[n] for n in range(0, 1000, 50)]
    online_blocked = [members[n] for n in (25, 275, 525, 775, 999)]
    back_online = [members[n] for n in (10, 333, 666, 998)]  # come back: presence online
    back_sync = [members[n] for n in (11, 444, 777)]  # come back: a sync command
    offline_blocked = [members[n] for n in (12, 501, 888)]
    blocked = online_blocked + offline_blocked + [members[n] for n in range(7, 1000, 97)]
    assert len(set(blocked)) == len(blocked) and not set(blocked) & {*online, *back_online, *back_sync}

    devices = [connect_creator(clients, creator, d) for d in ("phone", "laptop")]
    list_id = make_list(stack, creator, members)
    for member in blocked:
        block(stack, member, creator)
    live = {m: clients.connect(m, online=True) for m in online + online_blocked}
    for client in live.values():  # their catch-up is done: what comes next is live
        client.inbox.expect(event("synced"), what="the empty catch-up")

    cid = list_message(devices[0], list_id, "new post for my fans")

    queued = [d.inbox.expect(event("ack", client_id=cid, status="queued")).data for d in devices]
    mass_id = queued[0]["mass_message"]
    assert isinstance(mass_id, int)
    assert all(a["mass_message"] == mass_id and a["id"] is None for a in queued)
    for device in devices:
        sent = device.inbox.expect(event("ack", client_id=cid, status="sent"), what="the sent ack").data
        assert sent["mass_message"] == mass_id

    for member in online:
        got = live[member].inbox.expect(message(client_id=cid), what=f"the list message to {member}").data
        assert (got["from"], got["to"], got["list"]) == (creator, member, list_id)
        assert got["body"] == "new post for my fans"
    live[online[0]].inbox.assert_nothing(message(client_id=cid), what="a second copy")
    for member in online:
        assert len(deliveries(live[member], cid)) == 1, member
    for member in online_blocked:
        assert deliveries(live[member], cid) == [], f"{member} blocked the creator"
    for device in devices:
        device.inbox.assert_nothing(any_message(), wait=0, what="a copy to the creator")

    # one row per member who did not block the creator, none for those who did
    wanted = set(members) - set(blocked)
    stored = copies(stack.sessions, creator, cid)
    assert set(stored) == wanted
    assert set(stored.values()) == {1}
    with unit_of_work(stack.sessions) as session:
        rows = list(session.scalars(select(Message).where(Message.sender_id == creator)))
    assert all(r.list_id == list_id and not r.blocked for r in rows)
    assert len({r.id for r in rows}) == len(wanted)

    status = mass_message(stack, creator, mass_id)
    assert status["status"] == "sent"
    assert (status["recipients"], status["processed"]) == (1000, 1000)
    assert (status["stored"], status["skipped"]) == (len(wanted), len(blocked))
    assert status["list"] == list_id and status["client_id"] == cid

    # members who were away get it once when they come back; those who blocked never do
    back: dict[str, ChatClient] = {}
    for member in back_online + offline_blocked:
        back[member] = clients.connect(member, "phone", online=True)
    for member in back_sync:
        back[member] = clients.connect(member, "phone")
        back[member].command({"type": "sync"})
    for member in back_online + back_sync:
        got = back[member].inbox.expect(message(client_id=cid), what=f"the catch-up of {member}").data
        assert (got["from"], got["to"], got["list"]) == (creator, member, list_id)
    for member, client in back.items():
        client.inbox.expect(event("synced"), what=f"the end of {member}'s catch-up")
    for member in back_online + back_sync:
        assert len(deliveries(back[member], cid)) == 1, member
    for member in offline_blocked:
        assert deliveries(back[member], cid) == [], f"{member} blocked the creator"


def test_only_creators_message_lists_and_only_their_own(launch: Launch) -> None:
    stack, clients = launch()
    owner, other_creator, member = uid("creator"), uid("creator"), uid("member")
    fan = uid("fan")
    list_id = make_list(stack, owner, [fan, member])
    fan_client = clients.connect(fan)
    member_client = clients.connect(member)
    thief = connect_creator(clients, other_creator)

    by_member = list_message(member_client, list_id)
    error = member_client.inbox.expect(event("error", client_id=by_member), what="not_a_creator").data
    assert error["code"] == "not_a_creator"

    by_other = list_message(thief, list_id)
    error = thief.inbox.expect(event("error", client_id=by_other), what="list_not_owned").data
    assert error["code"] == "list_not_owned"

    unknown = list_message(thief, uuid.uuid4().hex)
    assert thief.inbox.expect(event("error", client_id=unknown)).data["code"] == "list_not_owned"

    fan_client.inbox.assert_nothing(any_message(), what="a refused list message")
    for client in (member_client, thief):
        client.inbox.assert_nothing(event("ack"), wait=0, what="an ack of a refused list message")
    with unit_of_work(stack.sessions) as session:
        queued = session.scalars(
            select(MassMessage).where(MassMessage.sender_id.in_([member, other_creator]))
        ).all()
    assert queued == []
    # the REST side agrees: a member has no lists, and nobody sees another's
    with rest(stack, member) as api:
        assert api.post("/v1/lists", json={"name": "mine"}).json()["code"] == "not_a_creator"
    with rest(stack, other_creator, Role.CREATOR) as api:
        assert api.get(f"/v1/lists/{list_id}").json()["code"] == "list_not_owned"


def test_a_redelivered_list_command_is_queued_and_expanded_once(launch: Launch) -> None:
    stack, clients = launch(fanout_page_size=50)
    creator = uid("creator")
    members = [uid("fan") for _ in range(300)]
    list_id = make_list(stack, creator, members)
    online = [clients.connect(m) for m in members[::60]]
    device = connect_creator(clients, creator)
    command = {"type": "message", "id": uuid.uuid4().hex, "list": list_id, "body": "once"}

    device.command(command)
    device.command(command)  # the broker redelivers, or the app resends before its ack

    ack = partial(event, "ack", client_id=command["id"])
    acks = [
        device.inbox.expect(ack(status="queued", duplicate=False), what="the queued ack").data,
        device.inbox.expect(ack(duplicate=True), what="the ack of the repeat").data,
        device.inbox.expect(ack(status="sent", duplicate=False), what="the sent ack").data,
    ]
    assert len({a["mass_message"] for a in acks}) == 1
    for client in online:
        client.inbox.expect(message(client_id=command["id"]), what=f"the copy of {client.user}")
    online[0].inbox.assert_nothing(message(client_id=command["id"]), what="a second copy")
    assert all(len(deliveries(c, command["id"])) == 1 for c in online)
    stored = copies(stack.sessions, creator, command["id"])
    assert set(stored) == set(members) and set(stored.values()) == {1}
    with unit_of_work(stack.sessions) as session:
        rows = session.scalars(select(MassMessage).where(MassMessage.sender_id == creator)).all()
        assert [(r.status, r.stored) for r in rows] == [("sent", 300)]
    assert len(device.inbox.matching(ack())) == 3


def test_the_list_service_going_away_refuses_then_pauses_without_losing_or_doubling(
    launch: Launch, fake: FakeServices
) -> None:
    """Down when the message comes: ``service_unavailable``, and the same id later goes
    through. Down in the middle of the fan-out: it waits, then resumes at the same page."""
    stack, clients = launch(lists_url=fake.url, fanout_page_size=100)
    creator = uid("creator")
    members = [uid("fan") for _ in range(400)]
    list_id = uuid.uuid4().hex
    fake.lists[list_id] = (creator, members)
    online = [clients.connect(m) for m in members[50::100]]
    device = connect_creator(clients, creator)
    fake.script(LIST, ["503", "503", "503"])  # the first try and both retries

    cid = list_message(device, list_id)
    error = device.inbox.expect(event("error", client_id=cid), what="service_unavailable").data
    assert error["code"] == "service_unavailable"
    assert copies(stack.sessions, creator, cid) == {}

    fake.script(MEMBERS, ["ok", "503", "503", "503", "drop"])  # page 2 fails twice over
    device.command({"type": "message", "id": cid, "list": list_id, "body": "new post"})
    device.inbox.expect(event("ack", client_id=cid, status="queued"), what="queued")
    device.inbox.expect(event("ack", client_id=cid, status="sent"), what="sent")
    for client in online:
        client.inbox.expect(message(client_id=cid), what=f"the copy of {client.user}")
    online[0].inbox.assert_nothing(message(client_id=cid), what="a second copy")
    stored = copies(stack.sessions, creator, cid)
    assert set(stored) == set(members) and set(stored.values()) == {1}
    afters = [r.query.get("after") for r in fake.requests_for(MEMBERS)]
    assert len(set(afters)) == 4 and afters[1] == afters[2] == afters[3] == afters[4] == afters[5]


def test_cancel_stops_a_fan_out_in_the_middle(launch: Launch, fake: FakeServices) -> None:
    """5,000 members from the list service over HTTP, 100 a page. The fourth page request is
    held until the test has canceled, so the cancel lands while the fan-out is sending."""
    stack, clients = launch(lists_url=fake.url, fanout_page_size=100, services_timeout_s=10)
    creator = uid("creator")
    members = [uid("fan") for _ in range(5000)]
    list_id = uuid.uuid4().hex
    fake.lists[list_id] = (creator, members)
    held, release = threading.Event(), threading.Event()

    def hold(request: Recorded) -> tuple[int, Any]:
        held.set()
        release.wait(TIMEOUT)
        return fake._answer(request)

    fake.script(MEMBERS, ["ok", "ok", "ok", hold])
    early, late = clients.connect(members[50]), clients.connect(members[4000])
    device = connect_creator(clients, creator)

    cid = list_message(device, list_id)
    mass_id = device.inbox.expect(event("ack", client_id=cid, status="queued")).data["mass_message"]
    assert held.wait(TIMEOUT), "the fan-out never asked for its fourth page"
    try:
        with rest(stack, creator, Role.CREATOR) as api:
            canceled = api.post(f"/v1/mass-messages/{mass_id}/cancel")
            assert canceled.status_code == 200, canceled.text
            assert canceled.json()["status"] == "canceled"
            again = api.post(f"/v1/mass-messages/{mass_id}/cancel")
            assert (again.status_code, again.json()["code"]) == (409, "already_finished")
    finally:
        release.set()

    early.inbox.expect(message(client_id=cid), what="a copy stored before the cancel")
    device.inbox.assert_nothing(event("ack", client_id=cid, status="sent"), what="a sent ack")
    status = mass_message(stack, creator, mass_id)
    assert status["status"] == "canceled"
    assert status["stored"] == status["processed"] == 300  # three pages, nothing of the fourth
    stored = copies(stack.sessions, creator, cid)
    assert set(stored) == set(members[:300]) and set(stored.values()) == {1}
    # it stays stopped: no more pages asked for, no more copies, nothing to the later members
    time.sleep(QUIET)
    assert len(fake.requests_for(MEMBERS)) == 4
    assert copies(stack.sessions, creator, cid) == stored
    assert mass_message(stack, creator, mass_id)["stored"] == 300
    late.command({"type": "sync"})
    late.inbox.expect(event("synced"))
    assert deliveries(late, cid) == []


# --- tips ---


class Funds:
    """Balances where the stack charges tips: its own ledger (admin REST) or the fake billing."""

    def __init__(self, stack: Stack, fake: FakeServices | None) -> None:
        self.stack, self.fake = stack, fake
        service = stack.app.settings.service_user
        self._admin = {"Authorization": f"Bearer {token(service, Role.SERVICE)}"}

    def top_up(self, user: str, amount: int) -> None:
        if self.fake is not None:
            with self.fake.lock:
                self.fake.balances[(user, "USD")] = self.fake.balances.get((user, "USD"), 0) + amount
            return
        response = httpx.post(
            f"{self.stack.api_url}/v1/admin/balances/{user}",
            json={"amount": amount, "currency": "USD"},
            headers=self._admin,
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text

    def balance(self, user: str) -> int:
        if self.fake is not None:
            with self.fake.lock:
                return self.fake.balances.get((user, "USD"), 0)
        response = httpx.get(
            f"{self.stack.api_url}/v1/admin/balances/{user}", headers=self._admin, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
        return int(response.json()["balances"].get("USD", 0))


def stored_rows(sessions: sessionmaker[Session], sender: str, cid: str) -> list[Message]:
    with unit_of_work(sessions) as session:
        return list(
            session.scalars(select(Message).where(Message.sender_id == sender, Message.client_msg_id == cid))
        )


@pytest.mark.parametrize("billing", ["ledger", "http"])
def test_tips_succeed_fail_for_funds_and_are_charged_once(
    launch: Launch, fake: FakeServices, billing: str
) -> None:
    preferences = f"https://example.test/billing/{uuid.uuid4().hex[:6]}"
    overrides: dict[str, Any] = {"billing_preferences_url": preferences}
    if billing == "http":
        overrides["billing_url"] = fake.url
    stack, clients = launch(**overrides)
    funds = Funds(stack, fake if billing == "http" else None)
    member, creator = clients.connect(uid("member")), connect_creator(clients, uid("creator"))
    funds.top_up(member.user, 700)

    # succeeded: the creator gets the message with its tip, the member an ack saying so
    ok = tip_command(creator.user, 500, "great stream")
    member.command(ok)
    ack = member.expect_ack(ok["id"])
    assert ack["status"] == "sent"
    assert ack["tip"] == {"amount": 500, "currency": "USD", "status": "succeeded"}
    got = creator.inbox.expect(message(client_id=ok["id"]), what="the tipped message").data
    assert (got["id"], got["from"], got["body"]) == (ack["id"], member.user, "great stream")
    assert got["tip"] == {"amount": 500, "currency": "USD", "status": "succeeded"}
    assert (funds.balance(member.user), funds.balance(creator.user)) == (200, 500)

    # not enough funds: tip_failed with where to fix it; nothing reaches the creator
    poor = tip_command(creator.user, 1000)
    member.command(poor)
    failed = member.inbox.expect(event("tip_failed", client_id=poor["id"]), what="tip_failed").data
    assert failed["billing_url"] == preferences
    assert failed["reason"] == "insufficient_funds"
    assert failed["tip"] == {"amount": 1000, "currency": "USD", "status": "failed"}
    creator.inbox.assert_nothing(message(client_id=poor["id"]), what="the message of a failed tip")
    member.inbox.assert_nothing(event("ack", client_id=poor["id"]), wait=0)
    assert stored_rows(stack.sessions, member.user, poor["id"]) == []
    assert (funds.balance(member.user), funds.balance(creator.user)) == (200, 500)

    # a creator who blocked the member refuses tips (said plainly: it would cost money)
    aloof = connect_creator(clients, uid("creator"))
    block(stack, aloof.user, member.user, Role.CREATOR)
    refused = tip_command(aloof.user, 100)
    member.command(refused)
    error = member.inbox.expect(event("error", client_id=refused["id"]), what="tip_refused").data
    assert error["code"] == "tip_refused"
    aloof.inbox.assert_nothing(any_message(), what="a refused tip")
    assert funds.balance(member.user) == 200

    # a redelivered command (the same one twice, then once more after it settled): charged once
    twice = tip_command(creator.user, 200, "again")
    member.command(twice)
    member.command(twice)
    first = member.expect_ack(twice["id"])
    assert first["tip"]["status"] == "succeeded"
    creator.inbox.expect(message(client_id=twice["id"]), what="the redelivered tip's message")
    member.command(twice)
    repeat = member.inbox.expect(event("ack", client_id=twice["id"], duplicate=True)).data
    assert (repeat["id"], repeat["tip"]["status"]) == (first["id"], "succeeded")
    creator.inbox.assert_nothing(message(client_id=twice["id"]), what="a second copy of a tip")
    assert [r.id for r in stored_rows(stack.sessions, member.user, twice["id"])] == [first["id"]]
    assert (funds.balance(member.user), funds.balance(creator.user)) == (0, 700)
    if billing == "http":
        key = f"tip:{member.user}:{twice['id']}"
        asked = [r for r in fake.requests_for(CHARGES) if r.headers.get("idempotency-key") == key]
        assert len(asked) == 1 and asked[0].json["idempotency_key"] == key
        assert [c.amount for c in fake.succeeded() if c.payer == member.user] == [500, 200]
        assert all(r.json["payee"] != aloof.user for r in fake.requests_for(CHARGES))


def test_a_billing_timeout_leaves_the_tip_pending_then_it_settles_once(
    launch: Launch, fake: FakeServices
) -> None:
    """Billing answers its first two attempts after the client gave up (it did charge on the
    first): the member hears ``pending``, then the settled ack; one charge moved money."""
    stack, clients = launch(billing_url=fake.url, services_timeout_s=0.3, services_retries=0, tip_retry_s=0.2)
    fake.slow_s = 1.0
    member, creator = clients.connect(uid("member")), connect_creator(clients, uid("creator"))
    fake.balances[(member.user, "USD")] = 1000
    fake.script(CHARGES, ["slow", "slow"])

    tip = tip_command(creator.user, 300, "slow bank")
    member.command(tip)

    pending = member.inbox.expect(event("ack", client_id=tip["id"], status="pending"), what="pending").data
    assert pending["id"] is None
    assert pending["tip"] == {"amount": 300, "currency": "USD", "status": "pending"}
    creator.inbox.assert_nothing(message(client_id=tip["id"]), wait=0, what="the message of a pending tip")
    settled = member.inbox.expect(event("ack", client_id=tip["id"], status="sent"), what="settled").data
    assert settled["tip"] == {"amount": 300, "currency": "USD", "status": "succeeded"}
    got = creator.inbox.expect(message(client_id=tip["id"]), what="the tipped message").data
    assert got["id"] == settled["id"] and got["tip"]["status"] == "succeeded"

    creator.inbox.assert_nothing(message(client_id=tip["id"]), what="a second copy")
    assert len(member.inbox.matching(event("ack", client_id=tip["id"], status="pending"))) == 1
    key = f"tip:{member.user}:{tip['id']}"
    asked = fake.requests_for(CHARGES)
    assert [r.behaviour for r in asked] == ["slow", "slow", "ok"]  # two timeouts, one answer
    assert {r.headers["idempotency-key"] for r in asked} == {key}
    assert {r.json["idempotency_key"] for r in asked} == {key}
    assert [(c.key, c.amount) for c in fake.succeeded()] == [(key, 300)]
    assert (fake.balances[(member.user, "USD")], fake.balances[(creator.user, "USD")]) == (700, 300)
    with unit_of_work(stack.sessions) as session:
        row = session.scalars(select(Tip).where(Tip.payer_id == member.user)).one()
        assert (row.status, row.attempts, row.message_id) == ("succeeded", 3, settled["id"])


# --- fan-out workers that die or stall ---
#
# Every fan-out worker on a database takes any mass message whose lease is free, so these
# tests hand theirs to runner A in the transaction that queues it, and runner B takes it over
# the moment A's lease runs out: a worker of another run sharing the database (MariaDB) has
# no free moment to take it.

LEASE_S = 1.0


def queue_for(sessions: sessionmaker[Session], runner: FanoutRunner, creator: str, list_id: str) -> int:
    """Queue a mass message already claimed by ``runner`` (with the product's claim)."""
    with unit_of_work(sessions) as session:
        [queued], _ = fanout.queue_mass_messages(
            session, [MassRequest(creator, uuid.uuid4().hex, list_id, "hello")]
        )
        assert queued.mass_message is not None
        mass_id = queued.mass_message.id
        assert mass_messages.claim(session, mass_id, runner.owner, utcnow(), LEASE_S)
        return mass_id


def claim(sessions: sessionmaker[Session], mass_id: int, runner: FanoutRunner) -> bool:
    """``runner`` claims this test's mass message (by id: ``FanoutRunner.claim`` takes the
    oldest claimable one, which in a shared database may be another run's)."""
    with unit_of_work(sessions) as session:
        return mass_messages.claim(session, mass_id, runner.owner, utcnow(), LEASE_S)


def take_over(sessions: sessionmaker[Session], mass_id: int, runner: FanoutRunner) -> None:
    """Refused while the holder's lease runs; ``runner``'s as soon as it has run out."""
    assert not claim(sessions, mass_id, runner), "taken over while the lease still held"
    lease_until = mass_row(sessions, mass_id).lease_until
    assert lease_until is not None
    time.sleep(max((lease_until - utcnow()).total_seconds() - 0.02, 0))
    deadline = time.monotonic() + TIMEOUT
    while not claim(sessions, mass_id, runner):
        assert time.monotonic() < deadline, "never claimable after the lease ran out"
        time.sleep(0.002)


def mass_row(sessions: sessionmaker[Session], mass_id: int) -> MassMessage:
    with unit_of_work(sessions) as session:
        row = mass_messages.get(session, mass_id)
        assert row is not None
        session.expunge(row)
        return row


def test_a_second_worker_resumes_a_fan_out_after_the_first_one_died(sessions: sessionmaker[Session]) -> None:
    """Runner A expands three pages and dies; B cannot take over while A's lease runs, then
    resumes from A's cursor. A waking up later stores nothing. Every member gets one copy."""
    creator, prefix = uid("creator"), uid("fan")
    members = [f"{prefix}-{n:04d}" for n in range(1000)]
    refusing = members[5::100]  # ten members blocked the creator, in every page
    with unit_of_work(sessions) as session:
        users.ensure(session, creator, "creator")
        list_id = lists.create(session, creator, "fans").id
        lists.add_members(session, list_id, members)
        users.ensure_many(session, refusing)
        for member in refusing:
            blocks.block(session, member, creator)
    source = EmbeddedLists(sessions)
    a = FanoutRunner(sessions, source, owner=uid("runner-a"), page_size=100, lease_s=LEASE_S)
    b = FanoutRunner(sessions, source, owner=uid("runner-b"), page_size=100, lease_s=LEASE_S)
    mass_id = queue_for(sessions, a, creator, list_id)

    def state() -> MassMessage:
        return mass_row(sessions, mass_id)

    delivered: list[str] = []
    for _ in range(3):
        chunk = a.step(mass_id)
        assert not chunk.done
        delivered += [o.topic for o in chunk.out]
    half = state()
    assert (half.status, half.processed, half.stored, half.skipped) == ("sending", 300, 297, 3)
    assert half.lease_owner == a.owner

    take_over(sessions, mass_id, b)  # A is gone: B once A's lease ran out
    zombie = a.step(mass_id)  # A wakes up: no longer its fan-out
    assert (zombie.out, zombie.done) == ([], True)
    assert state().processed == 300
    out = []
    while not (chunk := b.step(mass_id)).done:
        out += chunk.out
    out += chunk.out
    delivered += [o.topic for o in out if o.topic.endswith("/messages")]
    sent_acks = [o for o in out if o.topic == f"users/{creator}/events"]
    assert len(sent_acks) == 1 and b'"status":"sent"' in sent_acks[0].payload

    wanted = set(members) - set(refusing)
    assert sorted(delivered) == sorted(f"users/{m}/messages" for m in wanted)  # each once
    done = state()
    assert (done.status, done.processed, done.stored, done.skipped) == ("sent", 1000, 990, 10)
    assert (done.lease_owner, done.lease_until) == (None, None)
    stored = copies(sessions, creator, done.client_msg_id)
    assert set(stored) == wanted and set(stored.values()) == {1}


def test_a_worker_whose_page_outlives_its_lease_stores_nothing_of_it(
    sessions: sessionmaker[Session], fake: FakeServices
) -> None:
    """Runner A's request for its third page hangs in the list service (over HTTP) until its
    lease has run out and B has taken over. When the page comes, A stores none of it: B
    expands it, from the cursor A committed last."""
    creator = uid("creator")
    members = [uid("fan") for _ in range(500)]
    list_id = uuid.uuid4().hex
    fake.lists[list_id] = (creator, members)
    with unit_of_work(sessions) as session:
        users.ensure(session, creator, "creator")
    held, release = threading.Event(), threading.Event()

    def hold(request: Recorded) -> tuple[int, Any]:
        held.set()
        release.wait(TIMEOUT)
        return fake._answer(request)

    fake.script(MEMBERS, ["ok", "ok", hold])
    with ExitStack() as cleanup:
        runners = []
        for name in ("runner-a", "runner-b"):
            source = HttpLists(HttpService("lists", fake.url, timeout_s=TIMEOUT, retries=0))
            cleanup.callback(source.close)
            runners.append(FanoutRunner(sessions, source, owner=uid(name), page_size=100, lease_s=LEASE_S))
        a, b = runners
        mass_id = queue_for(sessions, a, creator, list_id)
        topics = [o.topic for _ in range(2) for o in a.step(mass_id).out]

        stalled: list[Any] = []
        step = threading.Thread(target=lambda: stalled.append(a.step(mass_id)), name="runner-a")
        step.start()
        cleanup.callback(step.join, TIMEOUT)
        cleanup.callback(release.set)
        assert held.wait(TIMEOUT), "runner A never asked for its third page"
        take_over(sessions, mass_id, b)
        release.set()
        step.join(TIMEOUT)
        assert [(c.out, c.done) for c in stalled] == [([], True)]
        assert mass_row(sessions, mass_id).processed == 200

        while not (chunk := b.step(mass_id)).done:
            topics += [o.topic for o in chunk.out]
        topics += [o.topic for o in chunk.out if o.topic.endswith("/messages")]

    assert sorted(topics) == sorted(f"users/{m}/messages" for m in members)
    done = mass_row(sessions, mass_id)
    assert (done.status, done.processed, done.stored) == ("sent", 500, 500)
    stored = copies(sessions, creator, done.client_msg_id)
    assert set(stored) == set(members) and set(stored.values()) == {1}
    # B went on from A's cursor: pages 3, 4 and 5 once each, page 3 twice (A's and B's)
    afters = [r.query.get("after") for r in fake.requests_for(MEMBERS)]
    assert len(afters) == 6 and afters[2] == afters[3] and len(set(afters)) == 5
