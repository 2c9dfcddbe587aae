"""Nothing lost, stored twice or charged twice under faults (issue 16, "Chaos suite").

Each scenario starts the production topology on the suite's own MariaDB and Redis, runs the
load of :mod:`tests.chaos.load` (1:1 messages over MQTT and REST, tips, a mass message) and
injects one fault a quarter of the way in, while the load goes on. It prints a count table and
fails on any loss, duplicate stored or double charge, and on a stored message that never
reached its connected recipient, not even by a catch-up. Late delivery is allowed; its delay is
in the table's notes. ``CHAOS_SCALE=full`` (``make chaos``) runs 10,000 messages and 30 s
outages; the default is the short run. docs/chaos.md says what each scenario does.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time

import httpx
import pytest

from tests.chaos.conftest import TIMEOUT_S, Chaos
from tests.chaos.load import Counts
from tests.fakes import CHARGES, Recorded

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(TIMEOUT_S)]


def check(counts: Counts) -> None:
    """No loss, no duplicate stored, no double charge (and nothing else the count table flags)."""
    total = counts.total
    assert (total.lost, total.duplicates, total.double_charges) == (0, 0, 0), counts.render()
    assert not counts.failures, counts.render()


def test_mariadb_down(chaos: Chaos) -> None:
    """The database stopped (the process ends) for the outage, then started on the same data."""

    def fault(c: Chaos) -> None:
        c.note("MariaDB stopped")
        c.mariadb.stop()
        time.sleep(c.scale.outage_s)
        c.mariadb.start()
        c.note("MariaDB started again")

    check(chaos.run(fault))


def test_redis_down(chaos: Chaos) -> None:
    """Redis (rate limits, presence) stopped for the outage, then started empty on the same port."""

    def fault(c: Chaos) -> None:
        c.note("Redis stopped")
        c.redis.stop()
        time.sleep(c.scale.outage_s)
        c.redis.start()
        c.note("Redis started again")

    check(chaos.run(fault))


def test_broker_restart(chaos: Chaos) -> None:
    """Mosquitto killed (SIGKILL: what it had not saved is gone) and started again on the same
    port and persistence directory; every client and service reconnects by itself."""

    def fault(c: Chaos) -> None:
        c.note("Mosquitto killed")
        c.topology.kill("mosquitto", signal.SIGKILL)
        time.sleep(1)
        c.topology.start_mosquitto()
        c.note("Mosquitto started again")

    check(chaos.run(fault))


_COUNTERS = re.compile(r"^(messenger_handler_commands_(?:received|acked)_total) (\S+)$", re.MULTILINE)


def _in_hand(c: Chaos, name: str) -> int:
    """Commands the handler took from the broker and has not acked yet (from its /metrics)."""
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(f"{c.topology.internal_url(name)}/metrics", timeout=2).text
        values = {key: float(value) for key, value in _COUNTERS.findall(text)}
        return int(
            values.get("messenger_handler_commands_received_total", 0)
            - values.get("messenger_handler_commands_acked_total", 0)
        )
    return -1


def _kill_handler_mid_batch(c: Chaos, name: str) -> None:
    """SIGKILL ``name`` while it holds commands it has not acked (waits a bounded while for that)."""
    deadline = time.monotonic() + 5
    held = _in_hand(c, name)
    while held <= 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        held = _in_hand(c, name)
    c.topology.kill(name, signal.SIGKILL)
    c.note(f"{name} killed (SIGKILL) holding {held} unacked commands")


def test_handler_sigkill_restarted(chaos: Chaos) -> None:
    """A handler SIGKILLed mid-batch, started again under the same name after the outage: it
    resumes its persistent session and handles what the broker kept for it."""

    def fault(c: Chaos) -> None:
        _kill_handler_mid_batch(c, "handler-1")
        time.sleep(c.scale.outage_s)
        c.topology.start_handler(1)
        c.note("handler-1 started again under the same name")

    check(chaos.run(fault))


def test_handler_sigkill_never_restarted(chaos: Chaos) -> None:
    """A handler SIGKILLed mid-batch and never started again: the other one empties its session
    (what it held and what the broker queued for it) within seconds, and leaves it."""

    def fault(c: Chaos) -> None:
        _kill_handler_mid_batch(c, "handler-1")

    check(chaos.run(fault))


def test_api_restart(chaos: Chaos) -> None:
    """The API (REST and the broker's gateway) killed and started again: REST sends are repeated
    with the same ``client_id`` until they get an answer; MQTT traffic goes on. Three clients lose
    their connection while the API is down: the broker cannot admit them until it is back."""

    def fault(c: Chaos) -> None:
        c.note("API killed")
        c.topology.kill("api", signal.SIGKILL)
        dropped = [c.load.recipients[0], c.load.recipients[1], c.load.senders[0]]
        for user in dropped:
            c.load.clients[user].drop()
        c.note(f"connections of {len(dropped)} clients cut")
        time.sleep(2)
        c.topology.start_api()
        c.note("API started again")

    check(chaos.run(fault))


def test_billing_5xx_then_timeout(chaos: Chaos) -> None:
    """Billing answers 503 for half the outage, then times out for the other half (alternately
    after charging and without charging), then recovers: every tip is charged exactly once."""
    mode = ["ok"]
    release = threading.Event()  # set at the end: cuts a hanging answer short

    def charges(request: Recorded) -> tuple[int, object]:
        current = mode[0]
        if current == "5xx":
            return 503, {"error": "scripted 503"}
        if current == "timeout":
            charge_first = len(chaos.fake.requests_for(CHARGES)) % 2 == 0
            answer = chaos.fake.answer(request) if charge_first else (504, {"error": "too late"})
            release.wait(chaos.fake.slow_s)  # past the client's timeout: it has given up
            return answer
        return chaos.fake.answer(request)

    chaos.fake.script(CHARGES, [], then=charges)

    def fault(c: Chaos) -> None:
        c.note("billing answers 503")
        mode[0] = "5xx"
        time.sleep(c.scale.outage_s / 2)
        c.note("billing times out")
        mode[0] = "timeout"
        time.sleep(c.scale.outage_s / 2)
        mode[0] = "ok"
        c.note("billing answers again")

    try:
        counts = chaos.run(fault)
    finally:
        release.set()
    check(counts)
    behaviours = {r.behaviour for r in chaos.fake.requests_for(CHARGES)}
    assert behaviours == {"callable"}, behaviours
