"""Presence lookups.

Who sees whom (docs/security.md): any authenticated caller may look up anyone, as any client may
subscribe to any ``presence/{uid}/+`` over MQTT, except across a block. A user who blocked the
caller, or whom the caller blocked, is answered like a user never seen online, so the answer
does not reveal the block either. (The MQTT topics cannot apply this: their ACL is static and
knows nothing of blocks; what REST hides beyond them is ``since``, ``last_seen`` and the nodes.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session

from acl.principal import USER_ID_PATTERN, Principal
from api.deps import CurrentUser, DbSession, Deps
from api.schemas import PresenceList, PresenceOut, PresenceQuery
from messenger.presence import PresenceInfo
from messenger.repositories import blocks

router = APIRouter(prefix="/v1/presence", tags=["presence"])


def _hidden(session: Session, viewer: Principal, users: Sequence[str]) -> set[str]:
    """The users among ``users`` on the other side of a block from ``viewer`` (either way)."""
    if viewer.is_service:
        return set()
    me = viewer.user_id
    others = [u for u in users if u != me]
    pairs = blocks.blocked_pairs(session, [(me, u) for u in others] + [(u, me) for u in others])
    return {blocked if blocker == me else blocker for blocker, blocked in pairs}


def _visible(info: PresenceInfo, hidden: set[str]) -> PresenceOut:
    if info.user_id in hidden:
        return PresenceOut(user=info.user_id, online=False, devices=[], since=None, last_seen=None)
    return PresenceOut.of(info)


@router.get("/{user}", response_model=PresenceOut)
def presence(
    principal: CurrentUser,
    deps: Deps,
    session: DbSession,
    user: Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$")],
) -> PresenceOut:
    """Whether a user is online, on which devices and broker nodes, since when, and when last seen.
    Across a block (either way) the answer is that of a user never seen online."""
    return _visible(deps.presence.get(user), _hidden(session, principal, [user]))


@router.post("/query", response_model=PresenceList)
def query(principal: CurrentUser, deps: Deps, session: DbSession, payload: PresenceQuery) -> PresenceList:
    """Presence of up to 100 users at once, in the order asked (repeats answered once, but counted
    towards the 100). Across a block (either way) a user is answered as never seen online."""
    wanted = list(dict.fromkeys(payload.users))
    hidden = _hidden(session, principal, wanted)
    return PresenceList(presence=[_visible(info, hidden) for info in deps.presence.get_many(wanted)])
