"""Operator endpoints: user provisioning and token revocation (service role or admin key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from acl.principal import USER_ID_PATTERN
from acl.revocation import Revocation
from acl.topics import CONTROL_TOPIC
from api.deps import Admin, DbSession, Deps, Outbox
from api.errors import ApiError
from api.schemas import BalancesOut, RevocationIn, RevocationOut, TopUpIn, UserIn, UserOut
from messenger.actions import Outbound
from messenger.models import utcnow
from messenger.repositories import ledger, revocations, users
from messenger.services.billing import LedgerBilling

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    responses={403: {"description": "Not the service role"}},
)


@router.put("/users/{user}", response_model=UserOut)
def put_user(
    _admin: Admin,
    session: DbSession,
    user: Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$")],
    payload: UserIn,
) -> UserOut:
    """Create a user or change its role and display name (idempotent)."""
    return UserOut.of(users.upsert(session, user, payload.role, payload.display_name))


@router.post("/revocations", response_model=RevocationOut, status_code=status.HTTP_201_CREATED)
def revoke(admin: Admin, session: DbSession, pending: Outbox, payload: RevocationIn) -> RevocationOut:
    """Revoke one token (``jti``) or every token of a user issued before ``before`` (default now).

    The next REST call with a revoked token gets 401, a new MQTT connection is refused, and the
    broker disconnects the live connections it covers.
    """
    revocation = Revocation(
        jti=payload.jti,
        user_id=payload.user,
        issued_before=(payload.before or utcnow()) if payload.user is not None else None,
    )
    row = revocations.add(session, revocation, by=admin, reason=payload.reason)
    pending.append(Outbound(CONTROL_TOPIC, revocation.to_control()))
    return RevocationOut.of(row)


def _ledger(deps: Deps) -> None:
    if not isinstance(deps.external.billing, LedgerBilling):
        raise ApiError(
            409, "billing_external", "balances are kept by the billing service (MESSENGER_BILLING_URL)"
        )


@router.post("/balances/{user}", response_model=BalancesOut)
def top_up(
    _admin: Admin,
    session: DbSession,
    deps: Deps,
    user: Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$")],
    payload: TopUpIn,
) -> BalancesOut:
    """Add funds to a user's balance in the embedded billing ledger (what tips are charged to)."""
    _ledger(deps)
    ledger.top_up(session, user, payload.currency, payload.amount)
    return BalancesOut(user=user, balances=ledger.balances(session, user))


@router.get("/balances/{user}", response_model=BalancesOut)
def balances(
    _admin: Admin, session: DbSession, deps: Deps, user: Annotated[str, Path(pattern=f"^{USER_ID_PATTERN}$")]
) -> BalancesOut:
    """A user's balances in the embedded billing ledger, per currency, in minor units."""
    _ledger(deps)
    return BalancesOut(user=user, balances=ledger.balances(session, user))
