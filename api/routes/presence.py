"""Presence lookups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from acl.principal import USER_ID_PATTERN
from api.deps import CurrentUser, Deps
from api.schemas import PresenceList, PresenceOut, PresenceQuery

router = APIRouter(prefix="/v1/presence", tags=["presence"])


@router.get("/{user}", response_model=PresenceOut)
def presence(
    _principal: CurrentUser, deps: Deps, user: Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$")]
) -> PresenceOut:
    """Whether a user is online, on which devices and broker nodes, since when, and when last seen."""
    return PresenceOut.of(deps.presence.get(user))


@router.post("/query", response_model=PresenceList)
def query(_principal: CurrentUser, deps: Deps, payload: PresenceQuery) -> PresenceList:
    """Presence of up to 500 users at once, in the order asked (repeats answered once)."""
    wanted = list(dict.fromkeys(payload.users))
    return PresenceList(presence=[PresenceOut.of(info) for info in deps.presence.get_many(wanted)])
