"""Conversations: one row per peer, most recent activity first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import CurrentUser, DbSession
from api.schemas import ConversationOut, ConversationPage, MessageOut
from messenger.constants import MAX_MESSAGE_ID
from messenger.models import Message
from messenger.repositories import conversations

router = APIRouter(prefix="/v1/conversations", tags=["messages"])


@router.get("", response_model=ConversationPage)
def list_conversations(
    principal: CurrentUser,
    session: DbSession,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_MESSAGE_ID, description="`next_before` of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ConversationPage:
    """The caller's conversations with their last message and unread count, newest activity first."""
    rows = conversations.page(session, principal.user_id, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = {
        m.id: m
        for m in session.scalars(select(Message).where(Message.id.in_([r.last_message_id for r in rows])))
    }
    return ConversationPage(
        conversations=[
            ConversationOut(
                peer=r.peer_id,
                last_message=MessageOut.of(last[r.last_message_id]),
                unread=r.unread_count,
            )
            for r in rows
            if r.last_message_id in last
        ],
        next_before=rows[-1].last_message_id if more else None,
    )
