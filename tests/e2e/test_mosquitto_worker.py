"""Fan-out and tips in a ``messenger worker`` process, beside a handler that leaves them alone.

A module of its own: background workers take any queued work in their database, so no other
topology may run at the same time (the module-scoped one of ``test_mosquitto_fanout.py`` is
stopped at the end of its module).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from messenger.db import unit_of_work
from messenger.models import Tip
from tests.e2e.deployed import Deployed, deploy
from tests.e2e.helpers import TIMEOUT, Clients, event, message
from tests.e2e.lists import connect_creator, copies, list_message, make_list, tip_command

ADMIN_KEY = "worker-e2e-admin-" + uuid.uuid4().hex


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def with_worker(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    """One handler that leaves background work alone (MESSENGER_BACKGROUND_WORK=false) and one
    ``messenger worker`` that does it."""
    yield from deploy(request, {"MESSENGER_ADMIN_KEY": ADMIN_KEY}, handlers=1, workers=1)


def test_a_worker_process_does_the_fan_out_and_the_tips(with_worker: Deployed) -> None:
    clients = Clients(with_worker)
    try:
        creator, prefix = uid("creator"), uid("fan")
        members = [f"{prefix}-{n:02d}" for n in range(30)]
        list_id = make_list(with_worker, creator, members)
        fan = clients.connect(members[7])
        device = connect_creator(clients, creator)

        cid = list_message(device, list_id)
        sent = device.inbox.expect(event("ack", client_id=cid, status="sent"), what="sent").data
        fan.inbox.expect(message(client_id=cid), what="the fan's copy")
        assert set(copies(with_worker.sessions, creator, cid)) == set(members)

        topped = httpx.post(
            f"{with_worker.api_url}/v1/admin/balances/{fan.user}",
            json={"amount": 500, "currency": "USD"},
            headers={"X-Admin-Key": ADMIN_KEY},
            timeout=TIMEOUT,
        )
        assert topped.status_code == 200, topped.text
        tipped = tip_command(creator, 300)
        fan.command(tipped)
        assert fan.expect_ack(tipped["id"])["tip"]["status"] == "succeeded"
        device.inbox.expect(message(client_id=tipped["id"]), what="the tipped message")

        topology = with_worker.topology
        started = f"fan-out of mass message {sent['mass_message']}: started by"
        assert started in topology.log("worker-1").read_text()
        assert started not in topology.log("handler-1").read_text()
        with unit_of_work(with_worker.sessions) as session:
            tip_row = session.scalar(select(Tip).where(Tip.client_msg_id == tipped["id"]))
            assert tip_row is not None
            assert tip_row.lease_owner == f"{topology.node_id}-worker-1"
    finally:
        clients.close_all()


APPLIED = "messenger_presence_changes_applied_total"


def _metric(text: str, name: str) -> float:
    """The value of an unlabelled sample ``name`` in a Prometheus exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def test_every_process_answers_health_readiness_and_metrics(with_worker: Deployed) -> None:
    """The internal listener of each role, as compose's health checks and Prometheus use it."""
    topology = with_worker.topology
    names = [name for name in topology.procs if name != "mosquitto"]
    assert sorted(names) == ["api", "bridge", "handler-1", "worker-1"]
    for name in names:
        base = topology.internal_url(name)
        assert httpx.get(f"{base}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz", timeout=TIMEOUT)
        assert (ready.status_code, ready.json()["status"]) == (200, "ready"), (name, ready.text)
        assert set(ready.json()["checks"].values()) == {"ok"}

    clients = Clients(with_worker)
    try:
        alice, bob = clients.connect(uid("alice")), clients.connect(uid("bob"))
        handler_metrics = f"{topology.internal_url('handler-1')}/metrics"
        before = _metric(
            httpx.get(handler_metrics, timeout=TIMEOUT).text, "messenger_handler_commands_acked_total"
        )
        cid = alice.send(bob.user, "counted")
        alice.expect_ack(cid)
        bob.inbox.expect(message(client_id=cid), what="bob's copy")
        text = httpx.get(handler_metrics, timeout=TIMEOUT).text
        assert _metric(text, "messenger_handler_commands_acked_total") > before
        assert _metric(text, "messenger_handler_queue_depth") >= 0
        assert 'messenger_mqtt_published_total{role="handler"}' in text
        alice.go_online()
        bridge_metrics = f"{topology.internal_url('bridge')}/metrics"
        deadline = time.monotonic() + TIMEOUT
        while _metric(httpx.get(bridge_metrics, timeout=TIMEOUT).text, APPLIED) < 1:
            assert time.monotonic() < deadline, "the bridge never counted alice's presence"
            time.sleep(0.05)
    finally:
        clients.close_all()

    # the gateway and /metrics answer on the API's internal port only
    assert httpx.get(f"{with_worker.api_url}/metrics", timeout=TIMEOUT).status_code == 404
    assert httpx.get(f"{topology.internal_url('api')}/metrics", timeout=TIMEOUT).status_code == 200
