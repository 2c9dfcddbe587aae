"""Index hints: each hot query names the index it was written for.

MariaDB picks an index from the table's statistics, and the statistics of a chat's tables lie in
both directions: taken when every sender was light, they make a sender-only index look as good
as the unique key, and the idempotency lookup then reads every message a creator ever sent (a
million rows for one batch). The hot queries are short and their right index never depends on
the data, so they say which one to use (``FORCE INDEX``), and tests/messenger/test_plans.py holds
every one of them to it, on skewed data, with stale and with fresh statistics.

SQLite plans these statements on the index with the most equality constraints, statistics or
not; a statement written as text also names its index there (``INDEXED BY``) when the index has
a name of its own (a primary key or unique constraint's index does not, and needs none).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, Update
from sqlalchemy.orm import Session

from messenger.repositories import json_rows

Query = TypeVar("Query", bound="Select[*tuple[Any, ...]]")
UpdateT = TypeVar("UpdateT", bound=Update)

PRIMARY = "PRIMARY"


def hint(session: Session, index: str, *, constraint: bool = False) -> str:
    """The hint to write after a table (and its alias) in a text statement, with a leading space.

    ``constraint``: the index belongs to a PRIMARY KEY or UNIQUE constraint (no name on SQLite).
    """
    if json_rows.is_mysql(session):
        return f" FORCE INDEX ({index})"
    if constraint or index == PRIMARY:
        return ""
    return f" INDEXED BY {index}"


def force(query: Query, entity: Any, index: str) -> Query:
    """``query`` reading ``entity`` through ``index`` on MariaDB (SQLAlchemy renders no table
    hints for SQLite; its plans for these are checked by the plan tests)."""
    hint = f"FORCE INDEX ({index})"
    return query.with_hint(entity, hint, "mysql").with_hint(entity, hint, "mariadb")


def force_update(statement: UpdateT, index: str) -> UpdateT:
    """A single-table UPDATE through ``index`` on MariaDB: its rows are found the way the
    matching :func:`force`-d SELECT found them, not by a plan stale statistics may pick."""
    hint = f"FORCE INDEX ({index})"
    return statement.with_hint(hint, dialect_name="mysql").with_hint(hint, dialect_name="mariadb")
