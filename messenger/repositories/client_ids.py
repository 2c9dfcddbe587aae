"""One client id, one send: a 1:1 message, a tip and a mass message never share a sender's id.

Each kind is idempotent on (sender, client id) in its own table; this check keeps a resent id
from being read as a repeat of a different kind of send (a tip settling onto an old plain
message, a list copy colliding with a 1:1 message to the same member).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from messenger.models import MassMessage, Message, Tip

Kind = Literal["message", "tip", "mass"]
Pair = tuple[str, str]


def used_elsewhere(session: Session, pairs: Sequence[Pair], *, kind: Kind) -> set[Pair]:
    """The (sender, client id) pairs among ``pairs`` already used by a send of another kind."""
    wanted = list(set(pairs))
    if not wanted:
        return set()
    used: set[Pair] = set()
    if kind != "message":
        plain = session.execute(
            select(Message.sender_id, Message.client_msg_id)
            .where(
                tuple_(Message.sender_id, Message.client_msg_id).in_(wanted),
                Message.list_id.is_(None),
                Message.tip_amount.is_(None),
            )
            .distinct()
        )
        used |= {(s, c) for s, c in plain}
    if kind != "tip":
        tipped = session.execute(
            select(Tip.payer_id, Tip.client_msg_id).where(tuple_(Tip.payer_id, Tip.client_msg_id).in_(wanted))
        )
        used |= {(s, c) for s, c in tipped}
    if kind != "mass":
        mass = session.execute(
            select(MassMessage.sender_id, MassMessage.client_msg_id).where(
                tuple_(MassMessage.sender_id, MassMessage.client_msg_id).in_(wanted)
            )
        )
        used |= {(s, c) for s, c in mass}
    return used
