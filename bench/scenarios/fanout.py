"""``fanout``: a creator mass-messages a ``--members`` list (100,000) with ``--online`` members
(1,000) connected, while a 1:1 probe runs.

1. Seeds, with SQL bulk inserts (not through the product): the creator, the members, an embedded
   list holding them, and ``--blocked-pct`` percent of them blocking the creator.
2. Connects the online members (spread evenly over the list, a few of them blocking the creator)
   from ``--member-procs`` processes, each subscribed to ``users/{uid}/messages``.
3. Starts the 1:1 probe: two other members message each other at ``--probe-rate`` (QoS 1), for
   ``--baseline`` seconds before the mass message and all through it.
4. The creator publishes the mass message over MQTT; the bench polls ``mass_messages`` until it
   is ``sent`` and waits for the online members' copies.
5. Checks in the database that every member who does not block the creator has exactly one copy,
   that no blocking member has one, and that every online non-blocking member got theirs live.

Figures: time until all copies are stored (the handler's ``finished_at - created_at``), copies/s,
time until the last online member has it (from the publish), how long after its copy was stored
(``sent_at`` in the database) each online member got it, and the probe's p50/p99 before and
during the fan-out.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, select

from acl.principal import Role
from acl.tokens import issue_token
from bench.fanout import (
    TOKEN_TTL,
    Creator,
    DbCheck,
    MemberPool,
    Plan,
    Probe,
    close_client,
    mass_body,
    read_mass,
    seconds,
    seed,
)
from bench.scenarios import Scenario
from bench.stacks import Stack, bench_engine
from bench.suite import CpuMeter, Progress, Result, percentile
from bench.topology import BenchError, open_client
from messenger.models import Message

#: --quick: members, online members, seconds of baseline
QUICK = (2_000, 20, 1.0)
#: After the status is ``sent``, how long the last online copies may take.
GRACE_S = 30.0
POLL_S = 0.1


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--members", type=int, default=100_000, help="list size (100,000)")
    group.add_argument("--online", type=int, default=1_000, help="connected members (1,000)")
    group.add_argument("--member-procs", type=int, default=2, help="processes of the online members (2)")
    group.add_argument("--blocked-pct", type=float, default=1.0, help="percent blocking the creator (1)")
    group.add_argument("--probe-rate", type=float, default=50.0, help="1:1 probe messages/s (50)")
    group.add_argument("--baseline", type=float, default=10.0, help="seconds of probe before (10)")
    group.add_argument("--fanout-timeout", type=float, default=900.0, help="seconds the fan-out may take")


def _sizes(args: argparse.Namespace) -> tuple[int, int, float]:
    if args.quick:
        return QUICK
    return args.members, args.online, args.baseline


def _ms(values: list[float]) -> tuple[float | None, float | None]:
    ordered = sorted(v * 1000 for v in values)
    return percentile(ordered, 0.5), percentile(ordered, 0.99)


def run(stack: Stack, args: argparse.Namespace, progress: Progress) -> Result:
    members, online, baseline = _sizes(args)
    result = Result("fanout", stack.name, stack.describe())
    result.params = {
        "members": members,
        "online": online,
        "blocked_pct": args.blocked_pct,
        "probe_rate": args.probe_rate,
        "baseline_s": baseline,
    }
    plan = Plan.make(members, online, args.blocked_pct)
    engine = bench_engine(stack)
    pool: MemberPool | None = None
    probe: Probe | None = None
    creator_client: mqtt.Client | None = None
    cpu = CpuMeter(stack.pids())
    try:
        progress.step(f"fanout: seeding {members:,} members")
        seeded = seed(engine, plan)
        result.notes.append(f"seeded {members:,} members and the list in {seeded:.1f} s (SQL bulk inserts)")
        online_ids = [plan.members[i] for i in plan.online]
        online_blocked = {plan.members[i] for i in plan.online if i in plan.blocked}
        expected_online = set(online_ids) - online_blocked
        progress.step(f"fanout: connecting {online:,} online members")
        pool = MemberPool(stack.mqtt_port, online_ids, args.member_procs, plan.mass_client_id, 10.0)
        _, failures, failed = pool.wait_ready(15 + online / 20)
        if failed:
            raise BenchError(f"{failed} online members could not connect, e.g. {failures}")
        cpu.add(pool.pids)
        creator = Creator(plan.mass_client_id)
        creator_client = open_client(
            stack.mqtt_port,
            plan.creator,
            "bench",
            creator.on_event,
            f"users/{plan.creator}/events",
            10.0,
            token=issue_token(stack.secret, plan.creator, role=Role.CREATOR, ttl=TOKEN_TTL),
            nodelay=True,
        )
        probe = Probe(stack.mqtt_port, plan.probe, args.probe_rate, plan.tag, 10.0)

        progress.step(f"fanout: {baseline:g} s of 1:1 probe before")
        baseline_start = time.time()
        probe.start()
        while (waited := time.time() - baseline_start) < baseline:
            progress.update(waited, baseline, "baseline")
            time.sleep(0.1)

        command = {
            "type": "message",
            "id": plan.mass_client_id,
            "list": plan.list_id,
            "body": mass_body(plan.list_id, 0),
        }
        progress.step(f"fanout: {plan.expected_copies:,} copies")
        cpu.start()
        t_mass = time.time()
        creator_client.publish(f"inbound/{plan.creator}", json.dumps(command), qos=1)
        sent_seen = None
        while time.time() < t_mass + args.fanout_timeout:
            if creator.errors:
                raise BenchError(f"the mass message was refused: {creator.errors[0]}")
            row = read_mass(engine, plan.creator, plan.mass_client_id)
            if row is not None:
                progress.update(row.processed, members, f"{row.status}: {row.stored:,} stored")
                if row.status not in ("queued", "sending"):
                    sent_seen = time.time()
                    break
            time.sleep(POLL_S)
        result.check(f"the mass message ended within {args.fanout_timeout:g} s", sent_seen is not None)
        grace = time.time() + GRACE_S
        received, last_copy = pool.status()
        while received < len(expected_online) and time.time() < grace:
            time.sleep(0.05)
            received, last_copy = pool.status()
        t_done = max(sent_seen or time.time(), last_copy or 0.0)
        cpu.stop()
        probe.stop(grace=5)
        got: dict[str, float] = pool.stop()["received"]
        pool.close()
        pool = None
        row = read_mass(engine, plan.creator, plan.mass_client_id)
        db = DbCheck.read(engine, plan)

        stored_s = seconds(row.finished_at, row.created_at) if row else None
        # the targets are for the full size: 100,000 copies, 1,000 online
        full = members >= 100_000
        result.row("all copies stored (finished_at - created_at)", stored_s, "s", "<= 10 s" if full else "")
        if row and stored_s:
            result.row("copies stored per second", row.stored / stored_s, "copies/s")
        last = max(got.values(), default=None)
        result.row(
            "last online member has it (from the publish)", None if last is None else last - t_mass, "s"
        )
        lag = after_stored(engine, plan.creator, plan.mass_client_id, got)
        result.row("online: received after its copy was stored, p50", percentile(lag, 0.5), "s")
        result.row(
            "online: received after its copy was stored, max",
            lag[-1] if lag else None,
            "s",
            "<= 2 s" if full else "",
        )
        base, base_n, base_lost = probe.window(baseline_start, t_mass)
        during, during_n, during_lost = probe.window(t_mass, t_done)
        b50, b99 = _ms(base)
        d50, d99 = _ms(during)
        result.row("1:1 probe before: p50 / p99", f"{_f(b50)} / {_f(b99)}", "ms")
        result.row("1:1 probe during the fan-out: p50", d50, "ms")
        result.row("1:1 probe during the fan-out: p99", d99, "ms")
        result.series["latency_ms"] = {
            "1:1 probe before": [v * 1000 for v in base],
            "1:1 probe during the fan-out": [v * 1000 for v in during],
        }
        expected = plan.expected_copies
        result.check(
            f"status sent (is {row.status if row else 'missing'})", row is not None and row.status == "sent"
        )
        result.check(
            f"one copy per non-blocking member ({db.copies:,} copies, {db.distinct:,} recipients,"
            f" {expected:,} expected)",
            db.copies == db.distinct == expected,
        )
        result.check(f"no copy to a blocking member ({db.to_blocking})", db.to_blocking == 0)
        missing = len(expected_online - got.keys())
        result.check(f"every online non-blocking member got it live ({missing} missing)", missing == 0)
        result.check(
            f"no blocking online member got it ({len(online_blocked & got.keys())})",
            not online_blocked & got.keys(),
        )
        result.check(
            f"no probe message lost ({base_lost + during_lost} of {base_n + during_n})",
            base_lost + during_lost == 0,
        )
    except (BenchError, OSError, RuntimeError, TimeoutError) as exc:
        result.check(f"the run completed ({type(exc).__name__}: {exc})", False)
    finally:
        if pool is not None:
            pool.close()
        if probe is not None:
            probe.close()
        if creator_client is not None:
            close_client(creator_client)
        engine.dispose()
        result.cpu = cpu.shares()
    return result


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def after_stored(engine: Engine, creator: str, client_id: str, got: dict[str, float]) -> list[float]:
    """Sorted seconds from each online member's copy's ``sent_at`` to its receipt."""
    stored: dict[str, datetime] = {}
    ids = list(got)
    with engine.connect() as conn:
        for n in range(0, len(ids), 1000):
            rows = conn.execute(
                select(Message.recipient_id, Message.sent_at).where(
                    Message.sender_id == creator,
                    Message.client_msg_id == client_id,
                    Message.recipient_id.in_(ids[n : n + 1000]),
                )
            )
            stored.update({r: s for r, s in rows})
    lags = []
    for uid, received in got.items():
        if (at := stored.get(uid)) is not None:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            lags.append(received - at.timestamp())
    return sorted(lags)


SCENARIO = Scenario(
    "fanout", "a mass message to a 100,000-member list, 1,000 members online", add_arguments, run
)
