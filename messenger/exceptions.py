"""Errors raised by the core; each carries a stable ``code`` that clients can rely on."""

from __future__ import annotations


class MessengerError(Exception):
    """Base class for core errors."""

    code = "internal_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidCommand(MessengerError):
    """A client command that cannot be accepted (bad JSON, wrong shape, too large...)."""

    code = "invalid_payload"


class Rejected(MessengerError):
    """A user's request refused for a reason they can act on; ``extra`` goes into the answer
    (e.g. ``retry_after`` for ``rate_limited``)."""

    code = "rejected"

    def __init__(self, detail: str, *, code: str, **extra: object) -> None:
        super().__init__(detail, code=code)
        self.extra = extra


class StoreUnavailable(MessengerError):
    """The database or the presence store cannot be reached; the work can be retried."""

    code = "unavailable"


class ConfigurationError(MessengerError):
    code = "configuration_error"


class ServiceUnavailable(MessengerError):
    """An external service (lists, billing) did not answer usably after its retries, or its
    circuit breaker is open; the request can be tried again later."""

    code = "service_unavailable"
