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
        Index("ix_messages_recipient_id_id", "recipient_id", "id"),
        Index("ix_messages_sender_id_sent_at", "sender_id", "sent_at"),
        # one conversation's history, newest first, without a filesort
        Index("ix_messages_sender_id_recipient_id_id", "sender_id", "recipient_id", "id"),
        # unread counts per conversation
        Index("ix_messages_recipient_id_sender_id_read_at", "recipient_id", "sender_id", "read_at"),
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
    """One row per user and peer: the last message between them (kept up to date by sends)."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_owner_id_last_message_id", "owner_id", "last_message_id"),)

    owner_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), primary_key=True)
    peer_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.id"), primary_key=True)
    last_message_id: Mapped[int] = mapped_column(BigInteger)


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
