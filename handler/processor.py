"""The MessageHandler's logic: one batch of inbound commands in one transaction.

The processor never talks to MQTT. It returns what to publish; the consumer publishes it
after the commit and only then acks the inbound messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from acl.topics import events_topic, messages_topic, parse_inbound_topic, parse_presence_topic
from messenger import protocol
from messenger.db import unit_of_work
from messenger.exceptions import InvalidCommand, StoreUnavailable
from messenger.protocol import MarkRead, SendMessage, Sync, Typing
from messenger.repositories import blocks, messages, users
from messenger.repositories.messages import NewMessage

logger = logging.getLogger(__name__)

#: How often a batch is retried when a concurrent handler stored one of its messages first.
INTEGRITY_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message the handler received: a command on ``inbound/{uid}`` or a presence change."""

    topic: str
    payload: bytes
    retained: bool = False


@dataclass(frozen=True, slots=True)
class Outbound:
    topic: str
    payload: bytes


@dataclass(slots=True)
class _Batch:
    """The work of one batch, sorted by kind, with the replies that need no database."""

    sends: list[tuple[str, SendMessage]] = field(default_factory=list)
    reads: list[tuple[str, MarkRead]] = field(default_factory=list)
    typing: list[tuple[str, Typing]] = field(default_factory=list)
    syncs: list[tuple[str, int | None]] = field(default_factory=list)
    replies: list[Outbound] = field(default_factory=list)


