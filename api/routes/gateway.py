"""Gateway endpoints that brokers call to authenticate clients and check topics.

Internal only: every call carries the shared secret ``X-Gateway-Secret``
(``MESSENGER_GATEWAY_SECRET``; without it configured the endpoints refuse everything). The
answers follow the shape that mosquitto-go-auth (json mode), EMQX's HTTP authn/authz and the
project's Mosquitto plugin read: always HTTP 200, with the decision in ``ok``/``result``. The
decisions come from :mod:`acl`, the same functions the embedded broker calls.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header

from acl.connect import authorize_connect
from acl.principal import Principal, Role, is_valid_user_id
from acl.topics import Action, check, client_id_allowed
from api.deps import DbSession, Deps
from api.errors import ApiError
from api.schemas import ErrorOut, GatewayAclIn, GatewayOut, GatewayUserIn
from messenger.repositories import users

logger = logging.getLogger(__name__)

#: mosquitto-go-auth's ``acc`` bits; 3 (read and write) needs both.
_ACC_ACTIONS = {
    1: (Action.RECEIVE,),
    2: (Action.PUBLISH,),
    3: (Action.RECEIVE, Action.PUBLISH),
    4: (Action.SUBSCRIBE,),
}
#: EMQX's ``action``.
_NAMED_ACTIONS = {"publish": (Action.PUBLISH,), "subscribe": (Action.SUBSCRIBE,)}


def gateway_caller(
    deps: Deps,
    x_gateway_secret: Annotated[
        str | None, Header(description="The shared secret of the brokers (MESSENGER_GATEWAY_SECRET).")
    ] = None,
) -> None:
    """Only brokers holding the shared secret may ask."""
    if deps.gateway_secret is None:
        raise ApiError(403, "forbidden", "the gateway endpoints are off: set MESSENGER_GATEWAY_SECRET")
    if x_gateway_secret is None or not hmac.compare_digest(
        x_gateway_secret.encode(), deps.gateway_secret.encode()
    ):
        raise ApiError(403, "forbidden", "invalid or missing X-Gateway-Secret")


router = APIRouter(
    prefix="/mqtt",
    tags=["gateway"],
    dependencies=[Depends(gateway_caller)],
    responses={403: {"model": ErrorOut, "description": "Missing or wrong X-Gateway-Secret"}},
)


@router.post("/user", response_model=GatewayOut, response_model_exclude_none=True)
def authenticate(deps: Deps, payload: GatewayUserIn) -> GatewayOut:
    """May this CONNECT (username = user id, password = bearer token, client id) go ahead?

    Revoked tokens are refused and new users are provisioned from their claims, as on the
    embedded broker; a database outage is a 503, which brokers treat as "deny". ``expire_at``,
    ``iat`` and ``jti`` let the broker cache the answer and match later revocations.
    """
    try:
        principal = authorize_connect(
            deps.verifier, username=payload.username, password=payload.password, client_id=payload.clientid
        )
        assert deps.gate is not None  # noqa: S101 - ApiDeps builds one
        deps.gate(principal)
    except PermissionError as exc:
        logger.info("gateway refused CONNECT of client %r: %s", payload.clientid, exc)
        return GatewayOut.deny(str(exc))
    return GatewayOut.allow(
        user=principal.user_id,
        role=principal.role.value,
        jti=principal.jti,
        iat=_unix(principal.issued_at),
        expire_at=_unix(principal.expires_at),
    )


@router.post("/acl", response_model=GatewayOut, response_model_exclude_none=True)
def authorize(session: DbSession, payload: GatewayAclIn) -> GatewayOut:
    """May this client publish to, subscribe to, or receive from ``topic``?

    The client is known by its user id (``username``) and client id; its role comes from the
    user record that ``/mqtt/user`` provisioned.
    """
    actions = (
        _NAMED_ACTIONS.get(payload.action or "") if payload.acc is None else _ACC_ACTIONS.get(payload.acc)
    )
    if actions is None:
        return GatewayOut.deny("unknown access: give acc (1, 2, 3, 4) or action (publish, subscribe)")
    username, client_id, topic = payload.username, payload.clientid, payload.topic
    if username is None or topic is None or not is_valid_user_id(username):
        return GatewayOut.deny("username and topic are required")
    user = users.get(session, username)
    if user is None:
        return GatewayOut.deny("unknown user")
    principal = Principal(user.id, Role(user.role))
    if client_id is None or not client_id_allowed(principal, client_id):
        return GatewayOut.deny("client id does not belong to the user")
    if not all(check(principal, action, topic, retain=payload.retain) for action in actions):
        return GatewayOut.deny("topic not allowed")
    return GatewayOut.allow()


@router.post("/superuser", response_model=GatewayOut, response_model_exclude_none=True)
def superuser(payload: GatewayUserIn) -> GatewayOut:
    """Nobody bypasses the topic rules, not even the service account (it has rules of its own)."""
    del payload
    return GatewayOut.deny("no superusers")


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())
