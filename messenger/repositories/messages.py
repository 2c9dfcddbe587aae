"""Messages: idempotent batch storage, history, unread and read marks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, false, select, text, true, update
from sqlalchemy.orm import Session

from messenger.models import Message, UTCDateTime, utcnow
from messenger.repositories import client_ids, conversations, indexes, json_rows

MessageKey = tuple[str, str, str]  # (sender_id, client_msg_id, recipient_id): the idempotency key
UNIQUE_KEY = client_ids.UNIQUE_KEYS["messages"]
#: the indexes the pages read (see :mod:`indexes`)
HISTORY = "ix_messages_sender_id_recipient_id_blocked_id"
INBOX = "ix_messages_recipient_id_id"
UNREAD = "ix_messages_recipient_id_blocked_read_at_id"
FROM_PEER = "ix_messages_recipient_id_sender_id_read_at"


@dataclass(frozen=True, slots=True)
class NewMessage:
    sender_id: str
    recipient_id: str
    client_msg_id: str
    body: str
    blocked: bool = False
    list_id: str | None = None
    tip_amount: int | None = None
    tip_currency: str | None = None
    tip_status: str | None = None

    @property
    def key(self) -> MessageKey:
        return (self.sender_id, self.client_msg_id, self.recipient_id)


def by_keys(session: Session, keys: Sequence[MessageKey]) -> dict[MessageKey, Message]:
    """Stored messages for the given idempotency keys, in one query through the unique key."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    keys_table = json_rows.table(session, "keys", [*json_rows.CLIENT_ID_PAIR, ("recipient", json_rows.ID)])
    hint = indexes.hint(session, UNIQUE_KEY, constraint=True)
    rows = session.scalars(
        select(Message).from_statement(
            text(
                f"SELECT m.* FROM {keys_table} JOIN messages AS m{hint} "  # noqa: S608 - no values
                "ON m.sender_id = j.sender AND m.client_msg_id = j.client_msg_id "
                "AND m.recipient_id = j.recipient"
            ).bindparams(keys=json_rows.dumps(wanted))
        )
    )
    return {(m.sender_id, m.client_msg_id, m.recipient_id): m for m in rows}


def by_client_ids(session: Session, pairs: Sequence[tuple[str, str]]) -> dict[MessageKey, Message]:
    """Stored messages by (sender, client id), whatever their recipient, in one query; not the
    copies of a mass message (there may be a hundred thousand of them)."""
    rows = client_ids.rows(session, Message, pairs, where="t.list_id IS NULL")
    return {(m.sender_id, m.client_msg_id, m.recipient_id): m for m in rows}


def store_many(
    session: Session, new: Sequence[NewMessage], *, stored: Mapping[MessageKey, Message] | None = None
) -> list[tuple[Message, bool]]:
    """Store messages idempotently with one multi-row INSERT.

    Returns, for each input in order, the stored row and whether this call created it. A
    message whose key is already stored (a redelivery) returns the original row. A concurrent
    writer inserting the same key makes the INSERT fail with IntegrityError; the caller retries
    the unit of work, whose lookup then finds the row. A caller that has already looked up
    every key of ``new`` in this transaction passes what it found as ``stored``.

    The rows go in as one JSON array (:mod:`json_rows`), inserted in their order (ids grow in
    the order the commands came), and only their ids come back: the messages returned for
    them are built from what was inserted, not read back and loaded by the ORM.
    """
    found = dict(stored) if stored is not None else by_keys(session, [n.key for n in new])
    pending: dict[MessageKey, NewMessage] = {}
    for item in new:
        if item.key not in found:
            pending.setdefault(item.key, item)
    created: set[MessageKey] = set()
    if pending:
        now = utcnow()
        items = list(pending.values())
        statement = text(
            f"INSERT INTO messages ({', '.join(_COLUMNS)}, sent_at) "  # noqa: S608 - no values
            f"SELECT {', '.join(f'j.{c}' for c in _COLUMNS)}, :sent_at "
            f"FROM {json_rows.table(session, 'rows', _ROW_TYPES)} ORDER BY j.n "
            "RETURNING id, sender_id, client_msg_id, recipient_id"
        ).bindparams(bindparam("sent_at", type_=UTCDateTime()))
        rows = [[n, *(getattr(item, c) for c in _COLUMNS)] for n, item in enumerate(items)]
        ids = {
            (sender, client_msg_id, recipient): int(message_id)
            for message_id, sender, client_msg_id, recipient in session.execute(
                statement, {"rows": json_rows.dumps(rows), "sent_at": now}
            )
        }
        for item in items:
            found[item.key] = Message(
                id=ids[item.key], **{c: getattr(item, c) for c in _COLUMNS}, sent_at=now, read_at=None
            )
            created.add(item.key)
    result: list[tuple[Message, bool]] = []
    for item in new:
        first_time = item.key in created
        created.discard(item.key)  # a key repeated inside the batch is "created" only once
        result.append((found[item.key], first_time))
    return result


