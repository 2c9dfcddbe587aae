"""The per-user buckets of MQTT commands (issue 16, class 4): typing, read marks, catch-ups and
tips, each with its own bucket in the real Redis (``RedisRateLimiter``), its small limits set
through the settings. Beyond a limit a command gets the ``rate_limited`` error event with
``retry_after``; a typing event is dropped without one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from handler.processor import CommandProcessor, Inbound
from messenger.db import unit_of_work
from messenger.models import Tip
from messenger.ratelimit import RateLimiter, create_rate_limiter
from messenger.settings import CommonSettings
from tests.conftest import PRESENCE, REDIS_URL
from tests.handler.test_processor import MakeUser, Sessions, cmd, events_of, messages_of, msg, run, to

#: Every bucket of these tests holds ``burst`` tokens and refills one per 1000 s: none comes
#: back during a test.
SLOW = 0.001


def limiter_for(**limits: Any) -> RateLimiter:
    """The limiter a process builds, from settings with ``limits`` (e.g. ``typing_burst=5``)."""
    url = REDIS_URL if "redis" in PRESENCE else None
    return create_rate_limiter(url, CommonSettings(**limits).rate_limits())


@pytest.fixture
def limited(sessions: sessionmaker[Session]) -> Iterator[CommandProcessor]:
    limiter = limiter_for(
        typing_rate_per_s=SLOW,
        typing_burst=5,
        read_rate_per_s=SLOW,
        read_burst=2,
        sync_rate_per_s=SLOW,
        sync_burst=2,
        tip_rate_per_s=SLOW,
        tip_burst=2,
    )
    yield CommandProcessor(sessions, sync_page_size=3, limiter=limiter)
    limiter.close()


def errors(events: list[tuple[str, dict[str, Any]]], user: str) -> list[dict[str, Any]]:
    return [e for e in to(events, events_of(user)) if e["type"] == "error"]


def test_a_typing_flood_delivers_one_bucket_and_is_dropped_silently(
    limited: CommandProcessor, make_user: MakeUser
) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    flood = [cmd(alice, {"type": "typing", "to": bob}) for _ in range(50)]
    events = run(limited, *flood[:30]) + run(limited, *flood[30:])

    assert len(to(events, events_of(bob))) == 5
    assert errors(events, alice) == []  # dropped, not answered: no error event per typing event
    # buckets are per user
    assert len(to(run(limited, cmd(carol, {"type": "typing", "to": bob})), events_of(bob))) == 1


def test_read_marks_beyond_the_bucket_are_refused(
    limited: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    ids = [to(run(limited, msg(alice, bob, f"m-{n}")), messages_of(bob))[0]["id"] for n in range(3)]
    events = run(limited, *(cmd(bob, {"type": "read", "up_to": i}) for i in ids))

    assert [e["up_to"] for e in to(events, events_of(alice))] == ids[:2]
    (refused,) = errors(events, bob)
    assert (refused["code"], refused["client_id"], refused["limit"]) == ("rate_limited", None, "read")
    assert refused["detail"].startswith("too many read marks")
    assert refused["retry_after"] > 0
    # a read with an id gets it back in its refusal
    (named,) = errors(run(limited, cmd(bob, {"type": "read", "up_to": ids[2], "id": "r-7"})), bob)
    assert (named["code"], named["client_id"], named["limit"]) == ("rate_limited", "r-7", "read")


def test_a_sync_flood_is_limited(limited: CommandProcessor, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    run(limited, msg(alice, bob, "m-0"))
    syncs = [cmd(bob, {"type": "sync", "after": 0, "id": f"s-{n}"}) for n in range(5)]
    events = [e for sync in syncs for e in run(limited, sync)]

    synced = [e for e in to(events, events_of(bob)) if e["type"] == "synced"]
    assert [e["client_id"] for e in synced] == ["s-0", "s-1"]  # each answer names its request
    assert len(to(events, messages_of(bob))) == 2  # the one message, pushed by each catch-up
    refused = errors(events, bob)
    assert [(e["code"], e["client_id"], e["limit"]) for e in refused] == [
        ("rate_limited", f"s-{n}", "sync") for n in (2, 3, 4)
    ]
    assert all(e["detail"].startswith("too many catch-up requests") for e in refused)
    # a device coming online asks for a catch-up too, from the same bucket
    online = run(limited, Inbound(f"presence/{bob}/phone", b"online"))
    assert [e["code"] for e in errors(online, bob)] == ["rate_limited"]


def test_tips_beyond_the_bucket_are_refused_before_they_are_recorded(
    limited: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    member, creator = make_user("member"), make_user("creator", "creator")
    tag = uuid.uuid4().hex[:6]
    tips = [
        cmd(
            member,
            {
                "type": "message",
                "id": f"t-{tag}-{n}",
                "to": creator,
                "body": "",
                "tip": {"amount": 100, "currency": "USD"},
            },
        )
        for n in range(4)
    ]
    try:
        events = run(limited, *tips)
    finally:
        with unit_of_work(sessions) as session:
            recorded = session.scalars(select(Tip.client_msg_id).where(Tip.payer_id == member)).all()
            # nothing left due for the tip settler of a stack sharing this database
            session.execute(delete(Tip).where(Tip.payer_id == member))

    refused = errors(events, member)
    assert [(e["code"], e["client_id"]) for e in refused] == [
        ("rate_limited", f"t-{tag}-2"),
        ("rate_limited", f"t-{tag}-3"),
    ]
    assert all(e["detail"].startswith("too many tips") and e["retry_after"] > 0 for e in refused)
    assert sorted(recorded) == [f"t-{tag}-0", f"t-{tag}-1"]
