"""The list service: who owns a member list, and its members, page by page.

The HTTP contract assumed of the real service is in ``docs/services.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import is_valid_user_id
from messenger.db import unit_of_work
from messenger.exceptions import ServiceUnavailable
from messenger.repositories import lists
from messenger.services.http import HttpService


@dataclass(frozen=True, slots=True)
class ListInfo:
    id: str
    owner: str
    member_count: int | None = None


@dataclass(frozen=True, slots=True)
class MemberPage:
    """Member ids in the service's order; ``next`` continues after them (None: the last page)."""

    members: list[str]
    next: str | None


class ListService(Protocol):
    def get(self, list_id: str) -> ListInfo | None:
        """The list, or None when there is no such list. Raises ServiceUnavailable."""
        ...

    def members(self, list_id: str, *, after: str | None, limit: int) -> MemberPage:
        """Up to ``limit`` member ids after the cursor ``after``. Raises ServiceUnavailable."""
        ...


class EmbeddedLists:
    """Lists kept in the project's database (``member_lists``, ``list_members``)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get(self, list_id: str) -> ListInfo | None:
        with unit_of_work(self._sessions) as session:
            row = lists.get(session, list_id)
            if row is None:
                return None
            return ListInfo(row.id, row.owner_id, lists.count(session, list_id))

    def members(self, list_id: str, *, after: str | None, limit: int) -> MemberPage:
        with unit_of_work(self._sessions) as session:
            ids = lists.member_ids(session, list_id, after=after, limit=limit)
        cursor = ids[-1] if len(ids) == limit else None
        return MemberPage([m for m in ids if is_valid_user_id(m)], cursor)


class HttpLists:
    """``GET /lists/{id}`` and ``GET /lists/{id}/members?after=&limit=`` on the list service."""

    def __init__(self, http: HttpService) -> None:
        self._http = http

    def get(self, list_id: str) -> ListInfo | None:
        response = self._http.request("GET", f"/lists/{_segment(list_id)}")
        if response.status_code == 404:
            return None
        data = _json(response, "lists")
        owner, count = data.get("owner"), data.get("member_count")
        if not isinstance(owner, str) or not (count is None or isinstance(count, int)):
            raise ServiceUnavailable(f"the lists service answered an unexpected list: {str(data)[:200]}")
        return ListInfo(list_id, owner, count)

    def members(self, list_id: str, *, after: str | None, limit: int) -> MemberPage:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        response = self._http.request("GET", f"/lists/{_segment(list_id)}/members", params=params)
        if response.status_code == 404:
            return MemberPage([], None)  # the list went away during the fan-out: nothing more to send
        data = _json(response, "lists")
        members, cursor = data.get("members"), data.get("next")
        if not isinstance(members, list) or not (cursor is None or isinstance(cursor, str)):
            raise ServiceUnavailable(f"the lists service answered an unexpected page: {str(data)[:200]}")
        # ids the product cannot address (not a user id) are dropped here, not in the fan-out
        return MemberPage([m for m in members if isinstance(m, str) and is_valid_user_id(m)], cursor or None)

    def close(self) -> None:
        self._http.close()


def _segment(list_id: str) -> str:
    # quote so that no id can change the path; "." and ".." would still read as path steps
    segment = quote(list_id, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _json(response: httpx.Response, service: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise ServiceUnavailable(f"the {service} service answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError as exc:
        raise ServiceUnavailable(f"the {service} service answered something that is not JSON") from exc
    if not isinstance(data, dict):
        raise ServiceUnavailable(f"the {service} service answered a JSON {type(data).__name__}")
    return data
