"""The REST API's request buckets: per client address (every public request) and per user
(every authenticated one), on the shared :class:`~messenger.ratelimit.RateLimiter`.

They shield the API from floods, ahead of the per-action buckets (sends, tips, read marks...).
Unlike those, they fail open: when the limiter's store (Redis) does not answer, requests go on
unlimited for a few seconds rather than every read that needs only the database failing with
it. Health checks, ``/metrics`` and the brokers' gateway are exempt: load balancers, Prometheus
and the brokers call them from a few addresses, and the gateway has an admission gate of its own.

The client address is the ASGI scope's ``client``: behind a reverse proxy, uvicorn puts the
address from ``X-Forwarded-For`` there when the proxy is trusted (``FORWARDED_ALLOW_IPS``,
loopback by default); otherwise every request seems to come from the proxy.
"""

from __future__ import annotations

import logging
from typing import Final

import anyio.to_thread
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body, rejected
from messenger import ratelimit
from messenger.exceptions import StoreUnavailable
from messenger.ratelimit import Action, Bucket, RateLimiter
from messenger.services.http import CircuitBreaker

logger = logging.getLogger(__name__)

#: Paths no address bucket limits (exactly these, or under the prefixes).
EXEMPT_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
EXEMPT_PREFIXES: Final = ("/mqtt/",)
#: How long the request buckets stay off after the limiter's store failed.
FAIL_OPEN_S: Final = 5.0


class RequestShield:
    """The ``request`` (per user) and ``address`` (per client address) buckets, failing open."""

    def __init__(self, limiter: RateLimiter | None) -> None:
        self._limiter = limiter
        self._breaker = CircuitBreaker(threshold=1, reset_s=FAIL_OPEN_S)

    def enabled(self, action: Action) -> bool:
        return self._limiter is not None and self._limiter.enabled(action)

    def wait(self, bucket: Bucket) -> float | None:
        """Take a token of ``bucket``: None when the request may go, else the seconds until it could."""
        if not self.enabled(bucket[0]) or not self._breaker.allow():
            return None
        try:
            wait = ratelimit.acquire(self._limiter, [bucket]).take(bucket)
        except StoreUnavailable as exc:
            self._breaker.failed()
            logger.warning("request limits off for %.0fs: %s", FAIL_OPEN_S, exc)
            return None
        self._breaker.succeeded()
        return wait

    def user(self, user_id: str) -> None:
        """Take a token of ``user_id``'s ``request`` bucket; raises ``rate_limited`` when empty."""
        wait = self.wait((Action.REQUEST, user_id))
        if wait is not None:
            raise ratelimit.refusal(Action.REQUEST, wait)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AddressLimit:
    """ASGI middleware: a ``429`` for a request over its client address's bucket, before the
    body is read or the token checked."""

    def __init__(self, app: ASGIApp, shield: RequestShield) -> None:
        self._app = app
        self._shield = shield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._shield.enabled(Action.ADDRESS) or _exempt(scope["path"]):
            await self._app(scope, receive, send)
            return
        bucket = (Action.ADDRESS, client_address(scope))
        wait = await anyio.to_thread.run_sync(self._shield.wait, bucket)  # Redis: off the event loop
        if wait is None:
            await self._app(scope, receive, send)
            return
        error = rejected(ratelimit.refusal(Action.ADDRESS, wait))
        body = error_body(error.code, error.detail, **error.extra)
        await JSONResponse(body, error.status, error.headers)(scope, receive, send)


def _exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)
