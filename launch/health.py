"""The internal listener of the handler, bridge and worker processes: liveness, readiness, metrics.

``MESSENGER_INTERNAL_PORT`` turns it on (``messenger serve`` leaves it off). It answers the same
three paths as the API, so one probe configuration fits every role:

- ``GET /healthz``: 200 while the process runs (liveness);
- ``GET /readyz``: 200 when every dependency check passes, else 503 with what failed;
- ``GET /metrics``: the process's Prometheus metrics.

These processes are threads around paho clients, with no event loop, so a standard-library
threading HTTP server is all they need. Keep the port on the internal network.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from messenger.metrics import CONTENT_TYPE_LATEST, Metrics

logger = logging.getLogger(__name__)

#: A readiness check: "ok", or what is wrong.
Check = Callable[[], str]

#: A request that sends nothing for this long is dropped (a probe answers in milliseconds).
REQUEST_TIMEOUT_S = 5.0


def flag_check(flag: Callable[[], bool], failure: str) -> Check:
    return lambda: "ok" if flag() else f"error: {failure}"


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` from a thread of its own."""

    def __init__(self, host: str, port: int, *, checks: Mapping[str, Check], metrics: Metrics) -> None:
        self._checks = dict(checks)
        self._metrics = metrics
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        logger.info("internal listener on %s:%d (/healthz, /readyz, /metrics)", *self.address)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results = {name: check() for name, check in self._checks.items()}
        return all(value == "ok" for value in results.values()), results

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S
            server_version = "messenger"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._json(HTTPStatus.OK, {"status": "ok"})
                elif path == "/readyz":
                    ready, checks = server.readiness()
                    status = "ready" if ready else "unavailable"
                    code = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
                    self._json(code, {"status": status, "checks": checks})
                elif path == "/metrics":
                    self._send(HTTPStatus.OK, server._metrics.exposition(), CONTENT_TYPE_LATEST)
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"code": "not_found", "detail": "Not Found"})

            def _json(self, code: HTTPStatus, body: dict[str, object]) -> None:
                self._send(code, json.dumps(body).encode(), "application/json")

            def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("internal listener: %s", format % args)

        return Handler
