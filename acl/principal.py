"""Who is connected: the identity that a verified token grants."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    """What a user is. Members and creators have the same MQTT rights; ``service`` is the
    handler/bridge account."""

    MEMBER = "member"
    CREATOR = "creator"
    SERVICE = "service"


#: User ids (SPEC section 3). Also the charset of presence device names.
USER_ID_PATTERN: Final = r"[A-Za-z0-9_.-]{1,64}"

_USER_ID_RE: Final = re.compile(USER_ID_PATTERN)
# "." and ".." match the charset but read as path segments in URLs and file names.
_RESERVED_IDS: Final = frozenset({".", ".."})


def is_valid_user_id(s: str) -> bool:
    """True if ``s`` is a whole, well-formed user id (no wildcards, slashes, NUL or unicode)."""
    return isinstance(s, str) and _USER_ID_RE.fullmatch(s) is not None and s not in _RESERVED_IDS


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity. Datetimes are timezone-aware (UTC when built from a token).

    Construction validates the user id, so every rule in :mod:`acl.topics` can compare topic
    levels with ``user_id`` without re-checking it.
    """

    user_id: str
    role: Role
    jti: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        if not is_valid_user_id(self.user_id):
            raise ValueError(f"invalid user id: {self.user_id!r:.80}")
        if not isinstance(self.role, Role):
            # Accept the plain string value ("member") from callers that read it from a DB row.
            object.__setattr__(self, "role", Role(self.role))
        for name in ("issued_at", "expires_at"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")

    @property
    def is_service(self) -> bool:
        """True for the handler/bridge service account."""
        return self.role is Role.SERVICE
