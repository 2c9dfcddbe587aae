"""Blocking: a blocked user's messages are stored but never delivered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from acl.principal import USER_ID_PATTERN
from api.deps import CurrentUser, DbSession
from api.errors import ApiError
from api.schemas import BlockList, BlockOut
from messenger import actions
from messenger.repositories import blocks

router = APIRouter(prefix="/v1/blocks", tags=["blocks"])

UserPath = Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$", description="The blocked user.")]


@router.get("", response_model=BlockList)
def list_blocks(
    principal: CurrentUser,
    session: DbSession,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> BlockList:
    """The users the caller blocked, by id."""
    rows = blocks.list_for(session, principal.user_id, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return BlockList(blocks=[BlockOut.of(r) for r in rows], next_after=rows[-1].blocked_id if more else None)


@router.get("/{user}", response_model=BlockOut, responses={404: {"description": "Not blocked"}})
def get_block(principal: CurrentUser, session: DbSession, user: UserPath) -> BlockOut:
    row = blocks.get(session, principal.user_id, user)
    if row is None:
        raise ApiError(404, "not_blocked", f"you have not blocked {user!r}")
    return BlockOut.of(row)


@router.put(
    "/{user}",
    response_model=BlockOut,
    responses={400: {"description": "Blocking yourself"}, 404: {"description": "No such user"}},
)
def put_block(principal: CurrentUser, session: DbSession, user: UserPath) -> BlockOut:
    """Block a user (idempotent)."""
    return BlockOut.of(actions.block(session, principal.user_id, principal.role.value, user))


@router.delete("/{user}", status_code=204, response_class=Response)
def delete_block(principal: CurrentUser, session: DbSession, user: UserPath) -> Response:
    """Unblock a user (idempotent: unblocking someone not blocked is fine)."""
    actions.unblock(session, principal.user_id, user)
    return Response(status_code=204)
