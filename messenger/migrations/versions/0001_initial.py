"""users, messages, blocked_users

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from messenger.models import BigId, LongText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        mysql_charset="utf8mb4",
        mysql_engine="InnoDB",
    )
    op.create_table(
        "messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("sender_id", sa.String(64), nullable=False),
        sa.Column("recipient_id", sa.String(64), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=False),
        sa.Column("body", LongText, nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("read_at", UTCDateTime(), nullable=True),
        sa.Column("tip_amount", sa.BigInteger(), nullable=True),
        sa.Column("tip_currency", sa.String(3), nullable=True),
        sa.Column("tip_status", sa.String(16), nullable=True),
        sa.Column("list_id", sa.String(64), nullable=True),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(["sender_id"], ["users.id"], name="fk_messages_sender_id_users"),
        sa.ForeignKeyConstraint(["recipient_id"], ["users.id"], name="fk_messages_recipient_id_users"),
        sa.UniqueConstraint(
            "sender_id",
            "client_msg_id",
            "recipient_id",
            name="uq_messages_sender_id_client_msg_id_recipient_id",
        ),
        mysql_charset="utf8mb4",
        mysql_engine="InnoDB",
    )
    op.create_index("ix_messages_recipient_id_id", "messages", ["recipient_id", "id"])
    op.create_index("ix_messages_sender_id_sent_at", "messages", ["sender_id", "sent_at"])
    op.create_index("ix_messages_sender_id_recipient_id_id", "messages", ["sender_id", "recipient_id", "id"])
    op.create_table(
        "blocked_users",
        sa.Column("blocker_id", sa.String(64), nullable=False),
        sa.Column("blocked_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("blocker_id", "blocked_id", name="pk_blocked_users"),
        sa.ForeignKeyConstraint(["blocker_id"], ["users.id"], name="fk_blocked_users_blocker_id_users"),
        sa.ForeignKeyConstraint(["blocked_id"], ["users.id"], name="fk_blocked_users_blocked_id_users"),
        mysql_charset="utf8mb4",
        mysql_engine="InnoDB",
    )


def downgrade() -> None:
    op.drop_table("blocked_users")
    op.drop_index("ix_messages_sender_id_recipient_id_id", table_name="messages")
    op.drop_index("ix_messages_sender_id_sent_at", table_name="messages")
    op.drop_index("ix_messages_recipient_id_id", table_name="messages")
    op.drop_table("messages")
    op.drop_table("users")
