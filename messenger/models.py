"""Database tables (SPEC section 5). The schema itself is created by the Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC (microseconds on MariaDB) and read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[datetime]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    display_name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("sender_id", "client_msg_id", "recipient_id"),
        # everything to a user after an id (sync)
        Index("ix_messages_recipient_id_id", "recipient_id", "id"),
        # one conversation's history, newest first, without a filesort, blocked messages apart
        Index("ix_messages_sender_id_recipient_id_blocked_id", "sender_id", "recipient_id", "blocked", "id"),
        # read marks from one peer
        Index("ix_messages_recipient_id_sender_id_read_at", "recipient_id", "sender_id", "read_at"),
        # a user's unread messages in id order (catch-up pages, read marks): one range however
        # much they have read, or blocked senders have sent them
        Index("ix_messages_recipient_id_blocked_read_at_id", "recipient_id", "blocked", "read_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sender_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    recipient_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    client_msg_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(LongText)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tip_amount: Mapped[int | None] = mapped_column(BigInteger)
    tip_currency: Mapped[str | None] = mapped_column(String(3))
    tip_status: Mapped[str | None] = mapped_column(String(16))
    list_id: Mapped[str | None] = mapped_column(String(64))
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)


class BlockedUser(Base):
    __tablename__ = "blocked_users"

    blocker_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), primary_key=True)
    blocked_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Conversation(Base):
    """One row per user and peer: the last message between them and how many of the peer's
    messages the user has not read, kept up to date by sends and read marks (so a conversation
    list costs the same whatever the unread count)."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_id_last_message_id", "owner_id", "last_message_id"),)

    owner_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), primary_key=True)
    peer_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), primary_key=True)
    last_message_id: Mapped[int] = mapped_column(BigInteger)
    unread_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TokenRevocation(Base):
    """A revoked token (``jti``) or every token of ``user_id`` issued before ``issued_before``."""

    __tablename__ = "token_revocations"
    __table_args__ = (
        Index("ix_token_revocations_jti", "jti"),
        Index("ix_token_revocations_user_id", "user_id", "issued_before"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    jti: Mapped[str | None] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(64))
    issued_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MemberList(Base):
    """A creator's member list, for the embedded list service (production asks the real one)."""

    __tablename__ = "member_lists"
    __table_args__ = (Index("ix_member_lists_owner_id_id", "owner_id", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ListMember(Base):
    """One member of an embedded list; members are paged by ``member_id``."""

    __tablename__ = "list_members"

    list_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("member_lists.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MassMessage(Base):
    """A creator's message to a list, expanded into one ``messages`` row per recipient.

    ``cursor`` is where the member listing goes on (the list service's page cursor). It moves
    in the same transaction as the copies it covers, so a fan-out resumed by another worker
    (``lease_owner``/``lease_until``) goes on exactly where the previous one committed.
    """

    __tablename__ = "mass_messages"
    __table_args__ = (
        UniqueConstraint("sender_id", "client_msg_id"),
        Index("ix_mass_messages_status_lease_until", "status", "lease_until"),
        Index("ix_mass_messages_sender_id_id", "sender_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sender_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    client_msg_id: Mapped[str] = mapped_column(String(64))
    list_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(LongText)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    recipients: Mapped[int | None] = mapped_column(Integer)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(String(256))
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Tip(Base):
    """A member's tip to a creator: recorded ``pending`` before the charge, settled after it.

    The charge's idempotency key is derived from (payer, client message id), so however often
    the command is redelivered or the charge retried, the billing service charges once.
    """

    __tablename__ = "tips"
    __table_args__ = (
        UniqueConstraint("payer_id", "client_msg_id"),
        Index("ix_tips_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_tips_payee_id_id", "payee_id", "id"),
        Index("ix_tips_payer_id_id", "payer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    payer_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    payee_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"))
    client_msg_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    body: Mapped[str] = mapped_column(LongText)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(256))
    charge_id: Mapped[str | None] = mapped_column(String(128))
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LedgerBalance(Base):
    """The embedded billing service: what a user holds, per currency, in minor units."""

    __tablename__ = "ledger_balances"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerCharge(Base):
    """One charge of the embedded billing service, keyed by its idempotency key."""

    __tablename__ = "ledger_charges"

    idempotency_key: Mapped[str] = mapped_column(String(191), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)  # uq_ledger_charges_id
    payer_id: Mapped[str] = mapped_column(String(64))
    payee_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
