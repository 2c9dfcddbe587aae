"""CommandProcessor: one batch of inbound MQTT messages, one transaction, against each database."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from handler.processor import CommandProcessor, Inbound
from messenger.actions import Outbound
from messenger.constants import MAX_PAYLOAD_BYTES
from messenger.db import create_db_engine, session_factory, unit_of_work
from messenger.exceptions import StoreUnavailable
from messenger.models import Message
from messenger.ratelimit import Action, Limit, MemoryRateLimiter
from messenger.repositories import blocks, messages

MakeUser = Callable[..., str]
MakeUid = Callable[[str], str]
Sessions = sessionmaker[Session]
Event = tuple[str, dict[str, Any]]


@pytest.fixture
def processor(sessions: Sessions) -> CommandProcessor:
    return CommandProcessor(sessions, sync_page_size=3)


def cmd(sender: str, obj: Any) -> Inbound:
    return Inbound(f"inbound/{sender}", json.dumps(obj).encode())


def msg(sender: str, to: str, client_id: str, body: str = "hi") -> Inbound:
    return cmd(sender, {"type": "message", "id": client_id, "to": to, "body": body})


def decoded(out: list[Outbound]) -> list[Event]:
    for item in out:
        assert isinstance(item, Outbound)
        assert isinstance(item.payload, bytes)
    return [(o.topic, json.loads(o.payload)) for o in out]


def run(processor: CommandProcessor, *batch: Inbound) -> list[Event]:
    return decoded(processor.process(list(batch)))


def to(events: list[Event], topic: str) -> list[dict[str, Any]]:
    return [payload for t, payload in events if t == topic]


def messages_of(uid: str) -> str:
    return f"users/{uid}/messages"


def events_of(uid: str) -> str:
    return f"users/{uid}/events"


def stored(sessions: Sessions, message_id: int) -> Message:
    with unit_of_work(sessions) as session:
        row = session.get(Message, message_id)
        assert row is not None
        return row


def history(sessions: Sessions, viewer: str, peer: str) -> list[Message]:
    with unit_of_work(sessions) as session:
        return messages.conversation(session, viewer, peer, newest_first=False)


def block(sessions: Sessions, blocker: str, blocked: str) -> None:
    with unit_of_work(sessions) as session:
        blocks.block(session, blocker, blocked)


# --- messages ---


def test_message_is_stored_delivered_and_acked(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    events = run(processor, msg(alice, bob, "c-1", "hello bob"))

    assert {t for t, _ in events} == {messages_of(bob), events_of(alice)}
    (delivered,) = to(events, messages_of(bob))
    (ack,) = to(events, events_of(alice))
    assert delivered["type"] == "message"
    assert (delivered["from"], delivered["to"], delivered["body"], delivered["client_id"]) == (
        alice,
        bob,
        "hello bob",
        "c-1",
    )
    assert delivered["tip"] is None and delivered["list"] is None
    assert delivered["sent_at"].endswith("Z")
    assert ack == {
        "type": "ack",
        "client_id": "c-1",
        "id": delivered["id"],
        "status": "sent",
        "duplicate": False,
        "sent_at": delivered["sent_at"],
    }

    row = stored(sessions, delivered["id"])
    assert (row.sender_id, row.recipient_id, row.client_msg_id, row.body, row.blocked) == (
        alice,
        bob,
        "c-1",
        "hello bob",
        False,
    )


def test_redelivery_is_stored_once_acked_again_and_republished(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    """At-least-once: the first attempt may have committed and then died before publishing, so a
    redelivered command publishes the stored message again (recipients dedupe by id)."""
    alice, bob = make_user("alice"), make_user("bob")
    first = run(processor, msg(alice, bob, "c-1", "once"))
    (original,) = to(first, messages_of(bob))

    again = run(processor, msg(alice, bob, "c-1", "once"))
    (ack,) = to(again, events_of(alice))
    assert ack["duplicate"] is True
    assert ack["id"] == original["id"]
    assert ack["status"] == "sent"
    assert to(again, messages_of(bob)) == [original]

    assert [m.id for m in history(sessions, alice, bob)] == [original["id"]]


def test_redelivery_inside_one_batch(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    events = run(processor, msg(alice, bob, "c-1"), msg(alice, bob, "c-1"))
    acks = to(events, events_of(alice))
    assert [a["duplicate"] for a in acks] == [False, True]
    assert acks[0]["id"] == acks[1]["id"]
    assert len(history(sessions, alice, bob)) == 1


def test_unknown_recipient(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser, make_uid: MakeUid
) -> None:
    alice, ghost = make_user("alice"), make_uid("ghost")
    events = run(processor, msg(alice, ghost, "c-9"))
    assert events == [
        (
            events_of(alice),
            {
                "type": "error",
                "client_id": "c-9",
                "code": "unknown_recipient",
                "detail": f"no user {ghost!r}",
            },
        )
    ]
    with unit_of_work(sessions) as session:
        assert messages.conversation(session, alice, ghost) == []


def test_recipient_ids_are_case_sensitive(processor: CommandProcessor, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    events = run(processor, msg(alice, bob.upper(), "c-1"))
    assert [e["code"] for e in to(events, events_of(alice))] == ["unknown_recipient"]
    assert to(events, messages_of(bob)) == []


def test_message_to_someone_who_blocked_the_sender(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    block(sessions, bob, alice)
    events = run(processor, msg(alice, bob, "c-1", "into the void"))

    # nothing at all reaches bob, and alice sees a normal ack
    assert [t for t, _ in events] == [events_of(alice)]
    (ack,) = to(events, events_of(alice))
    assert (ack["type"], ack["status"], ack["duplicate"], ack["client_id"]) == ("ack", "sent", False, "c-1")
    row = stored(sessions, ack["id"])
    assert row.blocked is True
    assert row.body == "into the void"

    # the block is one-way: bob can still write to alice
    back = run(processor, msg(bob, alice, "c-2", "hi"))
    assert len(to(back, messages_of(alice))) == 1
    # and a redelivery of the blocked message stays undelivered
    again = run(processor, msg(alice, bob, "c-1", "into the void"))
    assert [t for t, _ in again] == [events_of(alice)]
    assert to(again, events_of(alice))[0]["duplicate"] is True


def test_bad_commands_get_errors_and_the_rest_of_the_batch_goes_through(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    oversized = json.dumps(
        {"type": "message", "id": "huge", "to": bob, "body": "x" * MAX_PAYLOAD_BYTES}
    ).encode()
    batch = [
        Inbound(f"inbound/{alice}", b"\xff not utf-8"),
        Inbound(f"inbound/{alice}", b"not json"),
        Inbound(f"inbound/{alice}", oversized),
        cmd(alice, {"type": "message", "id": "bad-shape", "to": "bob/x", "body": "x"}),
        cmd(alice, {"type": "message", "id": "extra", "to": bob, "body": "x", "colour": "red"}),
        cmd(alice, {"type": "launch", "id": "rocket"}),
        cmd(alice, {"type": "message", "id": "self", "to": alice, "body": "me"}),
        cmd(alice, {"type": "message", "id": "to-list", "list": "l1", "body": "post"}),
        cmd(
            alice,
            {
                "type": "message",
                "id": "tipped",
                "to": bob,
                "body": "$",
                "tip": {"amount": 5, "currency": "USD"},
            },
        ),
        msg(alice, bob, "good", "still delivered"),
    ]
    events = run(processor, *batch)

    alice_events = to(events, events_of(alice))
    # the order of error events is not part of the protocol: each names its command
    errors = sorted((e["code"], e["client_id"] or "") for e in alice_events if e["type"] == "error")
    assert errors == sorted(
        [
            ("invalid_json", ""),
            ("invalid_json", ""),
            ("payload_too_large", "huge"),
            ("invalid_payload", "bad-shape"),
            ("invalid_payload", "extra"),
            ("unknown_type", "rocket"),
            ("invalid_recipient", "self"),
            ("not_a_creator", "to-list"),
            ("invalid_tip", "tipped"),
        ]
    )
    assert all(e["detail"] for e in alice_events if e["type"] == "error")
    acks = [e for e in alice_events if e["type"] == "ack"]
    assert [a["client_id"] for a in acks] == ["good"]
    (delivered,) = to(events, messages_of(bob))
    assert delivered["body"] == "still delivered"
    assert [m.client_msg_id for m in history(sessions, alice, bob)] == ["good"]
    with unit_of_work(sessions) as session:
        assert messages.conversation(session, alice, alice) == []


def test_an_oversized_command_is_refused_with_its_client_id_when_it_can_be_read(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    """payload_too_large names the command by its ``id`` when that is a valid client id in the
    first bytes of the payload; else ``client_id`` is null. Nothing is stored either way."""
    alice, bob = make_user("alice"), make_user("bob")
    body = "x" * MAX_PAYLOAD_BYTES

    def oversized(**fields: Any) -> Inbound:
        return cmd(alice, {"type": "message", **fields})

    batch = [
        oversized(id="c-123", to=bob, body=body),
        oversized(to=bob, body=body),  # no id
        oversized(to=bob, body=body, id="c-after-the-body"),  # the id is past the bytes read
        oversized(id="not a client id", to=bob, body=body),
        oversized(id="é-123", to=bob, body=body),
        msg(alice, bob, "small", "fits"),
    ]
    events = run(processor, *batch)
    alice_events = to(events, events_of(alice))
    errors = sorted((e["code"], e["client_id"] or "") for e in alice_events if e["type"] == "error")
    assert errors == [("payload_too_large", "")] * 4 + [("payload_too_large", "c-123")]
    assert [e["client_id"] for e in alice_events if e["type"] == "ack"] == ["small"]
    assert [m.client_msg_id for m in history(sessions, alice, bob)] == ["small"]


def test_an_unprovisioned_sender_is_refused_alone(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser, make_uid: MakeUid
) -> None:
    """A sender missing from the users table gets unknown_sender; the rest of the batch is stored."""
    alice, bob, unprovisioned = make_user("alice"), make_user("bob"), make_uid("unprov")
    events = run(processor, msg(unprovisioned, bob, "u-1"), msg(alice, bob, "a-1"))
    assert to(events, events_of(unprovisioned)) == [
        {
            "type": "error",
            "client_id": "u-1",
            "code": "unknown_sender",
            "detail": "your user is not provisioned",
        },
    ]
    assert [a["client_id"] for a in to(events, events_of(alice))] == ["a-1"]
    assert [m["from"] for m in to(events, messages_of(bob))] == [alice]
    assert [m.client_msg_id for m in history(sessions, bob, alice)] == ["a-1"]
    assert history(sessions, bob, unprovisioned) == []


def test_non_command_topics_are_ignored(processor: CommandProcessor, make_user: MakeUser) -> None:
    alice = make_user("alice")
    assert (
        run(
            processor,
            Inbound("inbound/+", b'{"type": "sync"}'),
            Inbound(f"inbound/{alice}/extra", b'{"type": "sync"}'),
            Inbound(f"users/{alice}/messages", b'{"type": "sync"}'),
            Inbound("presence/x", b"online"),
        )
        == []
    )


# --- read ---


def test_read_sends_read_events_to_each_sender(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, carol, bob = make_user("alice"), make_user("carol"), make_user("bob")
    sent = run(
        processor, msg(alice, bob, "a1"), msg(carol, bob, "c1"), msg(alice, bob, "a2"), msg(carol, bob, "c2")
    )
    a1, c1, a2, c2 = (m["id"] for m in to(sent, messages_of(bob)))

    events = run(processor, cmd(bob, {"type": "read", "up_to": a2}))
    assert sorted(events, key=lambda e: e[0]) == sorted(
        [
            (events_of(alice), {"type": "read", "by": bob, "up_to": a2}),
            (events_of(carol), {"type": "read", "by": bob, "up_to": c1}),
        ],
        key=lambda e: e[0],
    )
    assert stored(sessions, a1).read_at is not None
    assert stored(sessions, c2).read_at is None

    # reading again changes nothing, so nobody is told
    assert run(processor, cmd(bob, {"type": "read", "up_to": a2})) == []
    # `with` limits the read to one conversation
    assert run(processor, cmd(bob, {"type": "read", "up_to": c2, "with": alice})) == []
    assert run(processor, cmd(bob, {"type": "read", "up_to": c2, "with": carol})) == [
        (events_of(carol), {"type": "read", "by": bob, "up_to": c2}),
    ]


def test_read_of_blocked_messages_tells_nobody(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    block(sessions, bob, alice)
    (ack,) = to(run(processor, msg(alice, bob, "a1")), events_of(alice))
    assert run(processor, cmd(bob, {"type": "read", "up_to": ack["id"]})) == []
    assert stored(sessions, ack["id"]).read_at is None


# --- sync and presence catch-up ---------------------------------------------------------------------------


@pytest.fixture
def inbox(processor: CommandProcessor, make_user: MakeUser) -> tuple[str, str, list[int]]:
    """bob with seven unread messages from alice (the page size is 3); their ids."""
    alice, bob = make_user("alice"), make_user("bob")
    events = run(processor, *(msg(alice, bob, f"m{i}", f"body {i}") for i in range(7)))
    ids = [m["id"] for m in to(events, messages_of(bob))]
    assert len(ids) == 7
    return alice, bob, ids


def _page(events: list[Event], uid: str) -> tuple[list[int], dict[str, Any]]:
    assert {t for t, _ in events} <= {messages_of(uid), events_of(uid)}
    assert events[-1][0] == events_of(uid)  # synced comes last
    (synced,) = to(events, events_of(uid))
    assert synced["type"] == "synced"
    return [m["id"] for m in to(events, messages_of(uid))], synced


def test_sync_without_after_pushes_unread_in_pages(
    processor: CommandProcessor, inbox: tuple[str, str, list[int]]
) -> None:
    _alice, bob, ids = inbox
    page, synced = _page(run(processor, cmd(bob, {"type": "sync"})), bob)
    assert page == ids[:3]
    assert synced == {"type": "synced", "last_id": ids[2], "more": True, "client_id": None}

    run(processor, cmd(bob, {"type": "read", "up_to": ids[4]}))
    page, synced = _page(run(processor, cmd(bob, {"type": "sync"})), bob)
    assert page == ids[5:]
    assert synced == {"type": "synced", "last_id": ids[6], "more": False, "client_id": None}


def test_sync_after_walks_every_page_in_id_order(
    processor: CommandProcessor, inbox: tuple[str, str, list[int]]
) -> None:
    _alice, bob, ids = inbox
    seen: list[int] = []
    after = ids[0] - 1
    mores: list[bool] = []
    while True:
        page, synced = _page(run(processor, cmd(bob, {"type": "sync", "after": after})), bob)
        seen.extend(page)
        mores.append(synced["more"])
        assert synced["last_id"] == page[-1]
        after = synced["last_id"]
        if not synced["more"]:
            break
    assert seen == ids
    assert mores == [True, True, False]
    # nothing after the last one: synced echoes `after`
    assert _page(run(processor, cmd(bob, {"type": "sync", "after": ids[-1]})), bob) == (
        [],
        {"type": "synced", "last_id": ids[-1], "more": False, "client_id": None},
    )


def test_sync_with_nothing_unread(processor: CommandProcessor, make_user: MakeUser) -> None:
    lonely = make_user("lonely")
    assert run(processor, cmd(lonely, {"type": "sync"})) == [
        (events_of(lonely), {"type": "synced", "last_id": None, "more": False, "client_id": None}),
    ]


def test_sync_after_exact_page_boundary_says_no_more(
    processor: CommandProcessor, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    ids = [
        m["id"] for m in to(run(processor, *(msg(alice, bob, f"m{i}") for i in range(3))), messages_of(bob))
    ]
    page, synced = _page(run(processor, cmd(bob, {"type": "sync", "after": 0})), bob)
    assert page == ids
    assert synced["more"] is False


def test_sync_never_pushes_blocked_messages(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, carol, bob = make_user("alice"), make_user("carol"), make_user("bob")
    block(sessions, bob, alice)
    run(processor, msg(alice, bob, "blocked"))
    (ok,) = to(run(processor, msg(carol, bob, "ok")), messages_of(bob))
    page, _ = _page(run(processor, cmd(bob, {"type": "sync", "after": 0})), bob)
    assert page == [ok["id"]]


@pytest.mark.parametrize("payload", [b"online", b'{"status": "online"}', b"ONLINE\n"])
def test_device_coming_online_gets_a_catch_up(
    processor: CommandProcessor, inbox: tuple[str, str, list[int]], payload: bytes
) -> None:
    _alice, bob, ids = inbox
    page, synced = _page(run(processor, Inbound(f"presence/{bob}/phone-1", payload)), bob)
    assert page == ids[:3]
    assert synced == {"type": "synced", "last_id": ids[2], "more": True, "client_id": None}


@pytest.mark.parametrize(
    ("topic", "payload", "retained"),
    [
        ("presence/{bob}/phone", b"online", True),  # a replay of retained state, not a change
        ("presence/{bob}/phone", b"offline", False),
        ("presence/{bob}/phone", b"", False),
        ("presence/{bob}/phone", b"garbage", False),
        ("presence/{bob}", b"online", False),
        ("presence/{bob}/phone/x", b"online", False),
        ("presence/+/phone", b"online", False),
    ],
    ids=["retained", "offline", "cleared", "garbage", "short-topic", "long-topic", "wildcard"],
)
def test_presence_without_catch_up(
    processor: CommandProcessor, inbox: tuple[str, str, list[int]], topic: str, payload: bytes, retained: bool
) -> None:
    _alice, bob, _ids = inbox
    assert run(processor, Inbound(topic.format(bob=bob), payload, retained=retained)) == []


# --- typing ---


def test_typing(processor: CommandProcessor, sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    assert run(processor, cmd(alice, {"type": "typing", "to": bob})) == [
        (events_of(bob), {"type": "typing", "from": alice}),
    ]
    block(sessions, bob, alice)
    events = run(
        processor,
        cmd(alice, {"type": "typing", "to": bob}),
        cmd(carol, {"type": "typing", "to": bob}),
        cmd(bob, {"type": "typing", "to": alice}),
    )
    # bob blocked alice: her typing is dropped; carol's and bob's own go through
    assert events == [
        (events_of(bob), {"type": "typing", "from": carol}),
        (events_of(alice), {"type": "typing", "from": bob}),
    ]


# --- a large mixed batch ---


def test_batch_of_500_mixed_commands_keeps_per_sender_order(
    processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    people = [make_user(f"p{i}") for i in range(6)]
    block(sessions, people[1], people[0])
    rng = random.Random(500)
    batch: list[Inbound] = []
    sent_by: dict[str, list[str]] = defaultdict(list)
    for n in range(500):
        sender = rng.choice(people)
        roll = rng.random()
        if roll < 0.7:
            recipient = rng.choice([p for p in people if p != sender])
            client_id = f"{sender}-{n}"
            batch.append(msg(sender, recipient, client_id, f"#{n}"))
            sent_by[sender].append(client_id)
        elif roll < 0.8:
            batch.append(cmd(sender, {"type": "typing", "to": rng.choice(people)}))
        elif roll < 0.9:
            batch.append(cmd(sender, {"type": "read", "up_to": 1}))
        elif roll < 0.95:
            batch.append(cmd(sender, {"type": "sync", "after": 0}))
        else:
            batch.append(Inbound(f"inbound/{sender}", b"{broken"))
    assert len(batch) == 500

    events = run(processor, *batch)

    ids_by_client_id: dict[str, int] = {}
    for sender in people:
        acks = [e for e in to(events, events_of(sender)) if e["type"] == "ack"]
        assert [a["client_id"] for a in acks] == sent_by[sender]
        ids = [a["id"] for a in acks]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
        assert all(a["duplicate"] is False for a in acks)
        ids_by_client_id.update({a["client_id"]: a["id"] for a in acks})
        errors = [e for e in to(events, events_of(sender)) if e["type"] == "error"]
        assert {e["code"] for e in errors} <= {"invalid_json"}

    # ids increase in input order across the whole batch
    all_ids = [
        ids_by_client_id[f"{json.loads(i.payload)['id']}"]
        for i in batch
        if i.payload.startswith(b'{"type": "message"')
    ]
    assert all_ids == sorted(all_ids)
    assert len(all_ids) == sum(len(v) for v in sent_by.values())

    # live deliveries come first (catch-up pages of the syncs follow), in id order, and never
    # for the blocked pair
    deliveries = [(t, m) for t, m in events if t.endswith("/messages")]
    blocked_count = sum(
        1
        for i in batch
        if i.topic == f"inbound/{people[0]}"
        and i.payload.startswith(b'{"type": "message"')
        and json.loads(i.payload)["to"] == people[1]
    )
    live = deliveries[: len(all_ids) - blocked_count]
    assert [m["id"] for _, m in live] == sorted(m["id"] for _, m in live)
    assert all(t == messages_of(m["to"]) for t, m in live)
    assert not any(m["from"] == people[0] and m["to"] == people[1] for _, m in deliveries)
    assert blocked_count > 0
    with unit_of_work(sessions) as session:
        total = sum(
            len(messages.conversation(session, a, b, limit=1000))
            for i, a in enumerate(people)
            for b in people[i + 1 :]
        )
    assert total == len(all_ids)


# --- the database is down ---


@pytest.fixture
def dead_sessions() -> Iterator[Sessions]:
    engine = create_db_engine("mysql+pymysql://root@127.0.0.1:1/test", connect_args={"connect_timeout": 5})
    yield session_factory(engine)
    engine.dispose()


def test_database_outage_raises_and_nothing_is_lost(
    dead_sessions: Sessions, processor: CommandProcessor, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    batch = [
        msg(alice, bob, "c-1", "survives"),
        Inbound(f"inbound/{alice}", b"not json"),
        cmd(bob, {"type": "sync"}),
    ]
    down = CommandProcessor(dead_sessions)
    with pytest.raises(StoreUnavailable) as info:
        down.process(batch)
    assert info.value.code == "unavailable"
    # no partial answer came back, so the consumer acks nothing; the broker redelivers and the
    # retry (here against the database that is up) stores the message exactly once
    assert history(sessions, alice, bob) == []
    events = run(processor, *batch)
    (ack,) = [e for e in to(events, events_of(alice)) if e["type"] == "ack"]
    assert ack["duplicate"] is False
    assert [m.body for m in history(sessions, alice, bob)] == ["survives"]


def test_sends_over_the_rate_limit_get_rate_limited_errors(sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    limited = CommandProcessor(sessions, limiter=MemoryRateLimiter({Action.SEND: Limit(rate=0.01, burst=2)}))
    events = run(limited, *(msg(alice, bob, f"a-{n}") for n in range(4)), msg(carol, bob, "c-0"))

    alice_events = to(events, events_of(alice))
    assert [e["client_id"] for e in alice_events if e["type"] == "ack"] == ["a-0", "a-1"]
    refused = [e for e in alice_events if e["type"] == "error"]
    assert [(e["code"], e["client_id"]) for e in refused] == [
        ("rate_limited", "a-2"),
        ("rate_limited", "a-3"),
    ]
    assert all(e["retry_after"] > 0 for e in refused)
    assert [m["client_id"] for m in to(events, messages_of(bob))] == ["a-0", "a-1", "c-0"]
    assert [m.client_msg_id for m in history(sessions, bob, alice)] == ["a-0", "a-1"]


def test_a_retried_batch_takes_its_rate_limit_tokens_once(
    dead_sessions: Sessions, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    limiter = MemoryRateLimiter({Action.SEND: Limit(rate=0.01, burst=2)})
    down = CommandProcessor(dead_sessions, limiter=limiter)
    work = down.prepare([msg(alice, bob, "a-0"), msg(alice, bob, "a-1")])
    for _ in range(3):  # the consumer retries the same Work while the database is down
        with pytest.raises(StoreUnavailable):
            down.commit(work)
    up = CommandProcessor(sessions, limiter=limiter)
    events = decoded(up.commit(work))
    assert [e["client_id"] for e in to(events, events_of(alice)) if e["type"] == "ack"] == ["a-0", "a-1"]
