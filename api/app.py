"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors
from api.deps import ApiDeps
from api.limits import AddressLimit
from api.middleware import BodyLimit, RequestMetrics
from api.routes import (
    admin,
    blocks,
    conversations,
    gateway,
    lists,
    mass_messages,
    me,
    messages,
    ops,
    presence,
    tips,
    webapp,
)
from api.schemas import ErrorOut
from messenger import __version__

DESCRIPTION = """\
REST API of Messenger: history, conversations, unread and read marks, sending without a live
MQTT connection, mass messages to member lists, tips, blocks, presence, and operator
endpoints. MQTT carries the real-time side.

Every `/v1` call takes `Authorization: Bearer <token>`. Errors are JSON objects with a stable
`code` and a human `detail`.

The `/mqtt` endpoints are for brokers only (Mosquitto's plugin, EMQX, mosquitto-go-auth): they
need the shared `X-Gateway-Secret`.
"""

#: Where ``/docs`` (Swagger UI) and ``/redoc`` load their scripts, stylesheet and favicon from:
#: the copies the ``fastapi-offline`` package ships, not a CDN, so that the pages work on a
#: machine without internet.
DOCS_ASSETS_URL = "/docs/assets"


def create_app(deps: ApiDeps, *, internal_routes: bool = True) -> FastAPI:
    """Build the app around clients created at start-up (no module-level state).

    ``internal_routes=False`` leaves out the broker gateway (``/mqtt/*``) and ``/metrics``,
    which :func:`create_internal_app` then serves on a listener of their own.
    """
    app = FastAPIOffline(
        static_url=DOCS_ASSETS_URL,
        title="Messenger",
        version=__version__,
        description=DESCRIPTION,
        responses={
            303: {"description": "A browser page request without a token: redirected to the login page"},
            401: {"model": ErrorOut, "description": "Missing, invalid or revoked bearer token"},
            413: {"model": ErrorOut, "description": "Request body too large"},
            422: {"model": ErrorOut, "description": "Invalid request"},
            429: {"model": ErrorOut, "description": "Over a rate limit (docs/api.md); see Retry-After"},
        },
    )
    app.state.deps = deps
    errors.install(app)
    for module in (
        messages,
        mass_messages,
        tips,
        lists,
        conversations,
        blocks,
        presence,
        me,
        admin,
        ops,
        webapp,
    ):
        app.include_router(module.router)
    if internal_routes:
        app.include_router(ops.metrics_router)
        app.include_router(gateway.router)
    app.include_router(webapp.pages)  # last: the chat app at / (never under the API's prefixes)
    app.add_middleware(BodyLimit)
    app.add_middleware(AddressLimit, shield=deps.requests)  # outside BodyLimit: before the body is read
    app.add_middleware(RequestMetrics, metrics=deps.metrics)
    return app


def create_internal_app(deps: ApiDeps) -> FastAPI:
    """What only the internal network may reach: the broker gateway, health and ``/metrics``."""
    app = FastAPI(
        title="Messenger internal", version=__version__, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.deps = deps
    errors.install(app)
    for router in (ops.router, ops.metrics_router, gateway.router):
        app.include_router(router)
    app.add_middleware(BodyLimit)
    return app
