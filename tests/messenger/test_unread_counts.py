"""Conversation unread counters against the messages they count, through every path that moves
them: 1:1 sends (blocked or not), fan-out copies and read marks (up to an id, by ids, from one peer)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy import false, func, select
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import unit_of_work
from messenger.models import Conversation, Message
from messenger.repositories import blocks, conversations, messages
from messenger.repositories.messages import NewMessage

Sessions = sessionmaker[Session]


def counted(session: Session, owner: str) -> dict[str, int]:
    """Unread per peer, counted from the messages."""
    rows = session.execute(
        select(Message.sender_id, func.count())
        .where(Message.recipient_id == owner, Message.read_at.is_(None), Message.blocked == false())
        .group_by(Message.sender_id)
    )
    return {peer: int(n) for peer, n in rows}


def counters(session: Session, owner: str) -> dict[str, int]:
    rows = session.execute(
        select(Conversation.peer_id, Conversation.unread_count).where(Conversation.owner_id == owner)
    )
    return {peer: n for peer, n in rows if n}


@pytest.mark.parametrize("seed", range(3))
def test_counters_follow_sends_copies_and_read_marks(
    sessions: Sessions, make_user: Callable[..., str], seed: int
) -> None:
    rnd = random.Random(seed)
    people = [make_user("uc") for _ in range(4)]
    creator = make_user("uc-creator", role="creator")
    with unit_of_work(sessions) as session:
        blocks.block(session, people[0], people[1])  # people[1]'s messages to people[0] are void
    n = 0
    for _step in range(40):
        action = rnd.choice(["send", "send", "copies", "read_up_to", "read_ids", "read_peer"])
        with unit_of_work(sessions) as session:
            if action == "send":
                batch = []
                for _ in range(rnd.randint(1, 4)):
                    sender, recipient = rnd.sample(people, 2)
                    n += 1
                    void = (recipient, sender) == (people[0], people[1])
                    batch.append(NewMessage(sender, recipient, f"c{n}", "hi", blocked=void))
                batch.append(batch[0])  # a redelivery inside the batch counts once
                stored = messages.store_many(session, batch)
                conversations.touch_many(session, [m for m, created in stored if created])
            elif action == "copies":
                n += 1
                copies, _ = messages.store_copies(session, creator, f"mm{n}", "news", "list", people)
                conversations.touch(session, [(to, creator, mid, True) for mid, to in copies])
            else:
                reader = rnd.choice(people)
                unread = messages.unread(session, reader, limit=1000)
                if unread:
                    pick = rnd.choice(unread)
                    if action == "read_up_to":
                        messages.mark_read(session, reader, pick.id)
                    elif action == "read_ids":
                        ids = [m.id for m in unread if rnd.random() < 0.5]
                        messages.mark_read(session, reader, ids=ids)
                    else:
                        messages.mark_read(session, reader, pick.id, peer=pick.sender_id)
        with sessions() as session:
            for owner in people:
                assert counters(session, owner) == counted(session, owner), (action, owner)
    with sessions() as session:
        assert any(counters(session, owner) for owner in people), "nothing was left unread to compare"
        assert counted(session, people[0]).get(people[1], 0) == 0
