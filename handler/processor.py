"""The MessageHandler's logic: one batch of inbound commands in one transaction.

The processor never talks to MQTT. It returns what to publish; the consumer publishes it
after the commit and only then acks the inbound messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acl.topics import parse_inbound_topic, parse_presence_topic
from messenger import actions, fanout, protocol, ratelimit, tipping
from messenger.actions import Outbound, SendRequest, SendResult, event
from messenger.db import unit_of_work
from messenger.exceptions import InvalidCommand, Rejected, StoreUnavailable
from messenger.fanout import MassRequest
from messenger.metrics import Metrics
from messenger.protocol import MarkRead, SendMessage, Sync, Typing
from messenger.ratelimit import Action, Bucket, RateLimiter
from messenger.repositories import blocks, messages, users
from messenger.services.lists import EmbeddedLists, ListService
from messenger.tipping import TipPolicy, TipRequest

logger = logging.getLogger(__name__)

#: How often a batch is retried when a concurrent handler stored one of its messages first.
INTEGRITY_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message the handler received: a command on ``inbound/{uid}`` or a presence change."""

    topic: str
    payload: bytes
    retained: bool = False


@dataclass(slots=True)
class Work:
    """A parsed, rate-limited batch, sorted by kind, with the replies that need no database.

    Built once by :meth:`CommandProcessor.prepare`; :meth:`CommandProcessor.commit` may run it
    again and again (database outage, idempotency race) without taking rate-limit tokens twice.
    """

    sends: list[SendRequest] = field(default_factory=list)
    mass: list[MassRequest] = field(default_factory=list)
    tips: list[TipRequest] = field(default_factory=list)
    reads: list[tuple[str, MarkRead]] = field(default_factory=list)
    typing: list[tuple[str, Typing]] = field(default_factory=list)
    #: (user, after, the sync's id): a device coming online asks with neither
    syncs: list[tuple[str, int | None, str | None]] = field(default_factory=list)
    replies: list[Outbound] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.sends)
            + len(self.mass)
            + len(self.tips)
            + len(self.reads)
            + len(self.typing)
            + len(self.syncs)
        )

    def split(self) -> list[Work]:
        """One Work per command; the replies go with the first."""
        parts = [Work(sends=[s]) for s in self.sends]
        parts += [Work(mass=[m]) for m in self.mass]
        parts += [Work(tips=[t]) for t in self.tips]
        parts += [Work(reads=[r]) for r in self.reads]
        parts += [Work(typing=[t]) for t in self.typing]
        parts += [Work(syncs=[s]) for s in self.syncs]
        if not parts:
            return [Work(replies=list(self.replies))]
        parts[0].replies = list(self.replies)
        return parts

    def user(self) -> tuple[str, str | None] | None:
        """Who gets the ``internal_error`` of a one-command Work, and its client id."""
        if self.sends:
            return self.sends[0].sender, self.sends[0].client_id
        if self.mass:
            return self.mass[0].sender, self.mass[0].client_id
        if self.tips:
            return self.tips[0].payer, self.tips[0].client_id
        if self.reads:
            return self.reads[0][0], self.reads[0][1].id
        if self.syncs:
            return self.syncs[0][0], self.syncs[0][2]
        if self.typing:
            return self.typing[0][0], None
        return None


