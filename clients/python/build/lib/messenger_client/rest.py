"""The REST API (docs/api.md) on ``httpx.AsyncClient``: history, read marks, sending without a
live connection, conversations, blocks, presence, tips, lists and mass messages.

Every call sends the current token; a ``401`` fetches a new one and tries once more. Errors
are :class:`ApiError` with the API's stable ``code`` (``RateLimitedError`` with ``retry_after``,
``TipFailedError`` with ``billing_url``); no answer at all is :class:`TransportError`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

from . import parse
from .events import Message
from .exceptions import ApiError, RateLimitedError, TipFailedError, TransportError
from .models import (
    Block,
    Conversation,
    MassMessage,
    Me,
    MemberList,
    NamePage,
    Page,
    PresenceInfo,
    ReadMark,
    TipRecord,
)
from .tokens import TokenProvider, TokenSource
from .topics import check_client_id, check_user_id

T = TypeVar("T")


def _segment(value: str) -> str:
    """A path segment, escaped (list ids are any printable ASCII)."""
    return quote(value, safe="")


def _params(**values: object) -> dict[str, str]:
    return {k.rstrip("_"): str(v) for k, v in values.items() if v is not None}


class RestClient:
    """The REST API of one user. ``async with RestClient(url, get_token) as rest: ...``, or
    ``Client.rest`` (same token source as the MQTT connection)."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource | TokenProvider,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens if isinstance(tokens, TokenSource) else TokenSource(tokens)
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client, if this object made it."""
        if self._own_http:
            await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Call ``path`` and return its decoded JSON (None for an empty answer)."""
        token = await self._tokens.current()
        response = await self._send(method, path, token, params, json, headers)
        if response.status_code == 401:
            token = await self._tokens.refresh(token)
            response = await self._send(method, path, token, params, json, headers)
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "invalid_answer", "the answer is not JSON") from None

    async def _send(
        self,
        method: str,
        path: str,
        token: str,
        params: dict[str, str] | None,
        json: dict[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method,
                f"{self.base_url}{path}",
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path}: {exc}") from exc

    async def _get(self, path: str, parser: Callable[[Any], T], **params: object) -> T:
        return parser(await self.request("GET", path, params=_params(**params)))

    # --- messages ---

    async def history(
        self, peer: str, *, before: int | None = None, after: int | None = None, limit: int | None = None
    ) -> Page[Message]:
        """One page of the conversation with ``peer``: newest first (older pages with
        ``before=page.next_before``), or oldest first with only ``after``."""
        check_user_id(peer)
        return await self._get(
            "/v1/messages", parse.message_page, with_=peer, before=before, after=after, limit=limit
        )

    async def iter_history(self, peer: str, *, page_size: int = 50) -> AsyncIterator[Message]:
        """The whole conversation with ``peer``, newest first, page by page."""
        before: int | None = None
        while True:
            page = await self.history(peer, before=before, limit=page_size)
            for message in page.items:
                yield message
            if page.next_before is None:
                return
            before = page.next_before

    async def unread(self, *, after: int | None = None, limit: int | None = None) -> Page[Message]:
        """Unread messages from everyone, oldest first (``after=page.next_after`` for more)."""
        return await self._get("/v1/messages/unread", parse.message_page, after=after, limit=limit)

    async def mark_read(
        self, *, up_to: int | None = None, ids: list[int] | None = None, peer: str | None = None
    ) -> list[ReadMark]:
        """Mark read every message up to ``up_to``, or exactly ``ids`` (only from ``peer``, if given)."""
        if (up_to is None) == (ids is None):
            raise ValueError("give exactly one of up_to and ids")
        body: dict[str, Any] = {"up_to": up_to} if up_to is not None else {"ids": ids}
        if peer is not None:
            body["with"] = check_user_id(peer)
        return parse.read_marks(await self.request("POST", "/v1/messages/read", json=body))

    async def send_message(self, to: str, body: str, *, client_id: str | None = None) -> Message:
        """Send over HTTP. The client id (a new uuid when not given) makes a retry safe: the same
        id, recipient and body answer the stored message."""
        client_id = check_client_id(client_id or uuid.uuid4().hex)
        payload = {"to": check_user_id(to, "recipient"), "body": body, "client_id": client_id}
        return parse.message(await self.request("POST", "/v1/messages", json=payload))

    async def send_to_list(self, list_id: str, body: str, *, client_id: str | None = None) -> MassMessage:
        """A creator's mass message over HTTP: queued for fan-out."""
        client_id = check_client_id(client_id or uuid.uuid4().hex)
        payload = {"list": check_client_id(list_id, "list id"), "body": body, "client_id": client_id}
        return parse.mass_message(await self.request("POST", "/v1/messages", json=payload))

    async def conversations(
        self, *, before: int | None = None, limit: int | None = None
    ) -> Page[Conversation]:
        return await self._get("/v1/conversations", parse.conversation_page, before=before, limit=limit)

    # --- blocks ---

    async def block(self, user: str) -> Block:
        return parse.block(await self.request("PUT", f"/v1/blocks/{check_user_id(user)}"))

    async def unblock(self, user: str) -> None:
        await self.request("DELETE", f"/v1/blocks/{check_user_id(user)}")

    async def is_blocked(self, user: str) -> bool:
        try:
            await self.request("GET", f"/v1/blocks/{check_user_id(user)}")
        except ApiError as exc:
            if exc.code == "not_blocked":
                return False
            raise
        return True

    async def blocks(self, *, after: str | None = None, limit: int | None = None) -> NamePage[Block]:
        return await self._get("/v1/blocks", parse.block_page, after=after, limit=limit)

    # --- presence ---

    async def presence(self, user: str) -> PresenceInfo:
        return await self._get(f"/v1/presence/{check_user_id(user)}", parse.presence_info)

    async def presence_of(self, users: list[str]) -> list[PresenceInfo]:
        body = {"users": [check_user_id(u) for u in users]}
        return parse.presence_list(await self.request("POST", "/v1/presence/query", json=body))

    # --- tips ---

    async def tip(
        self, to: str, amount: int, currency: str, *, body: str | None = None, client_id: str | None = None
    ) -> TipRecord:
        """Tip a creator. ``succeeded`` or ``pending`` (settled later; the devices get the
        outcome as an event); a declined charge raises TipFailedError with ``billing_url``."""
        payload: dict[str, Any] = {
            "to": check_user_id(to, "recipient"),
            "amount": amount,
            "currency": currency,
            "client_id": check_client_id(client_id or uuid.uuid4().hex),
        }
        if body is not None:
            payload["body"] = body
        return parse.tip_record(await self.request("POST", "/v1/tips", json=payload))

    async def tips_sent(self, *, before: int | None = None, limit: int | None = None) -> Page[TipRecord]:
        return await self._get("/v1/tips/sent", parse.tip_page, before=before, limit=limit)

    async def tips_received(self, *, before: int | None = None, limit: int | None = None) -> Page[TipRecord]:
        return await self._get("/v1/tips/received", parse.tip_page, before=before, limit=limit)

    # --- lists and mass messages (creators) ---

    async def create_list(self, name: str) -> MemberList:
        return parse.member_list(await self.request("POST", "/v1/lists", json={"name": name}))

    async def lists(self, *, after: str | None = None, limit: int | None = None) -> NamePage[MemberList]:
        return await self._get("/v1/lists", parse.member_list_page, after=after, limit=limit)

    async def delete_list(self, list_id: str) -> None:
        await self.request("DELETE", f"/v1/lists/{_segment(list_id)}")

    async def add_members(self, list_id: str, members: list[str]) -> int:
        """Add members; returns how many were not in the list yet."""
        body = {"members": [check_user_id(m, "member") for m in members]}
        answer = parse.Fields(
            await self.request("POST", f"/v1/lists/{_segment(list_id)}/members", json=body), "members added"
        )
        return answer.integer("added")

    async def remove_member(self, list_id: str, user: str) -> None:
        await self.request("DELETE", f"/v1/lists/{_segment(list_id)}/members/{check_user_id(user)}")

    async def members(
        self, list_id: str, *, after: str | None = None, limit: int | None = None
    ) -> NamePage[str]:
        return await self._get(
            f"/v1/lists/{_segment(list_id)}/members", parse.members_page, after=after, limit=limit
        )

    async def mass_message(self, mass_message_id: int) -> MassMessage:
        return await self._get(f"/v1/mass-messages/{int(mass_message_id)}", parse.mass_message)

    async def mass_messages(
        self, *, before: int | None = None, limit: int | None = None
    ) -> Page[MassMessage]:
        return await self._get("/v1/mass-messages", parse.mass_message_page, before=before, limit=limit)

    async def cancel_mass_message(self, mass_message_id: int) -> MassMessage:
        answer = await self.request("POST", f"/v1/mass-messages/{int(mass_message_id)}/cancel")
        return parse.mass_message(answer)

    # --- me ---

    async def me(self) -> Me:
        return await self._get("/v1/me", parse.me)


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    status = response.status_code
    code = body.get("code") if isinstance(body.get("code"), str) else "http_error"
    detail = body.get("detail") if isinstance(body.get("detail"), str) else response.reason_phrase
    assert isinstance(code, str) and isinstance(detail, str)  # noqa: S101 - narrowed above
    if status == 429:
        retry_after = body.get("retry_after")
        if not isinstance(retry_after, int | float) or isinstance(retry_after, bool):
            try:
                retry_after = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                retry_after = 1.0
        return RateLimitedError(status, code, detail, body, float(retry_after))
    if status == 402:
        url = body.get("billing_url")
        return TipFailedError(status, code, detail, body, url if isinstance(url, str) else None)
    return ApiError(status, code, detail, body)