class CommandProcessor:
    """Turns inbound commands into database writes and the messages to publish afterwards."""

    def __init__(self, sessions: sessionmaker[Session], *, sync_page_size: int = 100) -> None:
        self._sessions = sessions
        self._sync_page_size = sync_page_size

    def process(self, batch: Sequence[Inbound]) -> list[Outbound]:
        """Handle a batch in one transaction; return what to publish once it is committed.

        Raises StoreUnavailable when the database is down: nothing was done, retry the batch.
        Any other failure is isolated to the command that caused it, which gets an
        ``internal_error`` event; the rest of the batch goes through.
        """
        try:
            return self._process_with_retries(batch)
        except StoreUnavailable:
            raise
        except Exception:
            if len(batch) == 1:
                logger.exception("command on %s failed; replying internal_error", batch[0].topic)
                return self._internal_error(batch[0])
            logger.warning(
                "a batch of %d failed; retrying its commands one by one", len(batch), exc_info=True
            )
        out: list[Outbound] = []
        for item in batch:
            out.extend(self.process([item]))
        return out

    def _process_with_retries(self, batch: Sequence[Inbound]) -> list[Outbound]:
        for attempt in range(INTEGRITY_RETRIES):
            work = self._parse(batch)
            try:
                with unit_of_work(self._sessions) as session:
                    work.replies.extend(self._apply(session, work))
                return work.replies
            except IntegrityError:
                # another handler stored one of these messages between our lookup and insert
                if attempt == INTEGRITY_RETRIES - 1:
                    raise
                logger.info("idempotency race on a batch of %d; retrying", len(batch))
        raise AssertionError("unreachable")

    def _parse(self, batch: Sequence[Inbound]) -> _Batch:
        work = _Batch()
        for item in batch:
            sender = parse_inbound_topic(item.topic)
            if sender is not None:
                self._parse_command(sender, item.payload, work)
                continue
            presence = parse_presence_topic(item.topic)
            # a device that comes online gets what it missed; replays of retained state do not
            if presence is not None and not item.retained and protocol.parse_presence(item.payload):
                work.syncs.append((presence[0], None))
        return work

    def _parse_command(self, sender: str, payload: bytes, work: _Batch) -> None:
        try:
            command = protocol.parse_command(payload)
        except InvalidCommand as exc:
            client_id = protocol.client_id_of(payload)
            logger.info("rejected command from %s (client id %r): %s", sender, client_id, exc.code)
            work.replies.append(_event(sender, protocol.error_event(exc.code, exc.detail, client_id)))
            return
        match command:
            case SendMessage(list=list_id) if list_id is not None:
                work.replies.append(
                    _event(
                        sender,
                        protocol.error_event(
                            "not_supported", "list messages are not available yet", command.id
                        ),
                    )
                )
            case SendMessage(tip=tip) if tip is not None:
                work.replies.append(
                    _event(
                        sender,
                        protocol.error_event("not_supported", "tips are not available yet", command.id),
                    )
                )
            case SendMessage(to=to) if to == sender:
                work.replies.append(
                    _event(
                        sender,
                        protocol.error_event("invalid_recipient", "you cannot message yourself", command.id),
                    )
                )
            case SendMessage():
                work.sends.append((sender, command))
            case MarkRead():
                work.reads.append((sender, command))
            case Typing():
                work.typing.append((sender, command))
            case Sync(after=after):
                work.syncs.append((sender, after))

    def _apply(self, session: Session, work: _Batch) -> list[Outbound]:
        out: list[Outbound] = []
        out.extend(self._send(session, work.sends))
        for reader, read in work.reads:
            for sender, up_to in messages.mark_read(session, reader, read.up_to, peer=read.peer).items():
                out.append(_event(sender, protocol.read_event(reader, up_to)))
        if work.typing:
            refused = blocks.blocked_pairs(session, [(t.to, sender) for sender, t in work.typing])
            for sender, t in work.typing:
                if (t.to, sender) not in refused:
                    out.append(_event(t.to, protocol.typing_event(sender)))
        for user_id, after in dict.fromkeys(work.syncs):  # a repeated request is answered once
            out.extend(self._catch_up(session, user_id, after))
        return out

    def _send(self, session: Session, sends: list[tuple[str, SendMessage]]) -> list[Outbound]:
        if not sends:
            return []
        out: list[Outbound] = []
        known = users.existing_ids(session, {cmd.to for _, cmd in sends if cmd.to} | {s for s, _ in sends})
        refused = blocks.blocked_pairs(
            session, [(cmd.to, sender) for sender, cmd in sends if cmd.to in known]
        )
        accepted: list[NewMessage] = []
        for sender, cmd in sends:
            assert cmd.to is not None  # noqa: S101 - _parse_command routes only 1:1 messages here
            if sender not in known:
                # the broker let in a user nobody provisioned (possible with an external gateway)
                out.append(
                    _event(
                        sender, protocol.error_event("unknown_sender", "your user is not provisioned", cmd.id)
                    )
                )
                continue
            if cmd.to not in known:
                out.append(
                    _event(sender, protocol.error_event("unknown_recipient", f"no user {cmd.to!r}", cmd.id))
                )
                continue
            accepted.append(NewMessage(sender, cmd.to, cmd.id, cmd.body, blocked=(cmd.to, sender) in refused))
        for stored, created in messages.store_many(session, accepted):
            if not stored.blocked:
                out.append(
                    Outbound(
                        messages_topic(stored.recipient_id), protocol.encode(protocol.message_payload(stored))
                    )
                )
            out.append(_event(stored.sender_id, protocol.ack_event(stored, duplicate=not created)))
        return out

    def _catch_up(self, session: Session, user_id: str, after: int | None) -> list[Outbound]:
        page = messages.unread(session, user_id, after=after, limit=self._sync_page_size + 1)
        more = len(page) > self._sync_page_size
        page = page[: self._sync_page_size]
        topic = messages_topic(user_id)
        out = [Outbound(topic, protocol.encode(protocol.message_payload(m))) for m in page]
        out.append(_event(user_id, protocol.synced_event(page[-1].id if page else after, more)))
        return out

    def _internal_error(self, item: Inbound) -> list[Outbound]:
        sender = parse_inbound_topic(item.topic)
        if sender is None:
            return []
        detail = "the server could not process this command"
        return [
            _event(
                sender, protocol.error_event("internal_error", detail, protocol.client_id_of(item.payload))
            )
        ]


def _event(user_id: str, payload: dict[str, object]) -> Outbound:
    return Outbound(events_topic(user_id), protocol.encode(payload))
