"""Users: provisioning and lookups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Insert, bindparam, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from messenger.models import User, UTCDateTime, utcnow
from messenger.repositories import json_rows


def get(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def existing_ids(session: Session, user_ids: Iterable[str]) -> set[str]:
    """The subset of ``user_ids`` that exist."""
    wanted = set(user_ids)
    if not wanted:
        return set()
    return set(session.scalars(select(User.id).where(User.id.in_(wanted))))


def ensure(session: Session, user_id: str, role: str, display_name: str | None = None) -> User:
    """Return the user, creating it with ``role`` if it does not exist (safe against a concurrent insert)."""
    user = session.get(User, user_id)
    if user is not None:
        return user
    try:
        with session.begin_nested():
            user = User(id=user_id, role=role, display_name=display_name)
            session.add(user)
    except IntegrityError:
        user = session.get(User, user_id)
        if user is None:  # pragma: no cover - the row was there a moment ago
            raise
    return user


def upsert(session: Session, user_id: str, role: str, display_name: str | None = None) -> User:
    """Create the user or update its role (and display name when given)."""
    user = ensure(session, user_id, role, display_name)
    user.role = role
    if display_name is not None:
        user.display_name = display_name
    session.flush()
    return user


def insert_ignore(session: Session, table: type[Any]) -> Insert:
    """An INSERT that skips rows whose key already exists (MariaDB ``IGNORE``, SQLite ``OR IGNORE``)."""
    prefix = "IGNORE" if session.get_bind().dialect.name in ("mysql", "mariadb") else "OR IGNORE"
    return insert(table).prefix_with(prefix)


def ensure_many(session: Session, user_ids: Iterable[str], role: str = "member") -> int:
    """Create the users among ``user_ids`` that do not exist yet, with ``role``; returns how many.

    One statement, the ids bound as one JSON array (a fan-out page asks for a thousand); IGNORE
    skips a user that a concurrent transaction created meanwhile.
    """
    wanted = sorted(set(user_ids))  # key order: concurrent callers lock the same rows in one order
    if not wanted:
        return 0
    ignore = "IGNORE" if json_rows.is_mysql(session) else "OR IGNORE"
    statement = text(
        f"INSERT {ignore} INTO users (id, role, created_at) SELECT j.id, :role, :now "  # noqa: S608 - no values
        f"FROM {json_rows.table(session, 'ids', [('id', json_rows.ID)])} "
        "WHERE NOT EXISTS (SELECT 1 FROM users AS u WHERE u.id = j.id)"
    ).bindparams(bindparam("now", type_=UTCDateTime()))
    result = session.execute(statement, {"ids": json_rows.dumps(wanted), "role": role, "now": utcnow()})
    return int(result.rowcount)  # type: ignore[attr-defined]


def roles(session: Session, user_ids: Iterable[str]) -> dict[str, str]:
    """The role of each of ``user_ids`` that exists."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    return {uid: role for uid, role in session.execute(select(User.id, User.role).where(User.id.in_(wanted)))}
