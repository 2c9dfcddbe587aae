"""Fast tests of the client library's pure parts: backoff bounds, the catch-up merge, the
outbox's states and retries, token expiry and refresh scheduling, and the payload parsers."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from messenger_client import Ack, Backoff, CatchUp, CommandError, Message, ProtocolError, SendError, TipFailed
from messenger_client import parse as parsing
from messenger_client.outbox import Outbox, Outgoing, SendState
from messenger_client.tokens import TokenSource, token_expiry

from tests.conftest import token

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def msg(message_id: int) -> Message:
    return Message(message_id, f"c{message_id}", "alice", "bob", f"body {message_id}", NOW)


# --- backoff ---


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=30.0)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30.0  # no overflow


def test_backoff_delays_are_full_jitter_within_the_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(7))
    for attempt in range(12):
        delays = [backoff.delay(attempt) for _ in range(200)]
        ceiling = backoff.ceiling(attempt)
        assert all(0 <= d <= ceiling for d in delays)
        # spread over the whole range, not bunched near the ceiling
        assert min(delays) < ceiling / 10 and max(delays) > ceiling * 0.9


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_backoff_refuses_nonsense(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(base=base, cap=cap)


# --- the catch-up merge ---


def test_live_messages_pass_once() -> None:
    merge = CatchUp()
    assert merge.offer(msg(5)) == [msg(5)]
    assert merge.offer(msg(5)) == []
    assert merge.offer(msg(3)) == [msg(3)]  # late but new (another handler's): not lost
    assert merge.duplicates == 1 and merge.resume_after == 5


def test_a_catch_up_releases_held_and_caught_up_messages_in_id_order() -> None:
    merge = CatchUp()
    merge.offer(msg(2))
    assert merge.begin() == 2
    assert merge.offer(msg(9)) == []  # live, while the catch-up runs: held
    assert merge.offer(msg(3)) == [] and merge.offer(msg(4)) == []  # the catch-up
    assert merge.offer(msg(4)) == []  # a repeat
    released, next_after = merge.synced(4, more=False)
    assert [m.id for m in released] == [3, 4, 9] and next_after is None
    assert not merge.active and merge.resume_after == 9
    assert merge.offer(msg(9)) == [] and merge.duplicates == 2


def test_a_catch_up_pages_on_from_the_last_id_pushed_not_from_a_held_live_message() -> None:
    merge = CatchUp(last_id=10)
    assert merge.begin() == 10
    merge.offer(msg(500))  # live, beyond the pages still to come
    merge.offer(msg(11))
    merge.offer(msg(12))
    assert merge.synced(12, more=True) == ([], 12)
    assert merge.resume_after == 12
    merge.offer(msg(13))
    released, next_after = merge.synced(13, more=False)
    assert [m.id for m in released] == [11, 12, 13, 500] and next_after is None
    assert merge.resume_after == 500


def test_a_page_whose_synced_overtook_its_messages_is_asked_again() -> None:
    merge = CatchUp(last_id=10)
    merge.begin()
    assert merge.synced(12, more=True) == ([], 10)  # 11 and 12 not here yet: same page again


def test_a_connection_lost_mid_catch_up_resumes_from_where_the_catch_up_started() -> None:
    merge = CatchUp(last_id=10)
    merge.begin()
    merge.offer(msg(50))  # live, held; 11..49 not caught up yet
    assert merge.begin() == 10  # the next connection's sync
    merge.offer(msg(11))
    released, _ = merge.synced(11, more=False)
    assert [m.id for m in released] == [11, 50]


def test_last_id_and_what_is_below_it_count_as_seen() -> None:
    merge = CatchUp(last_id=100)
    assert merge.offer(msg(100)) == [] and merge.offer(msg(7)) == []
    assert merge.offer(msg(101)) == [msg(101)]


def test_a_synced_outside_a_catch_up_changes_nothing() -> None:
    merge = CatchUp()
    merge.offer(msg(4))
    assert merge.synced(40, more=True) == ([], None)
    assert merge.resume_after == 4


def test_giving_up_on_a_catch_up_releases_but_does_not_move_the_resume_point() -> None:
    merge = CatchUp(last_id=10)
    merge.begin()
    merge.offer(msg(30))
    assert [m.id for m in merge.finish(complete=False)] == [30]
    assert merge.offer(msg(31)) == [msg(31)]
    assert merge.resume_after == 10  # 11..29 may be missing: the next catch-up starts at 10
    merge.begin()
    for i in (12, 30, 31):  # the catch-up from 10: what was missing, then repeats
        merge.offer(msg(i))
    assert [m.id for m in merge.synced(31, more=False)[0]] == [12]
    assert merge.resume_after == 31


def test_the_window_of_remembered_ids_is_bounded() -> None:
    merge = CatchUp(window=3)
    for i in (1, 2, 3, 4, 5):
        merge.offer(msg(i))
    assert merge.offer(msg(1)) == [] and merge.offer(msg(2)) == []  # forgotten, but below the floor
    assert merge.offer(msg(5)) == []


# --- the outbox ---


def outgoing(client_id: str = "m1") -> Outgoing:
    return Outgoing(client_id, {"type": "message", "id": client_id, "to": "bob", "body": "hi"}, created=0.0)


def ack(client_id: str = "m1", status: str = "sent", duplicate: bool = False) -> Ack:
    return Ack(client_id, 7 if status == "sent" else None, status, duplicate, NOW)


def test_outbox_publishes_then_resends_until_acked() -> None:
    async def scenario() -> None:
        box = Outbox(ack_timeout=10.0)
        out = box.add(outgoing())
        assert box.due(0.0) == [out]
        box.published(out, 0.0)
        assert box.due(5.0) == [] and box.next_wakeup() == 10.0
        assert box.due(10.0) == [out]  # no answer: the same id again
        box.published(out, 10.0)
        assert box.next_wakeup() == 30.0  # doubling
        box.reconnected(11.0)
        assert box.due(11.0) == [out]  # a new connection resends at once
        assert box.on_ack(ack()) is out
        assert out.state is SendState.SENT and len(box) == 0
        assert (await out).id == 7

    asyncio.run(scenario())


def test_outbox_retries_rate_limited_after_retry_after_without_telling_the_application() -> None:
    box = Outbox()
    out = box.add(outgoing())
    box.published(out, 0.0)
    error = CommandError("m1", "rate_limited", "too many messages; retry in 0.5s", retry_after=0.5)
    assert box.on_error(error, 1.0) == (out, True)
    assert box.due(1.4) == [] and box.due(1.6) == [out]
    assert out.state is SendState.PENDING


def test_outbox_fails_a_refused_message() -> None:
    async def scenario() -> None:
        box = Outbox()
        out = box.add(outgoing())
        assert box.on_error(CommandError("m1", "unknown_recipient", "no user 'bob'"), 0.0) == (out, False)
        with pytest.raises(SendError) as failed:
            await out.wait()
        assert failed.value.code == "unknown_recipient" and out.state is SendState.FAILED and len(box) == 0

    asyncio.run(scenario())


def test_outbox_declined_tip_carries_the_billing_link() -> None:
    box = Outbox()
    out = box.add(outgoing())
    box.on_tip_failed(TipFailed("m1", "https://example.com/billing", "insufficient_funds"))
    assert out.error is not None and out.error.billing_url == "https://example.com/billing"


def test_outbox_accepted_messages_wait_for_the_final_ack_without_resending() -> None:
    async def scenario() -> None:
        box = Outbox()
        out = box.add(outgoing())
        box.published(out, 0.0)
        box.on_ack(ack(status="queued"))
        assert out.state is SendState.ACCEPTED and box.due(1000.0) == []
        assert (await out.accepted()).status == "queued"
        box.reconnected(2000.0)  # ask for its state after a reconnect, once
        assert box.due(2000.0) == [out]
        box.published(out, 2000.0)
        assert box.due(9000.0) == []
        box.on_ack(ack(status="sent"))
        assert (await out).status == "sent"

    asyncio.run(scenario())


def test_outbox_times_out_then_a_late_ack_or_a_resend_still_settles() -> None:
    async def scenario() -> None:
        box = Outbox(send_timeout=60.0)
        out = box.add(outgoing())
        box.published(out, 0.0)
        assert box.expire(59.0) == [] and box.expire(60.0) == [out]
        with pytest.raises(SendError, match="timeout"):
            await out
        assert box.due(100.0) == []  # failed: not resent by itself
        box.resend(out, 100.0)
        assert out.state is SendState.PENDING and box.due(100.0) == [out]
        box.on_ack(ack(duplicate=True))
        assert (await out).duplicate

    asyncio.run(scenario())


def to(recipient: str, client_id: str, created: float = 0.0) -> Outgoing:
    command = {"type": "message", "id": client_id, "to": recipient, "body": client_id}
    return Outgoing(client_id, command, created)


def publish_due(box: Outbox, now: float) -> list[str]:
    """What the client would publish now (and does, in the outbox's books)."""
    due = box.due(now)
    for out in due:
        box.published(out, now)
    return [out.client_id for out in due]


def test_outbox_keeps_a_conversation_in_order() -> None:
    """One message in flight per conversation: the next goes once the server answered the one
    before, whatever waits keeps its place, and other conversations are not held up."""
    box = Outbox(ack_timeout=1.0, backoff=Backoff(base=1.0, cap=30.0, rng=random.Random(3)))
    b1, b2 = box.add(to("bob", "b1")), box.add(to("bob", "b2"))
    box.add(to("carol", "c1"))  # another conversation
    box.add(to("bob", "b3"))
    assert publish_due(box, 0.0) == ["b1", "c1"]
    assert box.due(0.0) == [] and box.next_wakeup() == 1.0  # b2 and b3 wait for b1's answer
    box.on_ack(ack("c1"))
    # rate limited: b1 keeps its place, nothing overtakes it
    assert box.on_error(CommandError("b1", "rate_limited", "slow down", retry_after=1.0), 0.5) == (b1, True)
    assert box.due(1.5) == []
    assert publish_due(box, 2.0) == ["b1"]
    # so does a transient error, resent after a backoff
    assert box.on_error(CommandError("b1", "service_unavailable", "later"), 2.5) == (b1, True)
    assert b1.next_attempt is not None and box.due(b1.next_attempt - 0.01) == []
    assert publish_due(box, b1.next_attempt) == ["b1"]
    box.on_ack(ack("b1"))  # stored: the next one goes
    assert publish_due(box, 10.0) == ["b2"]
    # a final error lets the next one go; the failed one, sent again, goes after it
    assert box.on_error(CommandError("b2", "payload_too_large", "too big"), 10.5) == (b2, False)
    assert b2.state is SendState.FAILED and publish_due(box, 10.5) == ["b3"]
    box.resend(b2, 11.0)
    assert box.due(11.0) == []
    box.on_ack(ack("b3"))
    assert publish_due(box, 11.5) == ["b2"]
    # an unanswered message keeps its place through its resends
    box.add(to("bob", "b4", created=12.0))
    assert box.due(12.0) == [] and box.next_wakeup() == 13.5
    assert publish_due(box, 13.5) == ["b2"]  # no answer: the same id again
    assert box.due(13.5) == []
    box.on_ack(ack("b2"))
    assert publish_due(box, 14.0) == ["b4"]


def test_outbox_order_across_acceptance_timeouts_and_reconnects() -> None:
    box = Outbox(ack_timeout=10.0, send_timeout=60.0)
    lists = [
        box.add(Outgoing(f"l{n}", {"type": "message", "id": f"l{n}", "list": "vip", "body": "post"}, 0.0))
        for n in (1, 2)
    ]
    b1 = box.add(to("bob", "b1"))
    box.add(to("bob", "b2", created=30.0))
    assert publish_due(box, 0.0) == ["l1", "b1"]
    # accepted (queued for fan-out) is an answer: the next one goes, and the first holds up nothing
    box.on_ack(ack("l1", status="queued"))
    assert publish_due(box, 0.0) == ["l2"]
    box.on_ack(ack("l2", status="queued"))
    # b1 times out unanswered: failed, which lets b2 go
    assert box.expire(60.0) == [b1]
    assert publish_due(box, 60.0) == ["b2"]
    # offline, then back: the accepted one is asked about again, only the head of each
    # conversation goes
    box.resend(b1, 61.0)
    box.add(to("bob", "b3", created=62.0))
    box.reconnected(63.0)
    assert publish_due(box, 63.0) == ["l1", "l2", "b2"]
    box.on_ack(ack("b2"))
    assert publish_due(box, 63.0) == ["b1"]  # in the place it was sent in
    assert box.due(63.0) == [] and lists[0].state is SendState.ACCEPTED


# --- tokens ---


def test_token_expiry_is_read_from_a_jwt_and_garbage_has_none() -> None:
    issued = token("alice", ttl=timedelta(minutes=5))
    expiry = token_expiry(issued)
    assert expiry is not None and abs(expiry - (datetime.now(UTC) + timedelta(minutes=5)).timestamp()) < 5
    assert token_expiry("not a jwt") is None
    assert token_expiry("a.!!!.c") is None
    assert token_expiry("a.eyJzdWIiOiJhIn0.c") is None  # {"sub":"a"}: no exp


def test_token_source_refreshes_ahead_of_expiry() -> None:
    async def scenario() -> None:
        now = [1_000.0]
        calls: list[int] = []

        async def get_token() -> str:
            calls.append(1)
            return token("alice", ttl=timedelta(hours=1), now=datetime.fromtimestamp(now[0], UTC))

        source = TokenSource(get_token, refresh_margin=60.0, clock=lambda: now[0])
        first = await source.current()
        assert source.refresh_at == pytest.approx(1_000.0 + 3600 - 60)
        now[0] += 3000
        assert await source.current() == first and len(calls) == 1
        now[0] += 600  # past the refresh point
        second = await source.current()
        assert len(calls) == 2 and second != first
        assert await source.refresh(rejected=first) == second and len(calls) == 2  # already replaced
        await source.refresh(rejected=second)
        assert len(calls) == 3

    asyncio.run(scenario())


def test_a_short_token_is_refreshed_at_half_its_life() -> None:
    async def scenario() -> None:
        async def get_token() -> str:
            return token("alice", ttl=timedelta(seconds=10), now=datetime.fromtimestamp(500.0, UTC))

        source = TokenSource(get_token, refresh_margin=60.0, clock=lambda: 500.0)
        await source.current()
        assert source.refresh_at == pytest.approx(505.0)

    asyncio.run(scenario())


# --- parsers: what the server sends is untrusted ---

MESSAGE = {
    "type": "message",
    "id": 12346,
    "client_id": "8d1c",
    "from": "alice",
    "to": "bob",
    "body": "hi",
    "sent_at": "2026-11-23T10:00:00.000000Z",
    "read_at": None,
    "tip": {"amount": 500, "currency": "USD", "status": "succeeded"},
    "list": None,
}


def test_a_delivered_message_parses() -> None:
    got = parsing.delivered_message(json.dumps(MESSAGE).encode())
    assert (got.id, got.sender, got.to, got.sent_at) == (
        12346,
        "alice",
        "bob",
        datetime(2026, 11, 23, 10, tzinfo=UTC),
    )
    assert got.tip is not None and got.tip.amount == 500


@pytest.mark.parametrize(
    "change",
    [
        {"id": "12346"},
        {"id": True},
        {"id": 0},
        {"id": 2**63},
        {"from": "../x"},
        {"body": None},
        {"sent_at": "yesterday"},
        {"sent_at": "2026-11-23T10:00:00"},  # no time zone
        {"tip": {"amount": "500"}},
        {"type": "ack"},
    ],
)
def test_a_malformed_message_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        parsing.delivered_message(json.dumps(MESSAGE | change).encode())


@pytest.mark.parametrize(
    "payload", [b"", b"not json", b"[1]", b"[" * 100_000, b'"' + b"x" * (300 * 1024) + b'"', b'{"type": 1}']
)
def test_garbage_events_are_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parsing.event(payload)


def test_events_parse_to_their_types() -> None:
    def parsed(data: dict[str, object]) -> object:
        return parsing.event(json.dumps(data).encode())

    assert parsed({"type": "ack", "client_id": "c", "id": 3, "status": "sent", "duplicate": True}) == Ack(
        "c", 3, "sent", True
    )
    error = parsed(
        {"type": "error", "client_id": None, "code": "rate_limited", "detail": "x", "retry_after": 0.1}
    )
    assert error == CommandError(None, "rate_limited", "x", 0.1)
    future = parsed({"type": "deleted", "id": 4})
    assert type(future).__name__ == "UnknownEvent"
    with pytest.raises(ProtocolError):
        parsed({"type": "read", "by": "bob", "up_to": -1})


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b" OFFLINE ", False),
        (b"", False),
        (b'{"status": "online"}', True),
        (b"maybe", None),
    ],
)
def test_presence_payloads(payload: bytes, online: bool | None) -> None:
    state = parsing.presence("alice", "phone", payload, retained=True)
    assert (None if state is None else state.online) == online


