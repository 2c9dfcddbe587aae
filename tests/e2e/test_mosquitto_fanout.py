"""Mass messages and tips on the production path: Mosquitto with the project's plugin,
``messenger api``, two ``messenger handler`` processes and ``messenger bridge``, against
MariaDB and Redis (``scripts/topology.py``), with the embedded list service and ledger.

Covers a list message (live, catch-up, blocks, the creator's acks), the refusals, tips
(succeeded, declined for funds, redelivered and charged once), and a 20,000-member fan-out
whose handler is killed with SIGKILL in the middle: the other handler resumes it from its
cursor once the lease runs out, and every member ends up with exactly one copy.

The handlers' fan-out and tip workers take any free mass message or due tip in the database:
another topology or stack running on the same MariaDB at the same time (a benchmark, say) can
take this module's work, and then its clients wait in vain.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from messenger.db import unit_of_work
from messenger.models import MassMessage
from tests.e2e.deployed import Deployed, deploy
from tests.e2e.helpers import (
    QUIET,
    TIMEOUT,
    Clients,
    any_message,
    event,
    message,
    stored_messages,
    wait_until,
)
from tests.e2e.lists import block, connect_creator, copies, deliveries, list_message, make_list, tip_command

ADMIN_KEY = "fanout-e2e-admin-" + uuid.uuid4().hex
#: Members per fan-out transaction, and how long a dead handler's fan-out waits for another.
PAGE_SIZE = 100
LEASE_S = 2.0
BIG = 20_000
#: Bound on waiting for the big fan-out (not a measurement).
FANOUT_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    yield from deploy(
        request,
        {
            "MESSENGER_ADMIN_KEY": ADMIN_KEY,
            "MESSENGER_FANOUT_PAGE_SIZE": str(PAGE_SIZE),
            "MESSENGER_FANOUT_LEASE_S": str(LEASE_S),
        },
    )


@pytest.fixture(scope="module")
def stack(deployed: Deployed) -> Deployed:
    """The e2e ``clients`` fixture connects to ``stack``: here, the Mosquitto topology."""
    return deployed


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def mass_row(deployed: Deployed, mass_id: int) -> MassMessage:
    with unit_of_work(deployed.sessions) as session:
        row = session.get(MassMessage, mass_id)
        assert row is not None
        session.expunge(row)
        return row


# --- list messages ---


def test_a_list_message_through_mosquitto(deployed: Deployed, clients: Clients) -> None:
    creator, prefix = uid("creator"), uid("fan")
    members = [f"{prefix}-{n:03d}" for n in range(500)]
    online = [members[n] for n in range(0, 500, 50)]
    blocked = [members[n] for n in (25, 125, 375, 499)]
    away = [members[n] for n in (7, 250, 498)]
    devices = [connect_creator(clients, creator, d) for d in ("phone", "laptop")]
    list_id = make_list(deployed, creator, members)
    for member in blocked:
        block(deployed, member, creator)
    live = {m: clients.connect(m, online=True) for m in online + blocked[:2]}
    for client in live.values():
        client.inbox.expect(event("synced"), what="the empty catch-up")

    cid = list_message(devices[0], list_id)

    for device in devices:
        queued = device.inbox.expect(event("ack", client_id=cid, status="queued"), what="queued").data
        sent = device.inbox.expect(event("ack", client_id=cid, status="sent"), what="sent").data
        assert queued["mass_message"] == sent["mass_message"]
    for member in online:
        got = live[member].inbox.expect(message(client_id=cid), what=f"the copy of {member}").data
        assert (got["from"], got["to"], got["list"]) == (creator, member, list_id)
    live[online[0]].inbox.assert_nothing(message(client_id=cid), what="a second copy")
    assert all(len(deliveries(live[m], cid)) == 1 for m in online)
    assert all(deliveries(live[m], cid) == [] for m in blocked[:2])
    devices[0].inbox.assert_nothing(any_message(), wait=0, what="a copy to the creator")

    stored = copies(deployed.sessions, creator, cid)
    assert set(stored) == set(members) - set(blocked) and set(stored.values()) == {1}
    row = mass_row(deployed, sent["mass_message"])
    assert (row.status, row.processed, row.stored, row.skipped) == ("sent", 500, 496, 4)

    # back online: the copy once, in the catch-up; nothing for those who blocked the creator
    for member in away + blocked[2:]:
        client = clients.connect(member, "phone", online=True)
        if member in away:
            client.inbox.expect(message(client_id=cid), what=f"the catch-up of {member}")
        client.inbox.expect(event("synced"), what=f"the end of {member}'s catch-up")
        assert len(deliveries(client, cid)) == (1 if member in away else 0), member


def test_list_messages_are_refused_to_members_and_to_other_creators(
    deployed: Deployed, clients: Clients
) -> None:
    owner, fan = uid("creator"), uid("fan")
    list_id = make_list(deployed, owner, [fan])
    fan_client = clients.connect(fan)
    member, other = clients.connect(uid("member")), connect_creator(clients, uid("creator"))

    by_member = list_message(member, list_id)
    assert member.inbox.expect(event("error", client_id=by_member)).data["code"] == "not_a_creator"
    by_other = list_message(other, list_id)
    assert other.inbox.expect(event("error", client_id=by_other)).data["code"] == "list_not_owned"
    fan_client.inbox.assert_nothing(any_message(), what="a refused list message")
    with unit_of_work(deployed.sessions) as session:
        queued = session.scalar(
            select(func.count()).where(MassMessage.sender_id.in_([member.user, other.user]))
        )
    assert queued == 0


# --- tips on the embedded ledger ---


def balance(deployed: Deployed, user: str) -> int:
    response = httpx.get(
        f"{deployed.api_url}/v1/admin/balances/{user}", headers={"X-Admin-Key": ADMIN_KEY}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    return int(response.json()["balances"].get("USD", 0))


def test_tips_through_mosquitto(deployed: Deployed, clients: Clients) -> None:
    member, creator = clients.connect(uid("member")), connect_creator(clients, uid("creator"))
    topped = httpx.post(
        f"{deployed.api_url}/v1/admin/balances/{member.user}",
        json={"amount": 600, "currency": "USD"},
        headers={"X-Admin-Key": ADMIN_KEY},
        timeout=TIMEOUT,
    )
    assert topped.status_code == 200, topped.text

    ok = tip_command(creator.user, 400)
    member.command(ok)
    ack = member.expect_ack(ok["id"])
    assert ack["tip"] == {"amount": 400, "currency": "USD", "status": "succeeded"}
    got = creator.inbox.expect(message(client_id=ok["id"]), what="the tipped message").data
    assert got["id"] == ack["id"] and got["tip"]["status"] == "succeeded"

    poor = tip_command(creator.user, 1000)
    member.command(poor)
    failed = member.inbox.expect(event("tip_failed", client_id=poor["id"]), what="tip_failed").data
    assert failed["reason"] == "insufficient_funds" and failed["billing_url"]
    creator.inbox.assert_nothing(message(client_id=poor["id"]), what="the message of a failed tip")
    assert stored_messages(deployed, member.user, poor["id"]) == []

    # the same command twice: the two handlers may each get one; charged once all the same
    twice = tip_command(creator.user, 200)
    member.command(twice)
    member.command(twice)
    first = member.expect_ack(twice["id"])
    creator.inbox.expect(message(client_id=twice["id"]), what="the redelivered tip's message")
    creator.inbox.assert_nothing(message(client_id=twice["id"]), what="a second copy")
    assert [r.id for r in stored_messages(deployed, member.user, twice["id"])] == [first["id"]]
    assert (balance(deployed, member.user), balance(deployed, creator.user)) == (0, 600)


# --- a handler killed in the middle of a fan-out ---


def test_a_fan_out_resumes_on_the_other_handler_when_its_handler_is_killed(
    deployed: Deployed, clients: Clients
) -> None:
    topology = deployed.topology
    creator, prefix = uid("creator"), uid("fan")
    members = [f"{prefix}-{n:05d}" for n in range(BIG)]  # listed (by id) in this order
    blocked = members[123::2000]
    list_id = make_list(deployed, creator, members)
    for member in blocked:
        block(deployed, member, creator)
    early = clients.connect(members[3])  # in the first page: sent before the kill
    late = [clients.connect(m) for m in (members[-1000], members[-2])]  # sent after the resume
    device = connect_creator(clients, creator)

    cid = list_message(device, list_id, "to twenty thousand")
    mass_id = device.inbox.expect(event("ack", client_id=cid, status="queued")).data["mass_message"]

    row = wait_until(
        lambda: (r := mass_row(deployed, mass_id)).processed >= 10 * PAGE_SIZE and r,
        FANOUT_TIMEOUT,
        "ten pages expanded",
    )
    names = {f"{topology.node_id}-handler-{n}": n for n in range(1, topology.handlers + 1)}
    assert row.lease_owner in names, row.lease_owner
    victim = names[row.lease_owner]
    survivor = next(n for n in names.values() if n != victim)
    topology.kill(f"handler-{victim}", signal.SIGKILL)
    try:
        at_kill = mass_row(deployed, mass_id)
        assert at_kill.status == "sending" and at_kill.processed < BIG, "over before the kill: grow BIG"
        done = wait_until(
            lambda: (r := mass_row(deployed, mass_id)).status == "sent" and r,
            FANOUT_TIMEOUT,
            "the fan-out resumed and finished",
        )
    finally:
        topology.start_handler(victim)

    survivor_log = topology.log(f"handler-{survivor}").read_text(errors="replace")
    assert f"fan-out of mass message {mass_id}: started by" in survivor_log
    assert f"mass message {mass_id} to list {list_id} sent" in survivor_log
    device.inbox.expect(event("ack", client_id=cid, status="sent"), what="the sent ack")

    wanted = set(members) - set(blocked)
    stored = copies(deployed.sessions, creator, cid)
    assert len(stored) == len(wanted) and set(stored) == wanted
    assert set(stored.values()) == {1}  # nobody twice, however the kill fell
    assert (done.processed, done.stored, done.skipped) == (BIG, len(wanted), len(blocked))
    for client in (early, *late):
        got = client.inbox.expect(message(client_id=cid), what=f"the copy of {client.user}").data
        assert got["to"] == client.user
    early.inbox.assert_nothing(message(client_id=cid), wait=QUIET, what="a second copy")
    assert all(len(deliveries(c, cid)) == 1 for c in (early, *late))
