"""Member lists of the embedded list service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from messenger.models import ListMember, MemberList
from messenger.repositories.users import insert_ignore


def create(session: Session, owner_id: str, name: str) -> MemberList:
    row = MemberList(id=uuid.uuid4().hex, owner_id=owner_id, name=name)
    session.add(row)
    session.flush()
    return row


def get(session: Session, list_id: str) -> MemberList | None:
    return session.get(MemberList, list_id)


def owned_by(
    session: Session, owner_id: str, *, after: str | None = None, limit: int = 100
) -> list[MemberList]:
    query = select(MemberList).where(MemberList.owner_id == owner_id)
    if after is not None:
        query = query.where(MemberList.id > after)
    return list(session.scalars(query.order_by(MemberList.id).limit(limit)))


def delete_list(session: Session, list_id: str) -> None:
    session.execute(delete(ListMember).where(ListMember.list_id == list_id))
    session.execute(delete(MemberList).where(MemberList.id == list_id))


def count(session: Session, list_id: str) -> int:
    return int(session.scalar(select(func.count()).where(ListMember.list_id == list_id)) or 0)


def counts(session: Session, list_ids: Sequence[str]) -> dict[str, int]:
    if not list_ids:
        return {}
    rows = session.execute(
        select(ListMember.list_id, func.count())
        .where(ListMember.list_id.in_(list(list_ids)))
        .group_by(ListMember.list_id)
    )
    return {list_id: int(n) for list_id, n in rows}


def add_members(session: Session, list_id: str, member_ids: Sequence[str]) -> int:
    """Add members (already there: kept); returns how many were new."""
    wanted = sorted(set(member_ids))
    if not wanted:
        return 0
    present = set(
        session.scalars(
            select(ListMember.member_id).where(
                ListMember.list_id == list_id, ListMember.member_id.in_(wanted)
            )
        )
    )
    new = [{"list_id": list_id, "member_id": m} for m in wanted if m not in present]
    if new:
        # a concurrent add of the same member is not an error: ignore the duplicate row
        session.execute(insert_ignore(session, ListMember), new)
    return len(new)


def remove_member(session: Session, list_id: str, member_id: str) -> bool:
    result = session.execute(
        delete(ListMember).where(ListMember.list_id == list_id, ListMember.member_id == member_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def member_ids(session: Session, list_id: str, *, after: str | None = None, limit: int = 1000) -> list[str]:
    """Member ids in id order after ``after``: one primary-key range per page."""
    query = select(ListMember.member_id).where(ListMember.list_id == list_id)
    if after is not None:
        query = query.where(ListMember.member_id > after)
    return list(session.scalars(query.order_by(ListMember.member_id).limit(limit)))
