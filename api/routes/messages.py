"""Messages: history, unread, sending and read marks."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session

from acl.principal import Principal
from api.deps import ApiDeps, CurrentUser, DbSession, Deps, Outbox
from api.errors import ApiError
from api.schemas import MassMessageOut, MessageOut, MessagePage, ReadIn, ReadMark, ReadOut, SendIn, UserId
from messenger import actions, fanout, ratelimit
from messenger.constants import MAX_MESSAGE_ID, MAX_PAYLOAD_BYTES
from messenger.exceptions import Rejected
from messenger.models import MassMessage, Message
from messenger.protocol import ClientMsgId
from messenger.ratelimit import Action
from messenger.repositories import mass_messages, messages, users

router = APIRouter(prefix="/v1/messages", tags=["messages"])

Before = Annotated[
    int | None, Query(ge=1, le=MAX_MESSAGE_ID, description="Only messages with a smaller id (older).")
]
After = Annotated[
    int | None, Query(ge=0, le=MAX_MESSAGE_ID, description="Only messages with a larger id (newer).")
]


@router.get("", response_model=MessagePage)
def history(
    principal: CurrentUser,
    session: DbSession,
    deps: Deps,
    peer: Annotated[UserId, Query(alias="with", description="The other user.")],
    before: Before = None,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> MessagePage:
    """One conversation of the caller, by keyset on the message id.

    Newest first, paging back with ``before``; with only ``after``, oldest first from that id,
    paging forward with ``next_after``. Messages the peer sent while the caller blocked them
    are not shown.
    """
    _check_limit(deps, limit)
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


@router.get("/unread", response_model=MessagePage)
def unread(
    principal: CurrentUser,
    session: DbSession,
    deps: Deps,
    after: After = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> MessagePage:
    """The caller's unread messages from everyone, oldest first; page on with ``next_after``."""
    _check_limit(deps, limit)
    rows = messages.unread(session, principal.user_id, after=after, limit=limit + 1, unread_only=True)
    more = len(rows) > limit
    rows = rows[:limit]
    return MessagePage(
        messages=[MessageOut.of(m) for m in rows], next_before=None, next_after=rows[-1].id if more else None
    )


@router.post(
    "",
    response_model=MessageOut | MassMessageOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": MessageOut, "description": "A repeat of an earlier send: the original message"},
        202: {"model": MassMessageOut, "description": "A list message, queued for fan-out"},
        400: {"description": "Messaging yourself"},
        403: {"description": "A list message from a member, or to a list the sender does not own"},
        404: {"description": "No such recipient"},
        409: {"description": "The idempotency key was used for a different message"},
        413: {"description": "The body is over 64 KiB"},
        429: {"description": "Too many messages; see retry_after"},
        503: {"description": "The list service is unavailable"},
    },
)
def send(
    principal: CurrentUser,
    session: DbSession,
    deps: Deps,
    pending: Outbox,
    payload: SendIn,
    response: Response,
    idempotency_key: Annotated[
        ClientMsgId | None,
        Header(description="Makes a retry safe: the same key returns the original message."),
    ] = None,
) -> MessageOut | MassMessageOut:
    """Send a 1:1 message through the same checks and delivery as MQTT.

    The recipient gets it on ``users/{uid}/messages`` (or through catch-up when offline), and
    the sender's devices an ``ack`` event. A message to someone who blocked the sender is
    stored and not delivered, and this answer looks the same.

    With ``list`` instead of ``to``, a creator messages one of their lists: the answer is the
    queued mass message (202; 200 for a repeat), whose progress ``GET /v1/mass-messages/{id}``
    shows. Every member who has not blocked the sender gets a copy.
    """
    try:
        if payload.list is not None:
            mass, created, out = _send_to_list(principal, session, deps, payload, idempotency_key)
            pending.extend(out)
            response.status_code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
            return MassMessageOut.of(mass)
        message, created, out = _send(principal, session, deps, payload, idempotency_key)
    except Rejected as exc:
        deps.metrics.messages_rejected.labels(exc.code, "http").inc()
        raise
    pending.extend(out)
    actions.count(deps.metrics, out, via="http")
    if not created:
        response.status_code = status.HTTP_200_OK
    return MessageOut.of(message)


