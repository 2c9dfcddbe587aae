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


class StoreUnavailable(MessengerError):
    """The database or the presence store cannot be reached; the work can be retried."""

    code = "unavailable"


class ConfigurationError(MessengerError):
    code = "configuration_error"
