"""One HTTP client per external service: timeouts, retries with backoff, a circuit breaker."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from messenger.exceptions import ServiceUnavailable

logger = logging.getLogger(__name__)

#: Answers worth another try: the service is overloaded or restarting.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class CircuitBreaker:
    """Fails fast after ``threshold`` failures in a row, for ``reset_s``; then lets one call try.

    A service that is down would otherwise cost every caller its full timeout and retries,
    which on the handler's threads means every command waits on it.
    """

    def __init__(
        self, threshold: int = 5, reset_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        with self._lock:
            return self._opened_at is not None and self._clock() - self._opened_at < self._reset_s

    def allow(self) -> bool:
        """True when a call may go: closed, or half-open (one trial after ``reset_s``)."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at >= self._reset_s:
                self._opened_at = self._clock()  # the trial call; others keep failing fast
                return True
            return False

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self._threshold:
                if self._opened_at is None:
                    logger.warning("circuit opened after %d failures in a row", self._failures)
                self._opened_at = self._clock()


class HttpService:
    """JSON over HTTP to one service at ``base_url``.

    :meth:`request` retries transport errors, timeouts and :data:`RETRYABLE_STATUS` answers
    (``retries`` more times, exponential backoff with jitter) and raises
    :class:`ServiceUnavailable` when they are exhausted or the breaker is open. Every other
    answer is returned to the caller, which knows what a 404 or a 402 means for it.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_s: float = 2.0,
        retries: int = 2,
        backoff_s: float = 0.1,
        token: str | None = None,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.breaker = breaker or CircuitBreaker()
        self._retries = retries
        self._backoff_s = backoff_s
        headers = {"Accept": "application/json", "User-Agent": "messenger"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s),
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (retried as described above); raises ServiceUnavailable."""
        last = "no attempt"
        for attempt in range(self._retries + 1):
            if not self.breaker.allow():
                raise ServiceUnavailable(
                    f"the {self.name} service is unavailable (circuit open; last: {last})"
                )
            if attempt:
                delay = self._backoff_s * 2 ** (attempt - 1)
                time.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto
            try:
                response = self._client.request(method, path, json=json, params=params, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                self.breaker.failed()
                logger.warning("%s %s %s failed (attempt %d): %s", self.name, method, path, attempt + 1, last)
                continue
            if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
                last = f"HTTP {response.status_code}"
                self.breaker.failed()
                logger.warning(
                    "%s %s %s answered %s (attempt %d)", self.name, method, path, last, attempt + 1
                )
                continue
            self.breaker.succeeded()
            return response
        raise ServiceUnavailable(f"the {self.name} service is unavailable ({last})")

    def close(self) -> None:
        self._client.close()
