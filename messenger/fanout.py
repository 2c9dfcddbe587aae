"""Mass messages: a creator's message to one of their lists, for the handler and the API.

:func:`check_list` asks the list service, before anything is queued, that the sender is a
creator who owns the list. :func:`queue_mass_messages` records the mass message ``queued``
(idempotent on sender and client id). A :class:`FanoutRunner` then expands it one page of
members per transaction: it skips members who blocked the sender, stores one copy per
recipient with a multi-row insert (idempotent on sender, client id and recipient), moves the
cursor in the same transaction, and returns the copies to deliver. A worker that stops in the
middle leaves a cursor that the next one (``lease_owner``/``lease_until``) resumes from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from acl.topics import messages_topic
from messenger import actions, protocol
from messenger.actions import Kind, Outbound, event
from messenger.db import unit_of_work
from messenger.exceptions import Rejected, ServiceUnavailable
from messenger.models import MassMessage, utcnow
from messenger.repositories import blocks, client_ids, conversations, mass_messages, messages, users
from messenger.services.lists import ListInfo, ListService

logger = logging.getLogger(__name__)

#: How long a fan-out worker holds a mass message without renewing (it renews every chunk).
LEASE_S = 30.0


def check_list(lists: ListService, sender: str, role: str, list_id: str) -> ListInfo:
    """The list, if ``sender`` is a creator who owns it; else Rejected (``not_a_creator``,
    ``list_not_owned``, or ``service_unavailable`` when the list service does not answer)."""
    if role != "creator":
        raise Rejected("only creators message lists", code="not_a_creator")
    try:
        info = lists.get(list_id)
    except ServiceUnavailable as exc:
        raise Rejected(f"{exc.detail}; try again later", code="service_unavailable") from exc
    if info is None or info.owner != sender:
        raise Rejected(f"you have no list {list_id!r}", code="list_not_owned")
    return info


@dataclass(frozen=True, slots=True)
class MassRequest:
    """A list message whose list :func:`check_list` accepted."""

    sender: str
    client_id: str
    list_id: str
    body: str
    recipients: int | None = None  # the list's size when the service said


@dataclass(frozen=True, slots=True)
class Queued:
    request: MassRequest
    mass_message: MassMessage | None = None
    created: bool = False
    error: Rejected | None = None


def queue_mass_messages(
    session: Session, requests: Sequence[MassRequest]
) -> tuple[list[Queued], list[Outbound]]:
    """Record list messages ``queued``; a repeated (sender, client id) answers with the first.

    Each sender gets an ``ack`` carrying the mass message id and status.
    """
    pairs = [(r.sender, r.client_id) for r in requests]
    found = mass_messages.by_client_ids(session, pairs)
    taken = client_ids.used_elsewhere(session, pairs, kind="mass")
    results: list[Queued] = []
    out: list[Outbound] = []
    for r in requests:
        earlier = found.get((r.sender, r.client_id))
        if (r.sender, r.client_id) in taken or (
            earlier is not None and (earlier.list_id, earlier.body) != (r.list_id, r.body)
        ):
            detail = f"client id {r.client_id!r} was already used for another message"
            results.append(Queued(r, error=Rejected(detail, code="idempotency_conflict")))
            continue
        created = earlier is None
        if earlier is None:
            earlier = MassMessage(
                sender_id=r.sender,
                client_msg_id=r.client_id,
                list_id=r.list_id,
                body=r.body,
                status="queued",
                recipients=r.recipients,
                stored=0,
                skipped=0,
                processed=0,
            )
            session.add(earlier)
            found[(r.sender, r.client_id)] = earlier
        results.append(Queued(r, earlier, created))
    session.flush()  # ids for the acks; a concurrent duplicate fails here and the caller retries
    for q in results:
        if q.mass_message is not None:
            m = q.mass_message
            ack = protocol.mass_message_ack(m.client_msg_id, m.id, m.status, duplicate=not q.created)
            out.append(event(m.sender_id, ack))
    return results, out


def cancel(session: Session, mass_message: MassMessage) -> bool:
    """Stop a queued or sending mass message; copies already stored stay. False when it had ended."""
    if mass_message.status not in mass_messages.ACTIVE:
        return False
    mass_message.status = "canceled"
    mass_message.finished_at = utcnow()
    session.flush()
    return True


@dataclass(frozen=True, slots=True)
class Chunk:
    """One expanded page: what to publish, and whether the fan-out is over (for any reason)."""

    out: list[Outbound]
    done: bool


class FanoutRunner:
    """Expands mass messages page by page, each page one transaction (see the module doc)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        lists: ListService,
        *,
        owner: str,
        page_size: int = 1000,
        lease_s: float = LEASE_S,
    ) -> None:
        self._sessions = sessions
        self._lists = lists
        self.owner = owner
        self._page_size = page_size
        self._lease_s = lease_s
        #: (mass message, list, cursor) this runner committed last: the next step reads the list
        #: from there without reading the row first (its locked read checks the cursor anyway)
        self._resume: tuple[int, str, str | None] | None = None

    def claim(self) -> int | None:
        """Take the oldest mass message that needs a worker; its id, or None."""
        self._resume = None
        now = utcnow()
        with unit_of_work(self._sessions) as session:
            for candidate in mass_messages.claimable(session, self.owner, now):
                if mass_messages.claim(session, candidate, self.owner, now, self._lease_s):
                    return candidate
        return None

    def fail(self, mass_message_id: int, error: str) -> list[Outbound]:
        """End a fan-out that cannot go on (a failure that retrying will not fix): ``failed``,
        with the copies stored so far kept. Returns the sender's notice."""
        with unit_of_work(self._sessions) as session:
            mm = mass_messages.get(session, mass_message_id, for_update=True)
            if mm is None or mm.status not in mass_messages.ACTIVE:
                return []
            mm.status, mm.error, mm.finished_at = "failed", error[:256], utcnow()
            mm.lease_owner = mm.lease_until = None
            detail = f"the mass message failed after {mm.stored} copies: {mm.error}"
            return [actions.error(mm.sender_id, "mass_message_failed", detail, mm.client_msg_id)]

    def release(self, mass_message_id: int) -> None:
        with unit_of_work(self._sessions) as session:
            mass_messages.release(session, mass_message_id, self.owner)

    def step(self, mass_message_id: int) -> Chunk:
        """Expand the next page of members. Raises StoreUnavailable (retry later: nothing moved)."""
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == mass_message_id:
            _, list_id, cursor = resume
        else:
            with unit_of_work(self._sessions) as session:
                mm = mass_messages.get(session, mass_message_id)
                if mm is None or mm.status not in mass_messages.ACTIVE or mm.lease_owner != self.owner:
                    return Chunk([], done=True)
                list_id, cursor = mm.list_id, mm.cursor
        try:
            page = self._lists.members(list_id, after=cursor, limit=self._page_size)
        except ServiceUnavailable as exc:
            logger.warning(
                "mass message %d: list service unavailable (%s); will resume", mass_message_id, exc
            )
            raise
        with unit_of_work(self._sessions) as session:
            mm = mass_messages.get(session, mass_message_id, for_update=True)
            # canceled, or taken over after our lease ran out, or moved by someone else: stop
            if (
                mm is None
                or mm.status not in mass_messages.ACTIVE
                or mm.lease_owner != self.owner
                or mm.cursor != cursor
            ):
                return Chunk([], done=True)
            out = self._store_page(session, mm, page.members)
            now = utcnow()
            mm.processed += len(page.members)
            mm.cursor = page.next
            mm.lease_until = now + timedelta(seconds=self._lease_s)
            if mm.started_at is None:
                mm.started_at = now
            mm.status = "sending"
            done = page.next is None
            if done:
                mm.status, mm.finished_at, mm.recipients = "sent", now, mm.processed
                mm.lease_owner = mm.lease_until = None
                out.append(
                    event(
                        mm.sender_id,
                        protocol.mass_message_ack(mm.client_msg_id, mm.id, "sent", duplicate=False),
                    )
                )
                logger.info(
                    "mass message %d to list %s sent: %d copies, %d skipped",
                    mm.id,
                    mm.list_id,
                    mm.stored,
                    mm.skipped,
                )
        if not done:
            self._resume = (mass_message_id, list_id, page.next)
        return Chunk(out, done)

    def _store_page(self, session: Session, mm: MassMessage, members: list[str]) -> list[Outbound]:
        recipients = [m for m in dict.fromkeys(members) if m != mm.sender_id]
        # members the product has not seen yet (lists come from another service) get a user row,
        # so that their copy waits for them like any message to an offline user
        users.ensure_many(session, recipients, "member")
        refused = blocks.blocked_pairs(session, [(m, mm.sender_id) for m in recipients])
        wanted = [m for m in recipients if (m, mm.sender_id) not in refused]
        copies, sent_at = messages.store_copies(
            session, mm.sender_id, mm.client_msg_id, mm.body, mm.list_id, wanted
        )
        # only the recipients' side: a creator's inbox is not flooded with one conversation per member
        conversations.touch(session, [(to, mm.sender_id, message_id, True) for message_id, to in copies])
        mm.stored += len(copies)
        mm.skipped += len(members) - len(wanted)
        payloads = protocol.copy_payloads(
            mm.sender_id, mm.client_msg_id, mm.body, sent_at, mm.list_id, copies
        )
        return [Outbound(messages_topic(to), payload, Kind.MESSAGE) for to, payload in payloads]
