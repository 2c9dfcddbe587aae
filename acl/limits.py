"""What one client may put through a broker: the limits every broker enforces, defined once.

==========================================  =======  =====================================
limit                                       value    beyond it
==========================================  =======  =====================================
payload on ``inbound/{uid}``                256 KiB  dropped by the broker
payload on ``users/{uid}/messages|events``  256 KiB  dropped by the broker
payload on ``presence/{uid}/{device}``      1 KiB    dropped: neither relayed nor retained
payload on ``$CONTROL/messenger/v1``        64 KiB   dropped: no revocation
a retained message                          1 KiB    dropped
an MQTT packet (Mosquitto only)             257 KiB  the broker closes the connection
distinct subscriptions of one client        256      SUBACK failure for a new filter
live connections of one user                10       CONNECT refused (not authorized)
==========================================  =======  =====================================

A command is at most :data:`MAX_COMMAND_BYTES` (the handler answers larger ones with
``payload_too_large``); the brokers relay commands up to four times that so the client gets that
answer, and the handler's own messages and events (a body is JSON-escaped: at most twice its
size, plus the envelope) stay under the same bound. The service account has no connection
limit (every handler, bridge, API and worker process is one of its connections); every other
limit applies to it too, and its own clients stay far below them (at most two subscriptions).

Who uses it: the embedded broker (``broker/``) imports this module; the Mosquitto plugin is
compiled with the same numbers in ``broker/mosquitto/limits_generated.h``, which
``scripts/plugin_limits.py`` writes from :func:`c_header` (a test fails when the committed file
differs), and ``mosquitto.conf``'s ``max_packet_size`` must equal :data:`MAX_PACKET_BYTES`
(tested too). A header, not the gateway's ``/mqtt/user`` answer: these are constants of the
protocol, not facts about a user; the plugin needs them on paths that never ask the gateway (a
cached CONNECT, every PUBLISH and SUBSCRIBE, a Last Will sent after the client is gone); and the
broker image is built from ``broker/mosquitto/`` alone, without Python.

The decisions are pure functions of counts the broker keeps, so the shared vectors
(``tests/acl/limit_vectors.json``) run them through this module, the embedded broker and the C
port (``broker/mosquitto/limits.c``) alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from acl.principal import Principal
from acl.topics import CONTROL_TOPIC


class TopicClass(StrEnum):
    """The topics a payload limit is set for (the ones the topic rules allow at all)."""

    INBOUND = "inbound"  # inbound/{uid}: a member's commands
    USER_STREAM = "user_stream"  # users/{uid}/messages and users/{uid}/events: the service's
    PRESENCE = "presence"  # presence/{uid}/{device}, retained, and Last Wills
    CONTROL = "control"  # $CONTROL/messenger/v1: revocations, consumed by the broker


#: Largest inbound command, in bytes (SPEC section 4; ``messenger.constants.MAX_PAYLOAD_BYTES``).
MAX_COMMAND_BYTES: Final = 64 * 1024

#: Largest payload per topic class.
PAYLOAD_LIMITS: Final[Mapping[TopicClass, int]] = MappingProxyType(
    {
        TopicClass.INBOUND: 4 * MAX_COMMAND_BYTES,
        TopicClass.USER_STREAM: 4 * MAX_COMMAND_BYTES,
        TopicClass.PRESENCE: 1024,
        TopicClass.CONTROL: MAX_COMMAND_BYTES,
    }
)

#: Largest retained message ("online", or a small JSON object; only presence is ever retained).
MAX_RETAINED_BYTES: Final = 1024

#: Mosquitto's ``max_packet_size``: the largest payload plus room for the topic and headers.
MAX_PACKET_BYTES: Final = max(PAYLOAD_LIMITS.values()) + 1024

#: Distinct topic filters one client (one client id) may hold. A client needs its two own
#: topics and the presence it watches: presence/{uid}/+ for up to 254 contacts, or presence/+/+.
MAX_SUBSCRIPTIONS_PER_CLIENT: Final = 256

#: Live connections (devices) of one member or creator; the service account has no limit.
MAX_CONNECTIONS_PER_USER: Final = 10

_INBOUND: Final = "inbound"
_USERS: Final = "users"
_PRESENCE: Final = "presence"
_USER_STREAMS: Final = frozenset({"messages", "events"})


def topic_class(topic: str) -> TopicClass | None:
    """The class of ``topic`` by its shape alone, or None (the topic rules deny all others).

    Whether the levels are valid ids is for :mod:`acl.topics` to say; a limit only needs the class.
    """
    if not isinstance(topic, str):
        return None
    if topic == CONTROL_TOPIC:
        return TopicClass.CONTROL
    levels = topic.split("/")
    if len(levels) == 2 and levels[0] == _INBOUND:
        return TopicClass.INBOUND
    if len(levels) == 3 and levels[0] == _USERS and levels[2] in _USER_STREAMS:
        return TopicClass.USER_STREAM
    if len(levels) == 3 and levels[0] == _PRESENCE:
        return TopicClass.PRESENCE
    return None


def payload_allowed(topic: str, size: int, *, retain: bool) -> bool:
    """May a ``size``-byte publish (or Last Will) on ``topic`` go through, retained or not?

    A topic of no class is denied: the topic rules deny it anyway.
    """
    klass = topic_class(topic)
    if klass is None or size < 0:
        return False
    return size <= PAYLOAD_LIMITS[klass] and (not retain or size <= MAX_RETAINED_BYTES)


def subscription_allowed(held: int, *, already_held: bool) -> bool:
    """May a client that holds ``held`` distinct filters subscribe to one more?

    Subscribing again to a filter it holds replaces that subscription (MQTT 3.8.4), so it is
    always allowed and does not count twice.
    """
    return already_held or held < MAX_SUBSCRIPTIONS_PER_CLIENT


def connection_allowed(p: Principal, others: int) -> bool:
    """May ``p`` connect while ``others`` of its connections are live under other client ids?

    A connection with the client id of a live one takes that one over, so it is not in ``others``.
    """
    return p.is_service or others < MAX_CONNECTIONS_PER_USER


def c_header() -> str:
    """``broker/mosquitto/limits_generated.h``: these numbers for the Mosquitto plugin."""
    defines = {
        "MA_MAX_INBOUND_BYTES": PAYLOAD_LIMITS[TopicClass.INBOUND],
        "MA_MAX_USER_STREAM_BYTES": PAYLOAD_LIMITS[TopicClass.USER_STREAM],
        "MA_MAX_PRESENCE_BYTES": PAYLOAD_LIMITS[TopicClass.PRESENCE],
        "MA_MAX_CONTROL_BYTES": PAYLOAD_LIMITS[TopicClass.CONTROL],
        "MA_MAX_RETAINED_BYTES": MAX_RETAINED_BYTES,
        "MA_MAX_SUBSCRIPTIONS_PER_CLIENT": MAX_SUBSCRIPTIONS_PER_CLIENT,
        "MA_MAX_CONNECTIONS_PER_USER": MAX_CONNECTIONS_PER_USER,
    }
    lines = [
        "/* GENERATED from acl/limits.py by scripts/plugin_limits.py: do not edit; change acl/limits.py",
        " * and run `make plugin-limits`. tests/broker/test_mosquitto_limits.py fails when it is stale. */",
        "#ifndef MESSENGER_LIMITS_GENERATED_H",
        "#define MESSENGER_LIMITS_GENERATED_H",
        "",
        *(f"#define {name} {value}u" for name, value in defines.items()),
        "",
        "#endif /* MESSENGER_LIMITS_GENERATED_H */",
    ]
    return "\n".join(lines) + "\n"
