"""Conversation history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from acl.principal import USER_ID_PATTERN
from api.deps import CurrentUser, DbSession, Deps
from api.errors import ApiError
from api.schemas import MessageOut, MessagePage
from messenger.constants import MAX_MESSAGE_ID
from messenger.repositories import messages

router = APIRouter(prefix="/v1/messages", tags=["messages"])


@router.get("", response_model=MessagePage)
def history(
    principal: CurrentUser,
    session: DbSession,
    deps: Deps,
    peer: Annotated[str, Query(alias="with", pattern=f"^{USER_ID_PATTERN}$", description="The other user.")],
    before: Annotated[
        int | None, Query(ge=1, le=MAX_MESSAGE_ID, description="Only messages with a smaller id (older).")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_MESSAGE_ID, description="Only messages with a larger id (newer).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> MessagePage:
    """One conversation of the caller, by keyset on the message id.

    Newest first, paging back with ``before``; with only ``after``, oldest first from that id,
    paging forward with ``next_after``. Messages the peer sent while the caller blocked them
    are not shown.
    """
    if limit > deps.history_max_limit:
        raise ApiError(422, "invalid_request", f"limit is at most {deps.history_max_limit}")
    forward = after is not None and before is None
    rows = messages.conversation(
        session,
        principal.user_id,
        peer,
        before=before,
        after=after,
        limit=limit + 1,
        newest_first=not forward,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = rows[-1].id if more else None
    return MessagePage(
        messages=[MessageOut.of(m) for m in rows],
        next_before=None if forward else cursor,
        next_after=cursor if forward else None,
    )