#: The columns :func:`store_many` inserts from a :class:`NewMessage`, and their JSON_TABLE types.
_COLUMNS = (
    "sender_id",
    "recipient_id",
    "client_msg_id",
    "body",
    "blocked",
    "list_id",
    "tip_amount",
    "tip_currency",
    "tip_status",
)
_ROW_TYPES = [
    ("n", json_rows.BIGINT),
    ("sender_id", json_rows.ID),
    ("recipient_id", json_rows.ID),
    ("client_msg_id", json_rows.ID),
    ("body", "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
    ("blocked", "BOOLEAN"),
    ("list_id", json_rows.ID),
    ("tip_amount", json_rows.BIGINT),
    ("tip_currency", "VARCHAR(3) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
    ("tip_status", "VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
]


def store_copies(
    session: Session, sender: str, client_msg_id: str, body: str, list_id: str, recipients: Sequence[str]
) -> tuple[list[tuple[int, str]], datetime]:
    """Store one copy of a mass message per recipient that has none yet, in one INSERT;
    returns (id, recipient) of the copies stored now, and their ``sent_at``.

    The fan-out's version of :func:`store_many`: no ORM objects, the recipients bound as one
    JSON array (:mod:`json_rows`), the message's fields once, and the recipients already served
    skipped inside the statement, through the unique key.
    """
    now = utcnow()
    wanted = list(dict.fromkeys(recipients))
    if not wanted:
        return [], now
    statement = text(
        "INSERT INTO messages (sender_id, recipient_id, client_msg_id, body, blocked, list_id, sent_at) "  # noqa: S608 - no values
        "SELECT :sender, j.id, :client_msg_id, :body, :blocked, :list_id, :sent_at "
        f"FROM {json_rows.table(session, 'ids', [('id', json_rows.ID)])} WHERE NOT EXISTS ("
        f"SELECT 1 FROM messages AS m{indexes.hint(session, UNIQUE_KEY, constraint=True)} "
        "WHERE m.sender_id = :sender AND m.client_msg_id = :client_msg_id "
        "AND m.recipient_id = j.id) RETURNING id, recipient_id"
    ).bindparams(bindparam("sent_at", type_=UTCDateTime()))
    rows = session.execute(
        statement,
        {
            "ids": json_rows.dumps(wanted),
            "sender": sender,
            "client_msg_id": client_msg_id,
            "body": body,
            "blocked": False,
            "list_id": list_id,
            "sent_at": now,
        },
    )
    return [(int(message_id), recipient) for message_id, recipient in rows], now


def conversation(
    session: Session,
    viewer: str,
    peer: str,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
    newest_first: bool = True,
) -> list[Message]:
    """One conversation's history by keyset on ``id``.

    Messages ``peer`` sent to ``viewer`` while blocked are left out. Messages ``viewer`` sent
    are always shown to ``viewer``: hiding them would tell the sender they are blocked.
    Each direction, and each side of the blocked flag, is its own (sender, recipient, blocked,
    id) index range, read up to ``limit`` and merged: a page reads no message it does not show,
    however many a blocked sender has pushed into the void.
    """

    def page(sender: str, recipient: str, blocked: bool) -> list[Message]:
        query = select(Message).where(
            Message.sender_id == sender,
            Message.recipient_id == recipient,
            Message.blocked == (true() if blocked else false()),
        )
        query = indexes.force(query, Message, HISTORY)
        if before is not None:
            query = query.where(Message.id < before)
        if after is not None:
            query = query.where(Message.id > after)
        order = Message.id.desc() if newest_first else Message.id.asc()
        return list(session.scalars(query.order_by(order).limit(limit)))

    rows = page(viewer, peer, False) + page(viewer, peer, True)
    if viewer != peer:
        rows += page(peer, viewer, False)
    rows.sort(key=lambda m: m.id, reverse=newest_first)
    return rows[:limit]


def unread(
    session: Session, user_id: str, *, after: int | None = None, limit: int = 100, unread_only: bool = False
) -> list[Message]:
    """Messages to ``user_id`` in id order, never blocked ones.

    The unread ones; or, with ``after``, every message after that id (what ``sync`` asks for),
    or only the unread ones after it with ``unread_only`` (a keyset cursor over the unread).
    """
    query = select(Message).where(Message.recipient_id == user_id, Message.blocked == false())
    if after is None or unread_only:
        # one range of the unread index: what was read or blocked is not in it
        query = indexes.force(query.where(Message.read_at.is_(None)), Message, UNREAD)
    else:
        query = indexes.force(query, Message, INBOX)
    if after is not None:
        query = query.where(Message.id > after)
    return list(session.scalars(query.order_by(Message.id).limit(limit)))


def mark_read(
    session: Session,
    reader: str,
    up_to: int | None = None,
    *,
    ids: Sequence[int] | None = None,
    peer: str | None = None,
    at: datetime | None = None,
) -> dict[str, int]:
    """Mark messages to ``reader`` read: those with id <= ``up_to``, or exactly ``ids``
    (optionally only those from ``peer``).

    Returns, per sender whose messages changed, the highest id marked: what their ``read``
    event reports. The reader's unread counts (:func:`conversations.read`) go down with them.
    """
    if (up_to is None) == (ids is None):
        raise ValueError("mark_read takes either up_to or ids")
    conditions = [
        Message.recipient_id == reader,
        Message.id <= up_to if up_to is not None else Message.id.in_(list(ids or [])),
        Message.read_at.is_(None),
        Message.blocked == false(),
    ]
    index = UNREAD if ids is None else indexes.PRIMARY
    if peer is not None:
        conditions.append(Message.sender_id == peer)
        index = FROM_PEER if ids is None else index
    # FOR UPDATE: a message committed between this read and the update is either in both or
    # in neither, so every message marked read is reported to its sender
    # (the rows, not counts grouped by sender: a GROUP BY made SQLite read the reader's whole
    # history through the index that sorts by sender)
    query = select(Message.sender_id, Message.id).where(*conditions)
    tops: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for sender, message_id in session.execute(indexes.force(query, Message, index).with_for_update()):
        tops[sender] = max(tops.get(sender, 0), message_id)
        counts[sender] += 1
    if tops:
        marking = update(Message).where(*conditions).values(read_at=at or utcnow())
        session.execute(indexes.force_update(marking, index))
        conversations.read(session, reader, counts)
    return tops


def by_ids(session: Session, ids: Sequence[int]) -> dict[int, Message]:
    if not ids:
        return {}
    return {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(list(set(ids)))))}