# --- which catch-up answers are this client's (sync ids) ---


class _Broker:
    """Records what a client publishes on one link (the MQTT client under a real Link)."""

    def __init__(self) -> None:
        self.commands: list[dict[str, object]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if topic.startswith("inbound/"):
            self.commands.append(json.loads(payload))

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        return [1] * len(filters)


def test_a_catch_up_takes_only_the_answers_that_name_its_own_sync() -> None:
    from messenger_client import CaughtUp, Client
    from messenger_client.connection import Link

    async def scenario() -> None:
        async def get_token() -> str:
            return token("bob")

        client = Client("bob", get_token, presence=False, last_id=5)
        broker = _Broker()
        link = Link(broker)  # type: ignore[arg-type]
        await client.on_connected(link, reconnect=False)
        await client._publish_due(link)
        (sync,) = broker.commands
        assert sync["type"] == "sync" and sync["after"] == 5 and str(sync["id"]).startswith("sync-")

        def event(payload: dict[str, object]) -> None:
            client.on_message("users/bob/events", json.dumps(payload).encode(), False)

        # the phone's catch-up, the server's own (a device came online): not this one's
        event({"type": "synced", "last_id": 9, "more": False, "client_id": "sync-of-the-phone"})
        event({"type": "synced", "last_id": 9, "more": False, "client_id": None})
        # the phone's sync refused: nothing to do here; ours refused: asked again after the wait
        refused = {"type": "error", "code": "rate_limited", "detail": "too many catch-up requests"}
        event(refused | {"client_id": "sync-of-the-phone", "retry_after": 0.001, "limit": "sync"})
        assert client._sync_due is None
        event(refused | {"client_id": sync["id"], "retry_after": 0.001, "limit": "sync"})
        assert client._sync_due is not None
        await asyncio.sleep(0.05)
        await client._publish_due(link)
        again = broker.commands[-1]
        assert again["type"] == "sync" and again["id"] != sync["id"]
        event({"type": "synced", "last_id": 9, "more": False, "client_id": sync["id"]})  # late: not taken
        assert all(not isinstance(e, CaughtUp) for e in _queued(client))
        event({"type": "synced", "last_id": 9, "more": False, "client_id": again["id"]})
        assert len([e for e in _queued(client) if isinstance(e, CaughtUp)]) == 1  # this one ends it

    asyncio.run(scenario())


def _queued(client: object) -> list[object]:
    queue: asyncio.Queue[object] = client._events  # type: ignore[attr-defined]
    return list(queue._queue)  # type: ignore[attr-defined]
