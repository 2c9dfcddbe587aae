"""Presence lookups and health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from acl.principal import USER_ID_PATTERN
from api.deps import CurrentUser, Deps
from api.schemas import Health, PresenceOut

router = APIRouter(tags=["presence"])


@router.get("/v1/presence/{user}", response_model=PresenceOut)
def presence(
    _principal: CurrentUser, deps: Deps, user: Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$")]
) -> PresenceOut:
    """Whether a user is online, on which devices and broker nodes, since when, and when last seen."""
    return PresenceOut.of(deps.presence.get(user))


@router.get("/healthz", response_model=Health, tags=["operations"])
def healthz() -> Health:
    """The process is up."""
    return Health()
