"""What the API needs at run time, built once at start-up and reached through dependencies."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from acl.exceptions import InvalidToken
from acl.principal import Principal
from acl.tokens import TokenVerifier
from api.errors import ApiError, LoginRedirect, next_url
from api.limits import RequestShield
from messenger.actions import Outbound
from messenger.admission import ConnectGate
from messenger.db import unit_of_work
from messenger.metrics import Metrics
from messenger.mqtt import Publisher
from messenger.presence import PresenceStore
from messenger.ratelimit import RateLimiter
from messenger.repositories import revocations
from messenger.services import Services, create_services
from messenger.services.billing import LedgerBilling
from messenger.services.lists import EmbeddedLists
from messenger.settings import ApiSettings, BrokerSettings
from messenger.tipping import TipPolicy

#: The chat app's build in a source checkout (``make web``): web/app/dist next to this package.
DEFAULT_WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "app" / "dist"


@dataclass(frozen=True, slots=True)
class WebApp:
    """What the chat app's routes need (MESSENGER_WEB_DIR, MESSENGER_PUBLIC_WS_URL, the dev secret)."""

    web_dir: Path | None = DEFAULT_WEB_DIR
    #: The broker's WebSocket URL for browsers; None: ``mqtt_ws_port`` on the page's host, if any.
    mqtt_url: str | None = None
    mqtt_ws_port: int | None = None
    #: Set only in development with the published secret: POST /v1/dev/token signs with it.
    dev_secret: str | None = None
    audience: str | None = None
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class ApiDeps:
    sessions: sessionmaker[Session]
    presence: PresenceStore
    verifier: TokenVerifier
    publisher: Publisher
    login_url: str
    limiter: RateLimiter | None = None
    metrics: Metrics = field(default_factory=Metrics)
    admin_key: str | None = None
    history_max_limit: int = 200
    gateway_secret: str | None = None
    #: Admits authenticated CONNECTs for the gateway; built on ``sessions`` when not given.
    gate: ConnectGate | None = None
    #: The list and billing services; the embedded ones on ``sessions`` when not given.
    services: Services | None = None
    tip_policy: TipPolicy = field(default_factory=TipPolicy)
    #: The API's public base URL, for the login redirect's ``next=`` (MESSENGER_PUBLIC_URL).
    public_url: str | None = None
    #: The per-user and per-address request buckets on ``limiter``; built when not given.
    shield: RequestShield | None = None
    #: The chat app: where its build is, its broker URL, development tokens (api/routes/webapp.py).
    app: WebApp = field(default_factory=WebApp)

    def __post_init__(self) -> None:
        if self.shield is None:
            object.__setattr__(self, "shield", RequestShield(self.limiter))
        if self.gate is None:
            object.__setattr__(self, "gate", ConnectGate(self.sessions))
        if self.services is None:
            embedded = Services(EmbeddedLists(self.sessions), LedgerBilling(self.sessions))
            object.__setattr__(self, "services", embedded)

    @property
    def requests(self) -> RequestShield:
        """The request buckets in force."""
        assert self.shield is not None  # noqa: S101 - set by __post_init__
        return self.shield

    @property
    def external(self) -> Services:
        """The list and billing services in force."""
        assert self.services is not None  # noqa: S101 - set by __post_init__
        return self.services


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_deps(
    settings: ApiSettings,
    *,
    sessions: sessionmaker[Session],
    presence: PresenceStore,
    verifier: TokenVerifier,
    publisher: Publisher,
    limiter: RateLimiter | None,
    metrics: Metrics,
    gate: ConnectGate | None = None,
    services: Services | None = None,
) -> ApiDeps:
    """The API's dependencies, from its settings and the clients its process created."""
    return ApiDeps(
        sessions,
        presence,
        verifier,
        publisher,
        settings.login_url,
        limiter=limiter,
        metrics=metrics,
        admin_key=_secret(settings.admin_key),
        history_max_limit=settings.history_max_limit,
        gateway_secret=_secret(settings.gateway_secret),
        gate=gate,
        services=services or create_services(settings, sessions),
        tip_policy=TipPolicy.of(settings),
        public_url=settings.public_url,
        app=WebApp(
            web_dir=settings.web_dir or DEFAULT_WEB_DIR,
            mqtt_url=settings.public_ws_url,
            mqtt_ws_port=_serve_ws_port(settings),
            dev_secret=settings.hs256_secret() if settings.issues_dev_tokens() else None,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        ),
    )


def _serve_ws_port(settings: ApiSettings) -> int | None:
    """`messenger serve`'s WebSocket port (its settings are also the embedded broker's)."""
    if isinstance(settings, BrokerSettings) and settings.ws_port > 0:
        return settings.ws_port
    return None


def get_deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


Deps = Annotated[ApiDeps, Depends(get_deps)]


def outbox(request: Request) -> list[Outbound]:
    """What this request publishes once its transaction has committed."""
    pending: list[Outbound] = getattr(request.state, "outbox", None) or []
    request.state.outbox = pending
    return pending


Outbox = Annotated[list[Outbound], Depends(outbox)]


def db_session(deps: Deps, pending: Outbox) -> Iterator[Session]:
    """One transaction per request; its outbox is published only after the commit."""
    with unit_of_work(deps.sessions) as session:
        yield session
    if pending:
        deps.publisher.publish(pending)


# scope="function": commit (and publish) before the response is sent, so a failed commit is the answer
DbSession = Annotated[Session, Depends(db_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A bearer token (JWT) from the login service.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.method == "GET" and "text/html" in accept and "application/json" not in accept


def _authenticate(request: Request, deps: ApiDeps, session: Session, credentials: Credentials) -> Principal:
    def unauthorized(detail: str) -> ApiError:
        return ApiError(
            401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}, login_url=deps.login_url
        )

    if credentials is None:
        if _wants_html(request):  # a browser opening an API page: send it to log in
            query = request.scope.get("query_string", b"").decode("utf-8", "replace")
            raise LoginRedirect(deps.login_url, next_url(deps.public_url, request.scope["path"], query))
        raise unauthorized("a bearer token is required")
    try:
        principal = deps.verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise unauthorized(f"invalid token: {exc.reason}") from exc
    if not principal.is_service:  # before the database is asked; the service accounts are ours
        deps.requests.user(principal.user_id)
    if revocations.is_revoked(session, principal):
        raise unauthorized("invalid token: revoked")
    return principal


def current_principal(
    request: Request, deps: Deps, session: DbSession, credentials: Credentials
) -> Principal:
    """The caller, from a valid, unrevoked bearer token."""
    return _authenticate(request, deps, session, credentials)


CurrentUser = Annotated[Principal, Depends(current_principal)]


def admin(
    request: Request,
    deps: Deps,
    session: DbSession,
    credentials: Credentials,
    x_admin_key: Annotated[
        str | None, Header(description="The operator key (MESSENGER_ADMIN_KEY), instead of a service token.")
    ] = None,
) -> str:
    """An operator: the admin key, or a token of the ``service`` role. Returns who, for the records."""
    if x_admin_key is not None:
        if deps.admin_key is not None and hmac.compare_digest(x_admin_key.encode(), deps.admin_key.encode()):
            return "admin-key"
        raise ApiError(
            401,
            "unauthorized",
            "invalid admin key",
            headers={"WWW-Authenticate": "Bearer"},
            login_url=deps.login_url,
        )
    principal = _authenticate(request, deps, session, credentials)
    if not principal.is_service:
        raise ApiError(403, "forbidden", "this needs the service role or the admin key")
    return principal.user_id


Admin = Annotated[str, Depends(admin)]
