"""The library's errors. Third-party errors (aiomqtt, httpx) are wrapped at the boundary."""

from __future__ import annotations

from typing import Any


class MessengerError(Exception):
    """Base class of every error this library raises."""


class ConnectError(MessengerError):
    """The first connection could not be made (the broker is unreachable, or it timed out)."""


class AuthError(ConnectError):
    """The broker refused the credentials (not authorized), even with a token just fetched."""


class ProtocolError(MessengerError):
    """A payload from the server does not follow the protocol; it is dropped."""


class ClosedError(MessengerError):
    """The client is closed."""


class SendError(MessengerError):
    """A message was not stored: the server refused it (``code`` is the protocol's error code,
    e.g. ``unknown_recipient``), billing declined its tip (``tip_failed``, with ``billing_url``),
    or no answer came in time (``timeout``; resending it with the same client id is safe)."""

    def __init__(self, client_id: str, code: str, detail: str, *, billing_url: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.client_id = client_id
        self.code = code
        self.detail = detail
        self.billing_url = billing_url


class ApiError(MessengerError):
    """A REST call answered with an error: ``status``, the stable ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body or {}


class RateLimitedError(ApiError):
    """``429 rate_limited``: try again after ``retry_after`` seconds."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any], retry_after: float) -> None:
        super().__init__(status, code, detail, body)
        self.retry_after = retry_after


class TipFailedError(ApiError):
    """``402 tip_failed``: billing declined the charge; ``billing_url`` is where to fix it."""

    def __init__(
        self, status: int, code: str, detail: str, body: dict[str, Any], billing_url: str | None
    ) -> None:
        super().__init__(status, code, detail, body)
        self.billing_url = billing_url


class TransportError(MessengerError):
    """A REST call got no answer (connection refused, timeout)."""
