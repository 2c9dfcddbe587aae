"""The caller."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, DbSession
from api.schemas import MeOut, TokenOut
from messenger.repositories import users

router = APIRouter(prefix="/v1/me", tags=["users"])


@router.get("", response_model=MeOut)
def me(principal: CurrentUser, session: DbSession) -> MeOut:
    """Who the token belongs to, the user's profile, and the token's own dates."""
    user = users.get(session, principal.user_id)
    return MeOut(
        user=principal.user_id,
        role=user.role if user is not None else principal.role.value,
        display_name=user.display_name if user is not None else None,
        created_at=user.created_at if user is not None else None,
        token=TokenOut(jti=principal.jti, issued_at=principal.issued_at, expires_at=principal.expires_at),
    )
