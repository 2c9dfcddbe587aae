"""Token revocation: what a revocation covers, and the control message that carries it.

A revocation names one token (its ``jti``) or every token of a user issued before a moment.
The REST API stores revocations and refuses revoked tokens; it also publishes each one on
:data:`acl.topics.CONTROL_TOPIC`, where the broker (the embedded one, or the Mosquitto plugin)
disconnects the clients it covers. Both sides use :meth:`Revocation.covers`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from acl.principal import Principal, is_valid_user_id

#: Longest ``jti`` accepted in a revocation.
MAX_JTI_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Revocation:
    """Exactly one of: ``jti`` (one token), or ``user_id`` + ``issued_before`` (a user's tokens)."""

    jti: str | None = None
    user_id: str | None = None
    issued_before: datetime | None = None

    def __post_init__(self) -> None:
        if (self.jti is None) == (self.user_id is None):
            raise ValueError("a revocation names either a jti or a user")
        if self.jti is not None and not (0 < len(self.jti) <= MAX_JTI_LENGTH):
            raise ValueError(f"jti must be 1 to {MAX_JTI_LENGTH} characters")
        if self.user_id is not None:
            if not is_valid_user_id(self.user_id):
                raise ValueError(f"invalid user id: {self.user_id!r:.80}")
            if self.issued_before is None or self.issued_before.utcoffset() is None:
                raise ValueError("a user revocation needs a timezone-aware issued_before")

    def covers(self, principal: Principal) -> bool:
        """True if the token behind ``principal`` is revoked by this revocation.

        A token without ``iat`` cannot prove it was issued after the cut-off, so a user
        revocation covers it.
        """
        if self.jti is not None:
            return principal.jti == self.jti
        if principal.user_id != self.user_id:
            return False
        assert self.issued_before is not None  # noqa: S101 - checked in __post_init__
        return principal.issued_at is None or principal.issued_at < self.issued_before

    def to_control(self) -> bytes:
        """The control message a broker reads to disconnect the clients this covers."""
        body: dict[str, Any] = {"command": "revoke", "jti": self.jti, "user": self.user_id}
        body["issued_before"] = self.issued_before.timestamp() if self.issued_before is not None else None
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_control(cls, payload: bytes) -> Revocation:
        """Parse a control message; raises ValueError when it is not a revocation."""
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ValueError("control message is not UTF-8 JSON") from exc
        if not isinstance(data, dict) or data.get("command") != "revoke":
            raise ValueError("control message is not a revocation")
        jti, user, before = data.get("jti"), data.get("user"), data.get("issued_before")
        if not isinstance(jti, str | None) or not isinstance(user, str | None):
            raise ValueError("jti and user must be strings")
        issued_before = None
        if before is not None:
            if not isinstance(before, int | float) or isinstance(before, bool):
                raise ValueError("issued_before must be a Unix time")
            try:
                issued_before = datetime.fromtimestamp(before, UTC)
            except (OverflowError, OSError, ValueError) as exc:
                raise ValueError("issued_before is out of range") from exc
        return cls(jti=jti, user_id=user, issued_before=issued_before)
