"""One client id, one send: a 1:1 message, a tip and a mass message never share a sender's id.

Each kind is idempotent on (sender, client id) in its own table, through that table's unique
key; this module owns those lookups. :func:`used_elsewhere` keeps a resent id from being read as
a repeat of a different kind of send (a tip settling onto an old plain message, a list copy
colliding with a 1:1 message to the same member).

Every lookup binds its pairs as one JSON array and joins them on the unique key, named in the
statement (:mod:`indexes`): a sender-only index would read the sender's whole history per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from messenger.models import MassMessage, Message, Tip
from messenger.repositories import indexes, json_rows

Kind = Literal["message", "tip", "mass"]
Pair = tuple[str, str]
Row = TypeVar("Row", Message, Tip, MassMessage)


def rows(session: Session, model: type[Row], pairs: Sequence[Pair], *, where: str = "") -> list[Row]:
    """The rows of ``model`` (messages, tips or mass messages) stored under any of ``pairs``
    (sender, client id), in one query; ``where`` narrows them (a condition on ``t``)."""
    wanted = sorted(set(pairs))
    if not wanted:
        return []
    table, sender, _kind_only = _KINDS[_MODEL_KIND[model]]
    statement = text(
        f"SELECT t.* FROM {_join(session, table, sender)}{f' WHERE {where}' if where else ''}"  # noqa: S608 - no values
    ).bindparams(pairs=json_rows.dumps(wanted))
    return list(session.scalars(select(model).from_statement(statement)))


def used_elsewhere(session: Session, pairs: Sequence[Pair], *, kind: Kind) -> set[Pair]:
    """The (sender, client id) pairs among ``pairs`` already used by a send of another kind,
    in one query: the pairs joined on each other kind's unique key."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    parts = [
        f"SELECT t.{sender}, t.client_msg_id FROM {_join(session, table, sender)}{kind_only}"  # noqa: S608 - no values
        for other, (table, sender, kind_only) in _KINDS.items()
        if other != kind
    ]
    found = session.execute(text(" UNION ALL ".join(parts)), {"pairs": json_rows.dumps(wanted)})
    return {(sender, client_id) for sender, client_id in found}


def _join(session: Session, table: str, sender: str) -> str:
    """The bound pairs ``j`` joined to ``table`` as ``t`` through its unique key."""
    pairs_table = json_rows.table(session, "pairs", json_rows.CLIENT_ID_PAIR)
    hint = indexes.hint(session, UNIQUE_KEYS[table], constraint=True)
    return (
        f"{pairs_table} JOIN {table} AS t{hint} "
        f"ON t.{sender} = j.sender AND t.client_msg_id = j.client_msg_id"
    )


#: Per kind: its table, its sender column, and which of its rows are that kind.
_KINDS: dict[Kind, tuple[str, str, str]] = {
    # a plain message: not a copy of a mass message, not a tip's message
    "message": ("messages", "sender_id", " WHERE t.list_id IS NULL AND t.tip_amount IS NULL"),
    "tip": ("tips", "payer_id", ""),
    "mass": ("mass_messages", "sender_id", ""),
}
_MODEL_KIND: dict[type, Kind] = {Message: "message", Tip: "tip", MassMessage: "mass"}
#: each table's unique key on (sender, client id[, recipient])
UNIQUE_KEYS = {
    "messages": "uq_messages_sender_id_client_msg_id_recipient_id",
    "tips": "uq_tips_payer_id_client_msg_id",
    "mass_messages": "uq_mass_messages_sender_id_client_msg_id",
}
