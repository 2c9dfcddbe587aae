"""Tips: a member pays a creator, with an optional message, through the billing service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from api.deps import CurrentUser, DbSession, Deps
from api.errors import ApiError
from api.routes.messages import check_body, resolve_client_id
from api.schemas import TipIn, TipOut, TipPage
from messenger import actions, tipping
from messenger.constants import MAX_MESSAGE_ID
from messenger.db import unit_of_work
from messenger.exceptions import Rejected
from messenger.models import Tip
from messenger.protocol import ClientMsgId
from messenger.repositories import tips, users

router = APIRouter(prefix="/v1/tips", tags=["tips"])

Before = Annotated[int | None, Query(ge=1, le=MAX_MESSAGE_ID, description="Only older tips (smaller id).")]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post(
    "",
    response_model=TipOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": TipOut, "description": "A repeat of an earlier tip: its current state"},
        202: {"model": TipOut, "description": "Pending: the charge's outcome is not known yet"},
        400: {"description": "Amount or currency outside what is accepted"},
        402: {"description": "The charge failed (tip_failed); see billing_url"},
        403: {"description": "Not from a member to a creator, or the creator blocked the caller"},
        404: {"description": "No such user"},
        409: {"description": "The idempotency key was used for another tip"},
        429: {"description": "Too many tips, or too many declined charges; see retry_after"},
    },
)
def send_tip(
    principal: CurrentUser,
    request_session: DbSession,
    deps: Deps,
    payload: TipIn,
    response: Response,
    idempotency_key: Annotated[
        ClientMsgId | None,
        Header(description="Makes a retry safe: the same key is charged once and returns the same tip."),
    ] = None,
) -> TipOut:
    """Tip a creator. The charge goes to the billing service with an idempotency key derived
    from the client id, so a retried request is charged at most once.

    Succeeded (201): the message is stored with its tip and delivered to the creator. Failed
    (402 ``tip_failed``): nothing is delivered; ``billing_url`` is where to fix payment.
    Unknown (202 ``pending``): it is retried with the same key and settled later; the
    member's devices get an ``ack`` or ``tip_failed`` event then.
    """
    if principal.is_service:
        raise Rejected("the service account does not tip", code="forbidden")
    check_body(payload.body)
    client_id = resolve_client_id(payload.client_id, idempotency_key)
    request = tipping.TipRequest(
        principal.user_id, client_id, payload.to, payload.body, payload.amount, payload.currency
    )
    # The request's session has done its part (the token's revocation check): end its
    # transaction, so that this request never holds a connection while it waits for another
    # (under load, requests each holding one and waiting for a second emptied the pool until
    # its timeout) nor while billing answers.
    request_session.commit()
    # recorded and committed before the charge, so an interrupted request is settled later
    with unit_of_work(deps.sessions) as session:
        if not tips.by_client_ids(session, [(request.payer, client_id)]):  # a retry is answered as is
            tipping.admit(deps.limiter, request)
        users.ensure(session, principal.user_id, principal.role.value)
        (recorded,), _ = tipping.record_tips(session, [request], deps.tip_policy, claimed_by="api")
    if recorded.error is not None:
        deps.metrics.messages_rejected.labels(recorded.error.code, "http").inc()
        raise recorded.error
    tip: Tip | None = recorded.tip
    assert tip is not None  # noqa: S101 - a result without an error has its tip
    if recorded.created:
        settled, out = tipping.settle(
            deps.sessions, deps.external.billing, tip.id, deps.tip_policy, deps.limiter
        )
        tip = settled or tip
        # settle committed what it returns: publish now, also when the answer below is a 402
        # (an error answer skips the request's outbox)
        deps.publisher.publish(out)
        actions.count(deps.metrics, out, via="http")
    answer = TipOut.of(tip, deps.tip_policy.billing_url)
    if tip.status == "failed":
        raise ApiError(
            402,
            "tip_failed",
            f"the charge failed: {tip.reason}",
            billing_url=deps.tip_policy.billing_url,
            tip=answer.model_dump(mode="json", by_alias=True),
        )
    if tip.status == "pending":
        response.status_code = status.HTTP_202_ACCEPTED
    elif not recorded.created:
        response.status_code = status.HTTP_200_OK
    return answer


@router.get("/received", response_model=TipPage)
def received(principal: CurrentUser, session: DbSession, before: Before = None, limit: Limit = 50) -> TipPage:
    """Tips the caller (a creator) received: charged successfully, newest first."""
    rows = tips.received(session, principal.user_id, before=before, limit=limit + 1)
    return _page(rows, limit)


@router.get("/sent", response_model=TipPage)
def sent(
    principal: CurrentUser, session: DbSession, deps: Deps, before: Before = None, limit: Limit = 50
) -> TipPage:
    """Tips the caller sent, whatever became of them (pending, succeeded, failed), newest first."""
    rows = tips.sent(session, principal.user_id, before=before, limit=limit + 1)
    return _page(rows, limit, deps.tip_policy.billing_url)


def _page(rows: list[Tip], limit: int, billing_url: str | None = None) -> TipPage:
    more = len(rows) > limit
    rows = rows[:limit]
    return TipPage(tips=[TipOut.of(t, billing_url) for t in rows], next_before=rows[-1].id if more else None)
