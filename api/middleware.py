"""ASGI middleware of the API: request metrics and a cap on request bodies.

Plain ASGI (not BaseHTTPMiddleware), so that they cost a few function calls per request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messenger.metrics import Metrics

#: Largest request body read: a 64 KiB message body JSON-escaped still fits.
MAX_REQUEST_BYTES = 512 * 1024


class RequestMetrics:
    """Observes each HTTP request's duration by method, route template and status class
    (:meth:`Metrics.observe_http` keeps every label within a fixed set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_wrapper)
        finally:
            # the matched route's template (``/v1/blocks/{user}``), never the path itself
            route = getattr(scope.get("route"), "path", None)
            self._metrics.observe_http(scope["method"], route, status, time.perf_counter() - started)


class BodyLimit:
    """Answers 413 to a request body over ``limit`` bytes, declared or streamed.

    The body is read here (it is small: at most ``limit``) and replayed to the app, so that a
    streamed body that runs over is refused before the app has parsed any of it.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as Starlette expects
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body: dict[str, Any] = {
            "code": "payload_too_large",
            "detail": f"the request body is over {self._limit} bytes",
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": data})
