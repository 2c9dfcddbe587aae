"""case-sensitive ids on MariaDB/MySQL (binary collation)

User ids and client message ids are case-sensitive (SPEC section 3), but 0001 created the
tables with the server's default collation, usually a case-insensitive one (utf8mb4_general_ci):
``Alice`` matched ``alice`` in lookups and in the foreign and unique keys. SQLite already
compares text byte by byte, so this revision only touches MariaDB/MySQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TABLES = ("users", "messages", "blocked_users")
# MariaDB refuses to change the collation of a column in a foreign key, even with
# foreign_key_checks=0: drop them, convert, then put them back.
_FOREIGN_KEYS = (
    ("messages", "fk_messages_sender_id_users", "sender_id"),
    ("messages", "fk_messages_recipient_id_users", "recipient_id"),
    ("blocked_users", "fk_blocked_users_blocker_id_users", "blocker_id"),
    ("blocked_users", "fk_blocked_users_blocked_id_users", "blocked_id"),
)


def _convert(collation: str) -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for table, name, _column in _FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}")
    for table, name, column in _FOREIGN_KEYS:
        op.create_foreign_key(name, table, "users", [column], ["id"])


def upgrade() -> None:
    _convert("utf8mb4_bin")


def downgrade() -> None:
    _convert("utf8mb4_general_ci")
