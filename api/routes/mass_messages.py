"""Mass messages: a creator follows and cancels the fan-out of their list messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from acl.principal import Principal
from api.deps import CurrentUser, DbSession
from api.errors import ApiError
from api.schemas import MassMessageOut, MassMessagePage
from messenger import fanout
from messenger.constants import MAX_MESSAGE_ID
from messenger.models import MassMessage
from messenger.repositories import mass_messages

router = APIRouter(prefix="/v1/mass-messages", tags=["mass messages"])

MassId = Annotated[int, Path(ge=1, le=MAX_MESSAGE_ID)]


def _own(mass: MassMessage | None, principal: Principal, mass_id: int) -> MassMessage:
    if mass is None or mass.sender_id != principal.user_id:
        raise ApiError(404, "not_found", f"you have no mass message {mass_id}")
    return mass


@router.get("", response_model=MassMessagePage)
def list_mass_messages(
    principal: CurrentUser,
    session: DbSession,
    before: Annotated[int | None, Query(ge=1, le=MAX_MESSAGE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MassMessagePage:
    """The caller's mass messages, newest first."""
    rows = mass_messages.sent_by(session, principal.user_id, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return MassMessagePage(
        mass_messages=[MassMessageOut.of(m) for m in rows], next_before=rows[-1].id if more else None
    )


@router.get("/{mass_id}", response_model=MassMessageOut, responses={404: {"description": "Not yours"}})
def get_mass_message(principal: CurrentUser, session: DbSession, mass_id: MassId) -> MassMessageOut:
    """Status, counts and progress of one of the caller's mass messages."""
    return MassMessageOut.of(_own(mass_messages.get(session, mass_id), principal, mass_id))


@router.post(
    "/{mass_id}/cancel",
    response_model=MassMessageOut,
    responses={404: {"description": "Not yours"}, 409: {"description": "Already sent, failed or canceled"}},
)
def cancel_mass_message(principal: CurrentUser, session: DbSession, mass_id: MassId) -> MassMessageOut:
    """Stop a queued or sending mass message. Copies already stored (and delivered) stay; the
    fan-out stops before its next page of members."""
    mass = _own(mass_messages.get(session, mass_id, for_update=True), principal, mass_id)
    if not fanout.cancel(session, mass):
        raise ApiError(409, "already_finished", f"mass message {mass_id} is {mass.status}")
    return MassMessageOut.of(mass)
