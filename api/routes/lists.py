"""Member lists of the embedded list service: creators manage their own lists.

With ``MESSENGER_LISTS_URL`` set, lists live in the product's list service and these endpoints
answer 409 ``lists_external``: list messages still work, against that service.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from acl.principal import USER_ID_PATTERN, Principal
from api.deps import CurrentUser, DbSession, Deps
from api.errors import ApiError
from api.schemas import ListIn, ListOut, ListPage, MemberPageOut, MembersAdded, MembersIn
from messenger.models import MemberList
from messenger.repositories import lists, users

router = APIRouter(
    prefix="/v1/lists",
    tags=["lists"],
    responses={
        403: {"description": "Not a creator, or not the owner of the list"},
        409: {"description": "Lists are kept by the external list service"},
    },
)

ListPath = Annotated[str, Path(min_length=1, max_length=64, description="The list id.")]
MemberPath = Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$", description="The member.")]


def _creator(principal: Principal, deps: Deps) -> None:
    if not deps.external.lists_embedded:
        raise ApiError(409, "lists_external", "lists are managed by the list service (MESSENGER_LISTS_URL)")
    if principal.role.value != "creator":
        raise ApiError(403, "not_a_creator", "only creators have lists")


def _owned(session: Session, principal: Principal, list_id: str) -> MemberList:
    row = lists.get(session, list_id)
    if row is None or row.owner_id != principal.user_id:
        raise ApiError(403, "list_not_owned", f"you have no list {list_id!r}")
    return row


@router.post("", response_model=ListOut, status_code=status.HTTP_201_CREATED)
def create_list(principal: CurrentUser, session: DbSession, deps: Deps, payload: ListIn) -> ListOut:
    """Create an empty list owned by the caller (a creator)."""
    _creator(principal, deps)
    users.ensure(session, principal.user_id, principal.role.value)
    return ListOut.of(lists.create(session, principal.user_id, payload.name), 0)


@router.get("", response_model=ListPage)
def my_lists(
    principal: CurrentUser,
    session: DbSession,
    deps: Deps,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ListPage:
    """The caller's lists, by id, with their sizes."""
    _creator(principal, deps)
    rows = lists.owned_by(session, principal.user_id, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    sizes = lists.counts(session, [r.id for r in rows])
    return ListPage(
        lists=[ListOut.of(r, sizes.get(r.id, 0)) for r in rows], next_after=rows[-1].id if more else None
    )


@router.get("/{list_id}", response_model=ListOut)
def get_list(principal: CurrentUser, session: DbSession, deps: Deps, list_id: ListPath) -> ListOut:
    _creator(principal, deps)
    row = _owned(session, principal, list_id)
    return ListOut.of(row, lists.count(session, list_id))


@router.delete("/{list_id}", status_code=204, response_class=Response)
def delete_list(principal: CurrentUser, session: DbSession, deps: Deps, list_id: ListPath) -> Response:
    """Delete a list and its memberships (mass messages already sent stay)."""
    _creator(principal, deps)
    _owned(session, principal, list_id)
    lists.delete_list(session, list_id)
    return Response(status_code=204)


@router.get("/{list_id}/members", response_model=MemberPageOut)
def members(
    principal: CurrentUser,
    session: DbSession,
    deps: Deps,
    list_id: ListPath,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MemberPageOut:
    """The list's members by id; page on with ``next_after``."""
    _creator(principal, deps)
    _owned(session, principal, list_id)
    ids = lists.member_ids(session, list_id, after=after, limit=limit + 1)
    more = len(ids) > limit
    ids = ids[:limit]
    return MemberPageOut(members=ids, next_after=ids[-1] if more else None)


@router.post("/{list_id}/members", response_model=MembersAdded)
def add_members(
    principal: CurrentUser, session: DbSession, deps: Deps, list_id: ListPath, payload: MembersIn
) -> MembersAdded:
    """Add up to 1,000 members at once (idempotent: members already there stay)."""
    _creator(principal, deps)
    _owned(session, principal, list_id)
    added = lists.add_members(session, list_id, payload.members)
    return MembersAdded(added=added, members=lists.count(session, list_id))


@router.delete("/{list_id}/members/{member}", status_code=204, response_class=Response)
def remove_member(
    principal: CurrentUser, session: DbSession, deps: Deps, list_id: ListPath, member: MemberPath
) -> Response:
    """Remove a member (idempotent)."""
    _creator(principal, deps)
    _owned(session, principal, list_id)
    lists.remove_member(session, list_id, member)
    return Response(status_code=204)
