"""One client id, one send: a 1:1 message, a tip and a mass message never share a sender's id.

Each kind is idempotent on (sender, client id) in its own table; this check keeps a resent id
from being read as a repeat of a different kind of send (a tip settling onto an old plain
message, a list copy colliding with a 1:1 message to the same member).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from messenger.repositories import json_rows

Kind = Literal["message", "tip", "mass"]
Pair = tuple[str, str]


def used_elsewhere(session: Session, pairs: Sequence[Pair], *, kind: Kind) -> set[Pair]:
    """The (sender, client id) pairs among ``pairs`` already used by a send of another kind,
    in one query: the pairs bound as one JSON array and joined on each kind's unique key."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    pairs_table = json_rows.table(session, "pairs", json_rows.CLIENT_ID_PAIR)
    parts = [
        f"SELECT t.{sender}, t.client_msg_id FROM {pairs_table} JOIN {table} AS t "  # noqa: S608 - no values
        f"ON t.{sender} = j.sender AND t.client_msg_id = j.client_msg_id{where}"
        for other, (table, sender, where) in _KINDS.items()
        if other != kind
    ]
    rows = session.execute(text(" UNION ALL ".join(parts)), {"pairs": json_rows.dumps(wanted)})
    return {(sender, client_id) for sender, client_id in rows}


#: Per kind: its table, its sender column, and which of its rows are that kind.
_KINDS: dict[Kind, tuple[str, str, str]] = {
    # a plain message: not a copy of a mass message, not a tip's message
    "message": ("messages", "sender_id", " WHERE t.list_id IS NULL AND t.tip_amount IS NULL"),
    "tip": ("tips", "payer_id", ""),
    "mass": ("mass_messages", "sender_id", ""),
}
