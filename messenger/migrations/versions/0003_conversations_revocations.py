"""conversations (one row per user and peer) and token revocations

``conversations`` keeps, for each user and each peer, the id of the last message between them,
so that ``GET /v1/conversations`` reads one index range instead of grouping a user's whole
history. It is filled here from the existing messages and kept up to date by every send.
A blocked message counts only for its sender: the recipient never sees it.

``token_revocations`` holds revoked token ids (``jti``) and "every token of a user issued
before T" cut-offs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from messenger.models import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# the same case-sensitive collation 0002 gave the other tables
_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("peer_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "peer_id"),
        **_MYSQL,
    )
    op.create_index(
        "ix_conversations_owner_id_last_message_id", "conversations", ["owner_id", "last_message_id"]
    )
    op.create_table(
        "token_revocations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("jti", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("issued_before", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        **_MYSQL,
    )
    op.create_index("ix_token_revocations_jti", "token_revocations", ["jti"])
    op.create_index("ix_token_revocations_user_id", "token_revocations", ["user_id", "issued_before"])
    # unread counts per conversation: (recipient, sender) range, unread rows only
    op.create_index(
        "ix_messages_recipient_id_sender_id_read_at", "messages", ["recipient_id", "sender_id", "read_at"]
    )
    op.execute(
        "INSERT INTO conversations (owner_id, peer_id, last_message_id) "
        "SELECT owner_id, peer_id, MAX(id) FROM ("
        " SELECT sender_id AS owner_id, recipient_id AS peer_id, id FROM messages"
        " UNION ALL"
        " SELECT recipient_id, sender_id, id FROM messages WHERE blocked = 0"
        ") AS sides GROUP BY owner_id, peer_id"
    )


def downgrade() -> None:
    op.drop_index("ix_messages_recipient_id_sender_id_read_at", "messages")
    op.drop_table("token_revocations")
    op.drop_table("conversations")
