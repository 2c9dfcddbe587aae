"""Repositories against each real database backend (the ``engine`` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import unit_of_work
from messenger.models import Message
from messenger.repositories import blocks, messages, users
from messenger.repositories.messages import NewMessage

MakeUser = Callable[..., str]
MakeUid = Callable[[str], str]
Sessions = sessionmaker[Session]


def send(sessions: Sessions, *new: NewMessage) -> list[tuple[Message, bool]]:
    with unit_of_work(sessions) as session:
        return messages.store_many(session, list(new))


def block(sessions: Sessions, blocker: str, blocked: str) -> None:
    with unit_of_work(sessions) as session:
        blocks.block(session, blocker, blocked)


# --- users ---


def test_ensure_creates_then_keeps_the_first_role(sessions: Sessions, make_uid: MakeUid) -> None:
    uid = make_uid("ensure")
    with unit_of_work(sessions) as session:
        created = users.ensure(session, uid, "creator", "Ensure Me")
        assert (created.id, created.role, created.display_name) == (uid, "creator", "Ensure Me")
    with unit_of_work(sessions) as session:
        again = users.ensure(session, uid, "member", "Other Name")
        assert (again.role, again.display_name) == ("creator", "Ensure Me")
    with unit_of_work(sessions) as session:
        stored = users.get(session, uid)
        assert stored is not None
        assert (stored.role, stored.display_name) == ("creator", "Ensure Me")
        assert stored.created_at.tzinfo is not None


def test_ensure_twice_in_one_transaction_is_one_row(sessions: Sessions, make_uid: MakeUid) -> None:
    uid = make_uid("twice")
    with unit_of_work(sessions) as session:
        first = users.ensure(session, uid, "member")
        second = users.ensure(session, uid, "creator")
        assert first is second
    with unit_of_work(sessions) as session:
        assert users.existing_ids(session, [uid]) == {uid}


def test_ensure_is_rolled_back_with_its_unit_of_work(sessions: Sessions, make_uid: MakeUid) -> None:
    uid = make_uid("rollback")
    with pytest.raises(RuntimeError), unit_of_work(sessions) as session:
        users.ensure(session, uid, "member")
        raise RuntimeError("abort")
    with unit_of_work(sessions) as session:
        assert users.get(session, uid) is None


def test_upsert_creates_and_updates_role_and_name(sessions: Sessions, make_uid: MakeUid) -> None:
    uid = make_uid("upsert")
    with unit_of_work(sessions) as session:
        user = users.upsert(session, uid, "member", "First")
        assert (user.role, user.display_name) == ("member", "First")
    with unit_of_work(sessions) as session:
        users.upsert(session, uid, "creator")
    with unit_of_work(sessions) as session:
        user = users.get(session, uid)
        assert user is not None
        # no display name given: the old one stays
        assert (user.role, user.display_name) == ("creator", "First")
    with unit_of_work(sessions) as session:
        users.upsert(session, uid, "service", "Renamed")
    with unit_of_work(sessions) as session:
        user = users.get(session, uid)
        assert user is not None
        assert (user.role, user.display_name) == ("service", "Renamed")


def test_existing_ids(sessions: Sessions, make_user: MakeUser, make_uid: MakeUid) -> None:
    a, b = make_user("ex-a"), make_user("ex-b")
    ghost = make_uid("ghost")
    with unit_of_work(sessions) as session:
        assert users.existing_ids(session, [a, b, ghost]) == {a, b}
        assert users.existing_ids(session, iter([ghost])) == set()
        assert users.existing_ids(session, []) == set()
        assert users.existing_ids(session, [a, a]) == {a}


def test_user_ids_are_case_sensitive(sessions: Sessions, make_user: MakeUser) -> None:
    """``Alice`` and ``alice`` are two users (SPEC section 3), on every backend."""
    lower = make_user("case")
    upper = lower.upper()
    with unit_of_work(sessions) as session:
        assert users.existing_ids(session, [upper]) == set()
        assert users.get(session, upper) is None
        created = users.ensure(session, upper, "creator")
        assert created.id == upper
    with unit_of_work(sessions) as session:
        assert users.existing_ids(session, [lower, upper]) == {lower, upper}
        lower_row = users.get(session, lower)
        assert lower_row is not None
        assert lower_row.role == "member"


# --- blocks ---


def test_block_is_idempotent_and_keeps_the_first_row(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("blk-a"), make_user("blk-b")
    with unit_of_work(sessions) as session:
        first = blocks.block(session, a, b)
        first_at = first.created_at
    with unit_of_work(sessions) as session:
        again = blocks.block(session, a, b)
        assert again.created_at == first_at
        assert blocks.list_for(session, a) == [again]
    with unit_of_work(sessions) as session:
        row = blocks.get(session, a, b)
        assert row is not None
        assert (row.blocker_id, row.blocked_id, row.created_at) == (a, b, first_at)
        # a block is one-way
        assert blocks.get(session, b, a) is None


def test_block_twice_in_one_transaction(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("blk2-a"), make_user("blk2-b")
    with unit_of_work(sessions) as session:
        assert blocks.block(session, a, b) is blocks.block(session, a, b)
    with unit_of_work(sessions) as session:
        assert [r.blocked_id for r in blocks.list_for(session, a)] == [b]


def test_unblock(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("unb-a"), make_user("unb-b")
    block(sessions, a, b)
    with unit_of_work(sessions) as session:
        assert blocks.unblock(session, a, b) is True
    with unit_of_work(sessions) as session:
        assert blocks.get(session, a, b) is None
        assert blocks.unblock(session, a, b) is False
        assert blocks.unblock(session, b, a) is False


def test_list_for_keyset(sessions: Sessions, make_user: MakeUser) -> None:
    blocker = make_user("lst")
    others = sorted(make_user(f"lst{i}") for i in range(5))
    bystander = make_user("lst-by")
    for other in reversed(others):
        block(sessions, blocker, other)
    block(sessions, bystander, others[0])
    with unit_of_work(sessions) as session:
        everyone = blocks.list_for(session, blocker)
        assert [r.blocked_id for r in everyone] == others
        assert {r.blocker_id for r in everyone} == {blocker}

        pages: list[list[str]] = []
        after: str | None = None
        while True:
            page = blocks.list_for(session, blocker, after=after, limit=2)
            if not page:
                break
            pages.append([r.blocked_id for r in page])
            after = page[-1].blocked_id
        assert pages == [others[0:2], others[2:4], others[4:5]]
        assert blocks.list_for(session, blocker, after=others[-1]) == []
        assert blocks.list_for(session, make_user("lst-none")) == []


def test_blocked_pairs(sessions: Sessions, make_user: MakeUser) -> None:
    a, b, c = make_user("bp-a"), make_user("bp-b"), make_user("bp-c")
    block(sessions, a, b)
    block(sessions, c, a)
    with unit_of_work(sessions) as session:
        asked = [(a, b), (b, a), (c, a), (a, c), (a, b)]
        assert blocks.blocked_pairs(session, asked) == {(a, b), (c, a)}
        assert blocks.blocked_pairs(session, [(b, c)]) == set()
        assert blocks.blocked_pairs(session, []) == set()


# --- messages: store_many -----------------------------------------------------------------------


def test_store_many_ids_increase_in_input_order(sessions: Sessions, make_user: MakeUser) -> None:
    a, b, c = make_user("st-a"), make_user("st-b"), make_user("st-c")
    batch = [
        NewMessage(a, b, "m1", "one"),
        NewMessage(c, a, "m1", "two"),
        NewMessage(a, c, "m2", "three"),
        NewMessage(b, a, "zz", "four"),
        NewMessage(a, b, "m0", "five"),
    ]
    stored = send(sessions, *batch)
    assert [created for _, created in stored] == [True] * 5
    ids = [m.id for m, _ in stored]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    for (row, _), item in zip(stored, batch, strict=True):
        assert (row.sender_id, row.recipient_id, row.client_msg_id, row.body) == (
            item.sender_id,
            item.recipient_id,
            item.client_msg_id,
            item.body,
        )
        assert row.blocked is False
        assert row.read_at is None
        assert row.sent_at.tzinfo is not None
    # a later call gets larger ids
    later = send(sessions, NewMessage(a, b, "m3", "six"))
    assert later[0][0].id > ids[-1]


def test_store_many_round_trips_every_field(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("rt-a"), make_user("rt-b")
    body = "héllo 👋 " + "x" * 70_000  # longer than a TEXT column, UTF-8 beyond the BMP
    ((row, _),) = send(sessions, NewMessage(a, b, "rt", body, blocked=True, list_id="list-1"))
    with unit_of_work(sessions) as session:
        stored = session.get(Message, row.id)
        assert stored is not None
        assert stored.body == body
        assert stored.blocked is True
        assert stored.list_id == "list-1"
        assert stored.sent_at == row.sent_at
    # a tip's fields, and the NULLs of a plain message (the rows go in as JSON: null must be NULL)
    (tipped, _), (plain, _) = send(
        sessions,
        NewMessage(a, b, "rt-tip", "thanks", tip_amount=500, tip_currency="EUR", tip_status="succeeded"),
        NewMessage(a, b, "rt-plain", "null"),
    )
    with unit_of_work(sessions) as session:
        got = {m.client_msg_id: m for m in session.scalars(select(Message).where(Message.sender_id == a))}
        assert (got["rt-tip"].tip_amount, got["rt-tip"].tip_currency, got["rt-tip"].tip_status) == (
            500,
            "EUR",
            "succeeded",
        )
        assert got["rt-tip"].id == tipped.id and got["rt-tip"].blocked is False
        assert got["rt-plain"].body == "null" and got["rt-plain"].id == plain.id
        nulls = (got["rt-plain"].list_id, got["rt-plain"].tip_amount, got["rt-plain"].tip_currency)
        assert nulls == (None, None, None)
        assert got["rt-plain"].tip_status is None and got["rt-plain"].read_at is None


def test_store_many_redelivery_returns_the_original(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("re-a"), make_user("re-b")
    ((original, created),) = send(sessions, NewMessage(a, b, "cid-1", "first"))
    assert created is True
    (again, created_again), (other, other_created) = send(
        sessions, NewMessage(a, b, "cid-1", "changed body"), NewMessage(a, b, "cid-2", "second")
    )
    assert created_again is False
    assert again.id == original.id
    assert again.body == "first"
    assert again.sent_at == original.sent_at
    assert other_created is True
    assert other.id > original.id
    with unit_of_work(sessions) as session:
        assert len(messages.conversation(session, a, b)) == 2


def test_store_many_duplicate_keys_in_one_batch_stored_once(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("dup-a"), make_user("dup-b")
    stored = send(
        sessions,
        NewMessage(a, b, "same", "first"),
        NewMessage(a, b, "other", "between"),
        NewMessage(a, b, "same", "second"),
    )
    (first, c1), (between, c2), (second, c3) = stored
    assert (c1, c2, c3) == (True, True, False)
    assert first.id == second.id
    assert second.body == "first"
    assert between.id > first.id
    with unit_of_work(sessions) as session:
        assert [m.client_msg_id for m in messages.conversation(session, a, b)] == ["other", "same"]


def test_store_many_same_client_id_to_two_recipients(sessions: Sessions, make_user: MakeUser) -> None:
    a, b, c = make_user("two-a"), make_user("two-b"), make_user("two-c")
    (to_b, created_b), (to_c, created_c) = send(
        sessions, NewMessage(a, b, "shared", "hi b"), NewMessage(a, c, "shared", "hi c")
    )
    assert created_b and created_c
    assert to_b.id != to_c.id
    assert (to_b.recipient_id, to_c.recipient_id) == (b, c)
    # and a different sender may reuse the client id too
    ((from_b, created),) = send(sessions, NewMessage(b, c, "shared", "from b"))
    assert created and from_b.id not in (to_b.id, to_c.id)


def test_store_many_client_ids_are_case_sensitive(sessions: Sessions, make_user: MakeUser) -> None:
    """Client ids are opaque (base64 ids differ only in case): ``abc`` and ``ABC`` are two messages."""
    a, b = make_user("cs-a"), make_user("cs-b")
    (lower, c1), (upper, c2) = send(
        sessions, NewMessage(a, b, "abc", "lower"), NewMessage(a, b, "ABC", "upper")
    )
    assert c1 and c2
    assert lower.id != upper.id
    ((again, c3),) = send(sessions, NewMessage(a, b, "ABC", "redelivered"))
    assert c3 is False
    assert (again.id, again.body) == (upper.id, "upper")


def test_store_many_empty(sessions: Sessions) -> None:
    assert send(sessions) == []


def test_store_many_is_rolled_back_with_its_unit_of_work(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("rb-a"), make_user("rb-b")
    with pytest.raises(RuntimeError), unit_of_work(sessions) as session:
        messages.store_many(session, [NewMessage(a, b, "gone", "never")])
        raise RuntimeError("abort")
    ((row, created),) = send(sessions, NewMessage(a, b, "gone", "now"))
    assert created is True
    assert row.body == "now"


# --- messages: conversation ---------------------------------------------------------------------


def _chat(sessions: Sessions, a: str, b: str, n: int) -> list[int]:
    """``n`` messages alternating a->b, b->a; their ids in order."""
    batch = [
        NewMessage(a, b, f"c{i}", f"a{i}") if i % 2 == 0 else NewMessage(b, a, f"c{i}", f"b{i}")
        for i in range(n)
    ]
    return [m.id for m, _ in send(sessions, *batch)]


def test_conversation_newest_first_both_directions(sessions: Sessions, make_user: MakeUser) -> None:
    a, b, c = make_user("cv-a"), make_user("cv-b"), make_user("cv-c")
    ids = _chat(sessions, a, b, 6)
    send(sessions, NewMessage(a, c, "x", "to c"), NewMessage(c, b, "y", "c to b"))
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.conversation(session, a, b)] == ids[::-1]
        assert [m.id for m in messages.conversation(session, b, a)] == ids[::-1]
        assert [m.id for m in messages.conversation(session, a, b, newest_first=False)] == ids
        assert [m.body for m in messages.conversation(session, a, c)] == ["to c"]


def test_conversation_keyset_before_after_limit(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("ks-a"), make_user("ks-b")
    ids = _chat(sessions, a, b, 9)
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.conversation(session, a, b, limit=3)] == ids[:-4:-1]
        assert [m.id for m in messages.conversation(session, a, b, before=ids[5], limit=3)] == [
            ids[4],
            ids[3],
            ids[2],
        ]
        assert [m.id for m in messages.conversation(session, a, b, after=ids[5])] == [ids[8], ids[7], ids[6]]
        assert [m.id for m in messages.conversation(session, a, b, after=ids[2], before=ids[6])] == [
            ids[5],
            ids[4],
            ids[3],
        ]
        assert [
            m.id for m in messages.conversation(session, a, b, after=ids[2], limit=2, newest_first=False)
        ] == [ids[3], ids[4]]
        assert messages.conversation(session, a, b, before=ids[0]) == []
        assert messages.conversation(session, a, b, after=ids[-1]) == []

        # walking with `before` visits every message exactly once, newest first
        seen: list[int] = []
        before: int | None = None
        while page := messages.conversation(session, b, a, before=before, limit=4):
            seen.extend(m.id for m in page)
            before = page[-1].id
        assert seen == ids[::-1]


def test_conversation_hides_blocked_from_the_viewer_only(sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("hb-alice"), make_user("hb-bob")
    ((before_block, _),) = send(sessions, NewMessage(bob, alice, "b1", "before block"))
    (blocked_msg, _), (reply, _) = send(
        sessions,
        NewMessage(bob, alice, "b2", "while blocked", blocked=True),
        NewMessage(alice, bob, "a1", "alice writes"),
    )
    with unit_of_work(sessions) as session:
        # alice (who blocked bob) never sees what bob sent while blocked
        assert [m.id for m in messages.conversation(session, alice, bob)] == [reply.id, before_block.id]
        # bob, the sender, still sees his own message: hiding it would tell him he is blocked
        assert [m.id for m in messages.conversation(session, bob, alice)] == [
            reply.id,
            blocked_msg.id,
            before_block.id,
        ]
        # the limit counts what the viewer sees
        assert [m.id for m in messages.conversation(session, alice, bob, limit=2)] == [
            reply.id,
            before_block.id,
        ]


def test_conversation_with_oneself(sessions: Sessions, make_user: MakeUser) -> None:
    a = make_user("self")
    ((row, _),) = send(sessions, NewMessage(a, a, "note", "note to self"))
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.conversation(session, a, a)] == [row.id]


# --- messages: unread and mark_read --------------------------------------------------------------


def test_unread_in_id_order_without_blocked(sessions: Sessions, make_user: MakeUser) -> None:
    me, x, y = make_user("ur-me"), make_user("ur-x"), make_user("ur-y")
    stored = send(
        sessions,
        NewMessage(x, me, "1", "x1"),
        NewMessage(y, me, "1", "y1", blocked=True),
        NewMessage(y, me, "2", "y2"),
        NewMessage(me, x, "1", "mine, not for me"),
        NewMessage(x, me, "2", "x2"),
    )
    x1, _y1, y2, _mine, x2 = (m.id for m, _ in stored)
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.unread(session, me)] == [x1, y2, x2]
        assert [m.id for m in messages.unread(session, me, limit=2)] == [x1, y2]
        assert [m.id for m in messages.unread(session, x)] == [_mine]
    with unit_of_work(sessions) as session:
        messages.mark_read(session, me, y2)
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.unread(session, me)] == [x2]
        # `after` returns read ones too (a device catching up), but never blocked ones
        assert [m.id for m in messages.unread(session, me, after=0)] == [x1, y2, x2]
        assert [m.id for m in messages.unread(session, me, after=x1)] == [y2, x2]
        assert [m.id for m in messages.unread(session, me, after=x2)] == []


def test_mark_read_returns_per_sender_max_and_is_idempotent(sessions: Sessions, make_user: MakeUser) -> None:
    me, x, y, z = make_user("mr-me"), make_user("mr-x"), make_user("mr-y"), make_user("mr-z")
    stored = send(
        sessions,
        NewMessage(x, me, "1", "x1"),
        NewMessage(y, me, "1", "y1"),
        NewMessage(x, me, "2", "x2"),
        NewMessage(z, me, "1", "z1 blocked", blocked=True),
        NewMessage(y, me, "2", "y2"),
        NewMessage(me, x, "1", "mine"),
    )
    x1, y1, x2, z1, y2, mine = (m.id for m, _ in stored)
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with unit_of_work(sessions) as session:
        assert messages.mark_read(session, me, x2, at=at) == {x: x2, y: y1}
    with unit_of_work(sessions) as session:
        # nothing new below x2
        assert messages.mark_read(session, me, x2) == {}
        assert session.get(Message, x1).read_at == at  # type: ignore[union-attr]
        assert session.get(Message, y2).read_at is None  # type: ignore[union-attr]
        # blocked messages are never marked (nor reported to their sender)
        assert session.get(Message, z1).read_at is None  # type: ignore[union-attr]
        # messages the reader sent are not theirs to mark
        assert session.get(Message, mine).read_at is None  # type: ignore[union-attr]
    with unit_of_work(sessions) as session:
        assert messages.mark_read(session, me, y2 + 1_000_000) == {y: y2}
    with unit_of_work(sessions) as session:
        assert messages.mark_read(session, me, y2 + 1_000_000) == {}
        assert messages.unread(session, me) == []


def test_mark_read_with_peer_filter(sessions: Sessions, make_user: MakeUser) -> None:
    me, x, y = make_user("pf-me"), make_user("pf-x"), make_user("pf-y")
    stored = send(
        sessions, NewMessage(x, me, "1", "x1"), NewMessage(y, me, "1", "y1"), NewMessage(x, me, "2", "x2")
    )
    x1, y1, x2 = (m.id for m, _ in stored)
    with unit_of_work(sessions) as session:
        assert messages.mark_read(session, me, x2, peer=y) == {y: y1}
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.unread(session, me)] == [x1, x2]
        assert messages.mark_read(session, me, x1, peer=x) == {x: x1}
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.unread(session, me)] == [x2]
        assert messages.mark_read(session, me, x2, peer=make_user("pf-nobody")) == {}


def test_mark_read_zero_marks_nothing(sessions: Sessions, make_user: MakeUser) -> None:
    me, x = make_user("zero-me"), make_user("zero-x")
    send(sessions, NewMessage(x, me, "1", "x1"))
    with unit_of_work(sessions) as session:
        assert messages.mark_read(session, me, 0) == {}
        assert len(messages.unread(session, me)) == 1


def test_by_keys(sessions: Sessions, make_user: MakeUser) -> None:
    a, b = make_user("bk-a"), make_user("bk-b")
    ((row, _),) = send(sessions, NewMessage(a, b, "k", "body"))
    with unit_of_work(sessions) as session:
        found = messages.by_keys(session, [(a, "k", b), (a, "missing", b), (b, "k", a)])
        assert list(found) == [(a, "k", b)]
        assert found[(a, "k", b)].id == row.id
        assert messages.by_keys(session, []) == {}


def test_unread_excludes_messages_read_through_another_path(sessions: Sessions, make_user: MakeUser) -> None:
    me, x = make_user("ext-me"), make_user("ext-x")
    (m1, _), (m2, _) = send(sessions, NewMessage(x, me, "1", "one"), NewMessage(x, me, "2", "two"))
    with unit_of_work(sessions) as session:
        session.execute(update(Message).where(Message.id == m1.id).values(read_at=datetime.now(UTC)))
    with unit_of_work(sessions) as session:
        assert [m.id for m in messages.unread(session, me)] == [m2.id]


def test_block_of_an_unknown_user_fails_and_leaves_the_transaction_usable(
    sessions: Sessions, make_user: MakeUser, make_uid: MakeUid
) -> None:
    a, b = make_user("fk-a"), make_user("fk-b")
    with unit_of_work(sessions) as session:
        with pytest.raises(IntegrityError):
            blocks.block(session, a, make_uid("fk-ghost"))
        # the failed savepoint is rolled back alone; the unit of work goes on
        blocks.block(session, a, b)
    with unit_of_work(sessions) as session:
        assert [r.blocked_id for r in blocks.list_for(session, a)] == [b]
