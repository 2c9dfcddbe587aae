"""How every REST listener is served: one uvicorn configuration with the connection limits, and
read deadlines that uvicorn lacks.

uvicorn closes a connection that stays idle *between* requests (``timeout_keep_alive``), answers
503 beyond ``limit_concurrency`` connections, and caps a request's line and headers at h11's
16 KiB; but it waits without end for the first request of a new connection, for headers that
arrive a line at a time, and for a body shorter than its ``Content-Length``: each such socket
held open for as long as the client likes. :class:`DeadlineH11Protocol` adds the two deadlines.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from messenger.settings import ApiSettings

logger = logging.getLogger(__name__)

#: Longest request line plus headers (h11's own default, stated here): beyond it, 400.
MAX_HEADER_BYTES = 16 * 1024


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the read deadlines of :class:`DeadlineH11Protocol`."""

    def __init__(
        self, app: ASGIApp, *, header_timeout_s: float, body_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s


def server_config(app: ASGIApp, settings: ApiSettings) -> ServerConfig:
    """The configuration of every uvicorn server (the API's public and internal listeners, and
    the REST API of ``messenger serve``), with the timeouts and limits of ``settings``."""
    return ServerConfig(
        app,
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        http=DeadlineH11Protocol,
        timeout_keep_alive=settings.http_keepalive_s,
        # uvicorn answers 503 once the connections, counting the one asking, reach the limit
        limit_concurrency=settings.http_max_connections + 1,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="off",
    )


def _timeout_answer(what: str, seconds: float) -> bytes:
    body = json.dumps(
        {"code": "request_timeout", "detail": f"the request's {what} did not arrive within {seconds:g}s"},
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for reading a request.

    A request's line and headers must arrive within ``header_timeout_s`` of the connection opening
    (or, on a kept-alive connection, of the next request's first byte: until then the keep-alive
    timeout applies), and its body within ``body_timeout_s`` of its headers. Past a deadline the
    client gets 408 unless a response has started, and the connection is closed. The deadlines
    are totals, not idle times, so a header line every few seconds does not hold a socket open.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, ServerConfig):
            raise TypeError("DeadlineH11Protocol needs a launch.http_server.ServerConfig")
        self._timeouts = {"headers": config.header_timeout_s, "body": config.body_timeout_s}
        self._waiting_for: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for("headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow(data_pending=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow(data_pending=bool(self.conn.trailing_data[0]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._wait_for(None)
        super().connection_lost(exc)

    def _follow(self, *, data_pending: bool) -> None:
        """Start, keep or stop the deadline after h11 has taken what arrived."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed, or upgraded
            self._wait_for(None)
        elif self.conn.their_state is h11.IDLE:
            # a kept-alive connection between requests waits under the keep-alive timeout; the
            # next request's headers are due from its first byte on
            if data_pending and self._waiting_for != "headers":
                self._wait_for("headers")
            elif not data_pending and self._waiting_for == "body":
                self._wait_for(None)
        elif self.conn.their_state is h11.SEND_BODY:
            if self._waiting_for != "body":
                self._wait_for("body")
        else:  # the request is in (DONE), or the connection is ending
            self._wait_for(None)

    def _wait_for(self, part: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._waiting_for = part
        if part is not None:
            self._deadline = self.loop.call_later(self._timeouts[part], self._expired, part)

    def _expired(self, part: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        logger.debug("closing a connection from %s: its request's %s came too slowly", self.client, part)
        if part == "headers" or not self.cycle.response_started:  # no answer to this request yet
            self.transport.write(_timeout_answer(part, self._timeouts[part]))
        self.transport.close()
