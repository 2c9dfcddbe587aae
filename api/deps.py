"""What the API needs at run time, built once at start-up and reached through dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from acl.exceptions import InvalidToken
from acl.principal import Principal
from acl.tokens import TokenVerifier
from api.errors import ApiError
from messenger.db import unit_of_work
from messenger.presence import PresenceStore


@dataclass(frozen=True, slots=True)
class ApiDeps:
    sessions: sessionmaker[Session]
    presence: PresenceStore
    verifier: TokenVerifier
    login_url: str
    history_max_limit: int = 200


def get_deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


_bearer = HTTPBearer(auto_error=False, description="A bearer token (JWT) from the login service.")


def current_principal(
    deps: Annotated[ApiDeps, Depends(get_deps)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    def unauthorized(detail: str) -> ApiError:
        return ApiError(
            401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}, login_url=deps.login_url
        )

    if credentials is None:
        raise unauthorized("a bearer token is required")
    try:
        return deps.verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise unauthorized(f"invalid token: {exc.reason}") from exc


def db_session(deps: Annotated[ApiDeps, Depends(get_deps)]) -> Iterator[Session]:
    """One transaction per request."""
    with unit_of_work(deps.sessions) as session:
        yield session


CurrentUser = Annotated[Principal, Depends(current_principal)]
# scope="function": commit before the response is sent, so a failed commit is the answer
DbSession = Annotated[Session, Depends(db_session, scope="function")]
Deps = Annotated[ApiDeps, Depends(get_deps)]
