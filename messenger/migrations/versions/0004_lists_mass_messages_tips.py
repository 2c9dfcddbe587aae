"""member lists, mass messages, tips and the embedded billing ledger

``member_lists``/``list_members`` and ``ledger_*`` back the embedded list and billing services
(``messenger serve``); production points at the real services over HTTP and leaves them empty.
``mass_messages`` tracks each fan-out (status, counts, the cursor it resumes from) and ``tips``
each tip from its recording to its settlement.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from messenger.models import BigId, LongText, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the same case-sensitive collation 0002 gave the other tables
_MYSQL: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "member_lists",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        **_MYSQL,
    )
    op.create_index("ix_member_lists_owner_id_id", "member_lists", ["owner_id", "id"])
    op.create_table(
        "list_members",
        sa.Column(
            "list_id", sa.String(64), sa.ForeignKey("member_lists.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("list_id", "member_id"),
        **_MYSQL,
    )
    op.create_table(
        "mass_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sender_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=False),
        sa.Column("list_id", sa.String(64), nullable=False),
        sa.Column("body", LongText, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=True),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.String(255), nullable=True),
        sa.Column("error", sa.String(256), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("sender_id", "client_msg_id", name="uq_mass_messages_sender_id_client_msg_id"),
        **_MYSQL,
    )
    op.create_index("ix_mass_messages_status_lease_until", "mass_messages", ["status", "lease_until"])
    op.create_index("ix_mass_messages_sender_id_id", "mass_messages", ["sender_id", "id"])
    op.create_table(
        "tips",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("payer_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("payee_id", sa.String(64), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("body", LongText, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("charge_id", sa.String(128), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("payer_id", "client_msg_id", name="uq_tips_payer_id_client_msg_id"),
        **_MYSQL,
    )
    op.create_index("ix_tips_status_next_attempt_at", "tips", ["status", "next_attempt_at"])
    op.create_index("ix_tips_payee_id_id", "tips", ["payee_id", "id"])
    op.create_index("ix_tips_payer_id_id", "tips", ["payer_id", "id"])
    op.create_table(
        "ledger_balances",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "currency"),
        **_MYSQL,
    )
    op.create_table(
        "ledger_charges",
        sa.Column("idempotency_key", sa.String(191), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("payer_id", sa.String(64), nullable=False),
        sa.Column("payee_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("description", sa.String(256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("id", name="uq_ledger_charges_id"),
        **_MYSQL,
    )


def downgrade() -> None:
    for table in (
        "ledger_charges",
        "ledger_balances",
        "tips",
        "mass_messages",
        "list_members",
        "member_lists",
    ):
        op.drop_table(table)