def _checked(principal: Principal, payload: SendIn, idempotency_key: str | None) -> str:
    """The client id of a send, once the sender and the body size are acceptable."""
    if principal.is_service:
        raise Rejected("the service account does not send messages", code="forbidden")
    check_body(payload.body)
    return resolve_client_id(payload.client_id, idempotency_key)


def check_body(body: str) -> None:
    size = len(body.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise Rejected(f"body is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}", code="payload_too_large")


def _send_to_list(
    principal: Principal, session: Session, deps: ApiDeps, payload: SendIn, idempotency_key: str | None
) -> tuple[MassMessage, bool, list[actions.Outbound]]:
    assert payload.list is not None  # noqa: S101 - the caller checked
    client_id = _checked(principal, payload, idempotency_key)
    found = mass_messages.by_client_ids(session, [(principal.user_id, client_id)])
    if not found:  # a retry is answered without asking the list service or the rate limiter again
        # the token first (as the handler does): over the limit, the list service is not asked
        ratelimit.spend(deps.limiter, Action.SEND, principal.user_id)
        info = fanout.check_list(deps.external.lists, principal.user_id, principal.role.value, payload.list)
        request = fanout.MassRequest(
            principal.user_id, client_id, payload.list, payload.body, info.member_count
        )
    else:
        request = fanout.MassRequest(principal.user_id, client_id, payload.list, payload.body)
    users.ensure(session, principal.user_id, principal.role.value)
    (queued,), out = fanout.queue_mass_messages(session, [request])
    if queued.error is not None:
        raise queued.error
    assert queued.mass_message is not None  # noqa: S101 - a result without an error has its row
    return queued.mass_message, queued.created, _replay(deps, principal, out) if found else out


def _replay(deps: ApiDeps, principal: Principal, out: list[actions.Outbound]) -> list[actions.Outbound]:
    """What a retry of a stored send publishes: the message and ack again (the first publish may
    have been lost), within the sender's ``resend`` bucket; beyond it nothing, and the answer
    is the stored result alone, so that a retry loop cannot make the recipient's devices ring
    again and again. Never a 429: the retry did get its answer."""
    wait = ratelimit.acquire(deps.limiter, [(Action.RESEND, principal.user_id)]).take(
        (Action.RESEND, principal.user_id)
    )
    return out if wait is None else []


def _send(
    principal: Principal, session: Session, deps: ApiDeps, payload: SendIn, idempotency_key: str | None
) -> tuple[Message, bool, list[actions.Outbound]]:
    assert payload.to is not None  # noqa: S101 - the caller checked
    client_id = _checked(principal, payload, idempotency_key)
    request = actions.SendRequest(principal.user_id, client_id, payload.to, payload.body)
    # a retry of a stored message does not spend the sender's send budget
    replayed = bool(messages.by_keys(session, [(request.sender, client_id, request.to)]))
    if not replayed:
        _, limited = actions.rate_limit(deps.limiter, [request])
        if limited:
            raise limited[0][1]
    users.ensure(session, principal.user_id, principal.role.value)
    (result,), out = actions.send_messages(session, [request])
    if result.error is not None:
        raise result.error
    assert result.message is not None  # noqa: S101 - a result without an error has its message
    return result.message, result.created, _replay(deps, principal, out) if replayed else out


@router.post(
    "/read", response_model=ReadOut, responses={429: {"description": "Too many read marks; see retry_after"}}
)
def mark_read(
    principal: CurrentUser, session: DbSession, deps: Deps, pending: Outbox, payload: ReadIn
) -> ReadOut:
    """Mark messages to the caller read; each sender gets a ``read`` event over MQTT."""
    ratelimit.spend(deps.limiter, Action.READ, principal.user_id)
    marked, out = actions.mark_read(
        session, principal.user_id, up_to=payload.up_to, ids=payload.ids, peer=payload.peer
    )
    pending.extend(out)
    marks = [ReadMark.model_validate({"from": s, "up_to": top}) for s, top in sorted(marked.items())]
    return ReadOut(read=marks)


def resolve_client_id(in_body: str | None, in_header: str | None) -> str:
    if in_body is not None and in_header is not None and in_body != in_header:
        raise ApiError(422, "invalid_request", "the Idempotency-Key header and client_id differ")
    return in_body or in_header or uuid.uuid4().hex


def _check_limit(deps: Deps, limit: int) -> None:
    if limit > deps.history_max_limit:
        raise ApiError(422, "invalid_request", f"limit is at most {deps.history_max_limit}")
