"""The chat app (web/app) and what it needs from the API.

- ``GET /v1/config`` (public): the app's settings, read at start-up instead of baked into the build.
- ``POST /v1/dev/token`` (development with the published secret only, else 404): a token for any
  user id, for the sign-in page.
- ``/`` and ``/c/{user_id}``: the built app's ``index.html``; ``/assets/...`` and the other files of
  the build. Registered last, so it never shadows the API's own routes; a path under one of the
  API's prefixes that no route matched is the API's 404, never the app.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Final, Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from acl.principal import Role
from acl.tokens import issue_token
from api.deps import Deps
from api.errors import ApiError
from api.schemas import UserId
from messenger.constants import MAX_PAYLOAD_BYTES

router = APIRouter(tags=["app"])
pages = APIRouter(include_in_schema=False)

#: The development token's lifetime: a working session; the app asks for a new one after it.
DEV_TOKEN_TTL: Final = timedelta(hours=12)

#: First path segments the app never answers for (the API's, the docs', the gateway's).
RESERVED: Final = frozenset({"v1", "docs", "redoc", "openapi.json", "healthz", "readyz", "metrics", "mqtt"})


class AppPath(Convertor[str]):
    """The app's paths only: ``""`` (``/``), ``c/{user_id}``, ``assets/{file}`` and a top-level file
    with an extension (``favicon.svg``), never under one of :data:`RESERVED`. Nothing else even
    matches the app's route, so every other path answers exactly as without the app (404 with the
    ``unmatched`` metrics label, or 405 for a method a route lacks)."""

    regex = (
        "(?!(?:" + "|".join(re.escape(p) for p in sorted(RESERVED)) + ")(?:/|$))"
        r"(?:|c/[^/]+|assets/[^/]+|[^/]+\.[A-Za-z0-9]+)"
    )

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("app_path", AppPath())

#: The app's page: its own scripts and styles only (no inline script, so text that slipped into
#: markup could not run), fetch and WebSocket to any origin (the broker is on another port), and
#: workers from blob: URLs (mqtt.js runs its keep-alive timer in one, so that a background tab's
#: throttled timers do not drop the connection; Chromium refused it under script-src alone).
APP_CSP: Final = (
    "default-src 'self'; script-src 'self'; worker-src 'self' blob:; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https: ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

NOT_BUILT: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Messenger</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>
<h1>Messenger is running; the chat app is not built</h1>
<p>The API is up (<a href="/docs">/docs</a>). To use the chat app in the browser, build it once with
Node.js 20.19 or newer: <code>make web</code> in the source checkout (or <code>make serve</code>, which
builds it when Node.js is there), then reload this page.</p>
<p>Elsewhere, point <code>MESSENGER_WEB_DIR</code> at a built <code>web/app/dist</code>.</p>
</main></body></html>
"""


class Limits(BaseModel):
    max_body_bytes: int = Field(description="Largest message body, in UTF-8 bytes.")
    tip_min_amount: int
    tip_max_amount: int
    tip_currencies: list[str]


class AppConfig(BaseModel):
    api_url: str | None = Field(description="The API's base URL; null: the page's own origin.")
    mqtt_url: str | None = Field(description="MQTT over WebSocket; null: see mqtt_ws_port.")
    mqtt_ws_port: int | None = Field(
        description="With mqtt_url null: the WebSocket port on the page's own host (messenger serve)."
    )
    login_url: str
    dev_tokens: bool = Field(description="POST /v1/dev/token is on (development only).")
    limits: Limits


class DevTokenIn(BaseModel):
    user_id: UserId
    role: Literal["member", "creator"] = "member"


class DevTokenOut(BaseModel):
    token: str
    expires_in: int


@router.get("/v1/config", response_model=AppConfig)
def config(deps: Deps) -> AppConfig:
    """The chat app's settings: where the API and the broker are, the limits it checks before
    sending, and whether it may offer development tokens. Public: no token needed."""
    app = deps.app
    policy = deps.tip_policy
    return AppConfig(
        api_url=deps.public_url,
        mqtt_url=app.mqtt_url,
        mqtt_ws_port=app.mqtt_ws_port if app.mqtt_url is None else None,
        login_url=deps.login_url,
        dev_tokens=app.dev_secret is not None,
        limits=Limits(
            max_body_bytes=MAX_PAYLOAD_BYTES,
            tip_min_amount=policy.min_amount,
            tip_max_amount=policy.max_amount,
            tip_currencies=sorted(policy.currencies),
        ),
    )


@router.post("/v1/dev/token", response_model=DevTokenOut, responses={404: {"description": "Not development"}})
def dev_token(body: DevTokenIn, deps: Deps) -> DevTokenOut:
    """A token for any user, signed with the published development secret. Only in development
    with that secret (MESSENGER_ENVIRONMENT=development and no secret or key of a login service);
    everywhere else this endpoint does not exist (404)."""
    secret = deps.app.dev_secret
    if secret is None:
        raise ApiError(404, "not_found", "Not Found")
    token = issue_token(
        secret,
        body.user_id,
        role=Role(body.role),
        ttl=DEV_TOKEN_TTL,
        audience=deps.app.audience,
        issuer=deps.app.issuer,
    )
    return DevTokenOut(token=token, expires_in=int(DEV_TOKEN_TTL.total_seconds()))


@pages.get("/{path:app_path}")
def app_page(path: str, deps: Deps) -> Response:
    """The app: its files, and ``index.html`` for ``/`` and ``/c/{user_id}``."""
    root = deps.app.web_dir
    index = root / "index.html" if root is not None else None
    is_page = path == "" or path.startswith("c/")  # AppPath lets through c/{one segment} only
    if index is None or not index.is_file():
        if is_page:
            headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
            return HTMLResponse(NOT_BUILT, headers=headers)
        raise ApiError(404, "not_found", "Not Found")
    if is_page:
        return FileResponse(index, media_type="text/html", headers=_page_headers())
    file = _file_in(root, path) if root is not None else None
    if file is None:
        raise ApiError(404, "not_found", "Not Found")
    # Vite names what it builds under assets/ by content hash: a new build is a new name
    cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
    return FileResponse(file, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


def _page_headers() -> dict[str, str]:
    return {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": APP_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def _file_in(root: Path, path: str) -> Path | None:
    """``root/path`` when it is a file inside ``root`` (no ``..``, no link out of it)."""
    if not path or "\\" in path or "\x00" in path or any(part in ("", ".", "..") for part in path.split("/")):
        return None
    try:
        base = root.resolve(strict=True)
        candidate = (base / path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate
