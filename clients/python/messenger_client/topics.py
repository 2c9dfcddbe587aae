"""Topic names and the identifier rules of protocol v1 (docs/protocol.md), in one place."""

from __future__ import annotations

import re
from typing import Final

#: User ids and device names: ``[A-Za-z0-9_.-]{1,64}``, neither ``.`` nor ``..``.
_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A message's client id (the ``id`` of a command) and a list id: 1-64 printable ASCII characters.
_CLIENT_ID: Final = re.compile(r"[\x21-\x7e]{1,64}")
#: The largest command the server accepts (UTF-8 JSON).
MAX_COMMAND_BYTES: Final = 65_536
#: The largest server id, and so the largest ``up_to`` or ``after``.
MAX_ID: Final = 2**63 - 1


def is_user_id(value: str) -> bool:
    """Whether ``value`` is a valid user id (device names follow the same rule)."""
    return _ID.fullmatch(value) is not None and value not in (".", "..")


def is_client_id(value: str) -> bool:
    """Whether ``value`` is a valid client message id (or list id)."""
    return _CLIENT_ID.fullmatch(value) is not None


def check_user_id(value: str, what: str = "user id") -> str:
    """``value``, or ValueError when it is not a valid user id."""
    if not isinstance(value, str) or not is_user_id(value):
        raise ValueError(f"invalid {what}: {value!r:.80}")
    return value


def check_client_id(value: str, what: str = "client id") -> str:
    if not isinstance(value, str) or not is_client_id(value):
        raise ValueError(f"invalid {what}: {value!r:.80} (1-64 printable ASCII characters)")
    return value


def messages_topic(user: str) -> str:
    return f"users/{user}/messages"


def events_topic(user: str) -> str:
    return f"users/{user}/events"


def inbound_topic(user: str) -> str:
    return f"inbound/{user}"


def presence_topic(user: str, device: str) -> str:
    return f"presence/{user}/{device}"


def presence_filter(user: str) -> str:
    """Every device of ``user``."""
    return f"presence/{user}/+"


def split_presence_topic(topic: str) -> tuple[str, str] | None:
    """(user, device) of a presence topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "presence" and is_user_id(parts[1]) and is_user_id(parts[2]):
        return parts[1], parts[2]
    return None
