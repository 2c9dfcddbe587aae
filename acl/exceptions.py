"""Errors raised by the ``acl`` package.

Third-party errors (PyJWT, cryptography) never escape: they are wrapped here with
``raise ... from exc`` so that callers only need to know :class:`AclError` and its subclasses.
"""

from __future__ import annotations

from typing import Final

#: Every ``InvalidToken.reason`` the package produces. Stable: the REST API and the broker
#: plugins may log or return them, and tests assert on them.
TOKEN_REASONS: Final = frozenset(
    {
        "expired",
        "not_yet_valid",
        "bad_signature",
        "bad_audience",
        "bad_issuer",
        "malformed",
        "algorithm_not_allowed",
        "missing_claim",
        "bad_subject",
        "bad_role",
    }
)


class AclError(Exception):
    """Base class of every error raised by :mod:`acl`."""


class InvalidToken(AclError):
    """A bearer token was refused.

    ``reason`` is a stable short code (one of :data:`TOKEN_REASONS`) fit for logs, metrics and
    API error bodies; ``detail`` is a human explanation that never contains the token itself.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