class CommandProcessor:
    """Turns inbound commands into database writes and the messages to publish afterwards."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        sync_page_size: int = 100,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        lists: ListService | None = None,
        tip_policy: TipPolicy | None = None,
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._sync_page_size = sync_page_size
        self._limiter = limiter
        self._metrics = metrics
        self._lists = lists or EmbeddedLists(sessions)
        self._tip_policy = tip_policy or TipPolicy()
        #: Called after a commit that queued mass messages or tips: wakes their workers.
        self._on_queued = on_queued

    def process(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """:meth:`prepare` then :meth:`commit` (raises StoreUnavailable like both)."""
        return self.commit(self.prepare(batch))

    def prepare(self, batch: Sequence[Inbound]) -> Work:
        """Parse a batch, apply the rate limits and check list messages with the list
        service (the one read of the database: the senders' roles).

        Raises StoreUnavailable when the rate-limit store (Redis) or the database is down.
        """
        work = Work()
        for item in batch:
            sender = parse_inbound_topic(item.topic)
            if sender is not None:
                self._parse_command(sender, item.payload, work)
                continue
            presence = parse_presence_topic(item.topic)
            # a device that comes online gets what it missed; replays of retained state do not
            if presence is not None and not item.retained and protocol.parse_presence(item.payload):
                work.syncs.append((presence[0], None, None))
        self._rate_limit(work)
        if work.mass:
            work.mass = self._check_lists(work)
        return work

    def _rate_limit(self, work: Work) -> None:
        """Every command of the batch against its sender's bucket, in one limiter round trip.

        Beyond a limit a command gets a ``rate_limited`` error (with ``retry_after``), except
        ``typing``, which is dropped: a typing indicator is lossy by nature, and an error event
        for each would be the very traffic the limit is for. A tip takes a token of its own
        bucket and needs one left in the payer's ``charge_declined`` bucket (looked at, not
        taken: billing's answer spends it).
        """
        take: list[Bucket] = [(Action.SEND, r.sender) for r in work.sends]
        take += [(Action.SEND, m.sender) for m in work.mass]
        take += [(Action.TIP, t.payer) for t in work.tips]
        take += [(Action.READ, user) for user, _ in work.reads]
        take += [(Action.TYPING, user) for user, _ in work.typing]
        take += [(Action.SYNC, user) for user, _, _ in work.syncs]
        look = {(Action.CHARGE_DECLINED, t.payer) for t in work.tips}
        grants = ratelimit.acquire(self._limiter, take, look)

        def refuse(user: str, client_id: str | None, action: Action, wait: float) -> None:
            logger.debug("rate-limited %s of %s (client id %r)", action.value, user, client_id)
            work.replies.append(actions.refusal_event(user, client_id, ratelimit.refusal(action, wait)))

        sends, mass, tips = [], [], []
        for r in work.sends:
            if (wait := grants.take((Action.SEND, r.sender))) is None:
                sends.append(r)
            else:
                refuse(r.sender, r.client_id, Action.SEND, wait)
        for m in work.mass:
            if (wait := grants.take((Action.SEND, m.sender))) is None:
                mass.append(m)
            else:
                refuse(m.sender, m.client_id, Action.SEND, wait)
        for t in work.tips:
            if (wait := grants.take((Action.TIP, t.payer))) is not None:
                refuse(t.payer, t.client_id, Action.TIP, wait)
            elif (wait := grants.look((Action.CHARGE_DECLINED, t.payer))) is not None:
                refuse(t.payer, t.client_id, Action.CHARGE_DECLINED, wait)
            else:
                tips.append(t)
        reads, syncs = [], []
        for user, read in work.reads:
            if (wait := grants.take((Action.READ, user))) is None:
                reads.append((user, read))
            else:
                refuse(user, read.id, Action.READ, wait)
        for user, after, request_id in work.syncs:
            if (wait := grants.take((Action.SYNC, user))) is None:
                syncs.append((user, after, request_id))
            else:
                refuse(user, request_id, Action.SYNC, wait)
        typing = [(user, t) for user, t in work.typing if grants.take((Action.TYPING, user)) is None]
        work.sends, work.mass, work.tips, work.reads, work.syncs, work.typing = (
            sends,
            mass,
            tips,
            reads,
            syncs,
            typing,
        )

    def _check_lists(self, work: Work) -> list[MassRequest]:
        """The list messages whose sender is a creator owning the list; refusals go to replies."""
        with unit_of_work(self._sessions) as session:
            roles = users.roles(session, {m.sender for m in work.mass})
        accepted = []
        for m in work.mass:
            try:
                info = fanout.check_list(self._lists, m.sender, roles.get(m.sender, ""), m.list_id)
            except Rejected as exc:
                logger.info("refused list message of %s (client id %r): %s", m.sender, m.client_id, exc.code)
                work.replies.append(actions.refusal_event(m.sender, m.client_id, exc))
                continue
            accepted.append(MassRequest(m.sender, m.client_id, m.list_id, m.body, info.member_count))
        return accepted

    def commit(self, work: Work) -> list[Outbound]:
        """Run a prepared batch in one transaction; return what to publish once it is committed.

        Raises StoreUnavailable when the database is down: nothing was done, retry the same
        Work. Any other failure is isolated to the command that caused it, which gets an
        ``internal_error`` event; the rest of the batch goes through.
        """
        try:
            out = self._commit_with_retries(work)
        except StoreUnavailable:
            raise
        except Exception:
            if len(work) <= 1:
                user = work.user()
                logger.exception("command of %s failed; replying internal_error", user)
                out = list(work.replies)
                if user is not None:
                    detail = "the server could not process this command"
                    out.append(actions.error(user[0], "internal_error", detail, user[1]))
            else:
                logger.warning(
                    "a batch of %d failed; retrying its commands one by one", len(work), exc_info=True
                )
                out = [o for part in work.split() for o in self.commit(part)]
                return out  # each part counted itself
        actions.count(self._metrics, out, via="mqtt")
        if (work.mass or work.tips) and self._on_queued is not None:
            self._on_queued()
        return out

    def _commit_with_retries(self, work: Work) -> list[Outbound]:
        for attempt in range(INTEGRITY_RETRIES):
            try:
                with unit_of_work(self._sessions) as session:
                    out = self._apply(session, work)
                return [*work.replies, *out]
            except IntegrityError:
                # another handler stored one of these messages between our lookup and insert
                if attempt == INTEGRITY_RETRIES - 1:
                    raise
                logger.info("idempotency race on a batch of %d; retrying", len(work))
        raise AssertionError("unreachable")

    def _parse_command(self, sender: str, payload: bytes, work: Work) -> None:
        try:
            command = protocol.parse_command(payload)
        except InvalidCommand as exc:
            client_id = protocol.client_id_of(payload)
            logger.info("rejected command from %s (client id %r): %s", sender, client_id, exc.code)
            work.replies.append(actions.error(sender, exc.code, exc.detail, client_id))
            return
        match command:
            case SendMessage(list=list_id) if list_id is not None:
                work.mass.append(MassRequest(sender, command.id, list_id, command.body))
            case SendMessage(to=to, tip=tip) if to is not None and tip is not None:
                work.tips.append(TipRequest(sender, command.id, to, command.body, tip.amount, tip.currency))
            case SendMessage(to=to) if to is not None:
                work.sends.append(SendRequest(sender, command.id, to, command.body))
            case MarkRead():
                work.reads.append((sender, command))
            case Typing():
                work.typing.append((sender, command))
            case Sync(after=after, id=request_id):
                work.syncs.append((sender, after, request_id))

    def _apply(self, session: Session, work: Work) -> list[Outbound]:
        results, out = actions.send_messages(session, work.sends)
        out.extend(self._refusals(results))
        queued, replies = fanout.queue_mass_messages(session, work.mass)
        out.extend(replies)
        recorded, replies = tipping.record_tips(session, work.tips, self._tip_policy)
        out.extend(replies)
        for q in queued:
            if q.error is not None:
                out.append(actions.refusal_event(q.request.sender, q.request.client_id, q.error))
        for r in recorded:
            if r.error is not None:
                out.append(actions.refusal_event(r.request.payer, r.request.client_id, r.error))
        for reader, read in work.reads:
            out.extend(actions.mark_read(session, reader, up_to=read.up_to, peer=read.peer)[1])
        if work.typing:
            refused = blocks.blocked_pairs(session, [(t.to, sender) for sender, t in work.typing])
            for sender, t in work.typing:
                if (t.to, sender) not in refused:
                    out.append(event(t.to, protocol.typing_event(sender)))
        for user_id, after, request_id in dict.fromkeys(work.syncs):  # a repeated request is answered once
            out.extend(self._catch_up(session, user_id, after, request_id))
        return out

    def _refusals(self, results: list[SendResult]) -> list[Outbound]:
        out = []
        for r in results:
            if r.error is not None:
                out.append(actions.refusal_event(r.request.sender, r.request.client_id, r.error))
        return out

    def _catch_up(
        self, session: Session, user_id: str, after: int | None, request_id: str | None
    ) -> list[Outbound]:
        page = messages.unread(session, user_id, after=after, limit=self._sync_page_size + 1)
        more = len(page) > self._sync_page_size
        page = page[: self._sync_page_size]
        out = [actions.delivery(m) for m in page]
        out.append(event(user_id, protocol.synced_event(page[-1].id if page else after, more, request_id)))
        return out
