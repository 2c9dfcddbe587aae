"""MQTT topic templates and the topic rules (SPEC section 4).

The single source of truth for every broker integration (amqtt plugins, the gateway endpoints,
the Mosquitto plugin's test vectors): everything not explicitly allowed here is denied.

========================  =====================  ==========================  ========
topic                     published by           subscribed/received by      retained
========================  =====================  ==========================  ========
``inbound/{uid}``         user ``uid``           service                     never
``users/{uid}/messages``  service                user ``uid``                never
``users/{uid}/events``    service                user ``uid``                never
``presence/{uid}/{dev}``  user ``uid`` (+ Will)  any authenticated client    yes
``$CONTROL/messenger/v1`` service                the broker itself only       never
========================  =====================  ==========================  ========

The checks split the topic on ``/`` and compare whole levels, and every variable level must be
a valid id (``[A-Za-z0-9_.-]{1,64}``), so wildcards, empty levels, NUL, ``$`` prefixes and
unicode are rejected without being listed. They run per message: no regex is compiled per call.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from acl.principal import Principal, is_valid_user_id


class Action(StrEnum):
    """What a client wants to do with a topic (for :func:`check`)."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


#: MQTT 5 shared-subscription group of the handlers.
SHARED_GROUP: Final = "handlers"

#: Where the API tells the broker to disconnect revoked clients (see :mod:`acl.revocation`).
#: The broker consumes it; no client may subscribe to it.
CONTROL_TOPIC: Final = "$CONTROL/messenger/v1"

INBOUND_FILTER: Final = "inbound/+"
PRESENCE_FILTER: Final = "presence/+/+"
SHARED_INBOUND_FILTER: Final = f"$share/{SHARED_GROUP}/{INBOUND_FILTER}"
SHARED_PRESENCE_FILTER: Final = f"$share/{SHARED_GROUP}/{PRESENCE_FILTER}"

_INBOUND: Final = "inbound"
_USERS: Final = "users"
_PRESENCE: Final = "presence"
_MESSAGES: Final = "messages"
_EVENTS: Final = "events"
_USER_STREAMS: Final = frozenset({_MESSAGES, _EVENTS})
_SINGLE_LEVEL: Final = "+"

# The service's wildcard filters, matched exactly (no other $share group, no "#").
_SERVICE_FILTERS: Final = frozenset(
    {INBOUND_FILTER, PRESENCE_FILTER, SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER}
)

#: What follows ``{uid}/`` in a client id.
CLIENT_ID_SUFFIX_PATTERN: Final = r"[A-Za-z0-9_.:-]{1,128}"
_CLIENT_ID_SUFFIX_RE: Final = re.compile(CLIENT_ID_SUFFIX_PATTERN)


def _checked(uid: str) -> str:
    if not is_valid_user_id(uid):
        raise ValueError(f"invalid id for a topic level: {uid!r:.80}")
    return uid


def inbound_topic(uid: str) -> str:
    """``inbound/{uid}``: commands from user ``uid`` to the handler."""
    return f"{_INBOUND}/{_checked(uid)}"


def messages_topic(uid: str) -> str:
    """``users/{uid}/messages``: messages delivered to user ``uid``."""
    return f"{_USERS}/{_checked(uid)}/{_MESSAGES}"


def events_topic(uid: str) -> str:
    """``users/{uid}/events``: acks, errors, read/typing/sync events for user ``uid``."""
    return f"{_USERS}/{_checked(uid)}/{_EVENTS}"


def presence_topic(uid: str, device: str) -> str:
    """``presence/{uid}/{device}``: retained presence of one device (and its Last Will)."""
    return f"{_PRESENCE}/{_checked(uid)}/{_checked(device)}"


def parse_presence_topic(topic: str) -> tuple[str, str] | None:
    """``(uid, device)`` of an exact presence topic, else ``None`` (filters included)."""
    levels = _levels(topic)
    if (
        levels is not None
        and len(levels) == 3
        and levels[0] == _PRESENCE
        and is_valid_user_id(levels[1])
        and is_valid_user_id(levels[2])
    ):
        return levels[1], levels[2]
    return None


def parse_inbound_topic(topic: str) -> str | None:
    """The sender ``uid`` of an exact inbound topic, else ``None`` (filters included)."""
    levels = _levels(topic)
    if levels is not None and len(levels) == 2 and levels[0] == _INBOUND and is_valid_user_id(levels[1]):
        return levels[1]
    return None


def client_id_allowed(p: Principal, client_id: str) -> bool:
    """Client ids are ``{uid}/{suffix}`` so that nobody can take over another user's session.

    The ``/`` is part of the required prefix: ``bob`` may not use ``bobby/x``.
    """
    if not isinstance(client_id, str):
        return False
    prefix = f"{p.user_id}/"
    return (
        client_id.startswith(prefix) and _CLIENT_ID_SUFFIX_RE.fullmatch(client_id[len(prefix) :]) is not None
    )


def can_publish(p: Principal, topic: str, *, retain: bool = False) -> bool:
    """May ``p`` publish to ``topic`` (an exact topic, never a filter)?"""
    levels = _levels(topic)
    if levels is None:
        return False
    if p.is_service:
        return not retain and (topic == CONTROL_TOPIC or _is_user_stream(levels, uid=None))
    if _is_inbound(levels, uid=p.user_id):
        return not retain
    # Retained is fine on presence: it is the point of the topic.
    return _is_presence(levels, uid=p.user_id)


def can_subscribe(p: Principal, topic_filter: str) -> bool:
    """May ``p`` subscribe with ``topic_filter``?"""
    levels = _levels(topic_filter)
    if levels is None:
        return False
    if p.is_service:
        return (
            topic_filter in _SERVICE_FILTERS
            or _is_inbound(levels, uid=None)
            or _is_presence(levels, uid=None)
        )
    if _is_user_stream(levels, uid=p.user_id):
        return True
    # Presence is readable by everyone: presence/{x}/{d}, presence/{x}/+ and presence/+/+.
    if len(levels) != 3 or levels[0] != _PRESENCE:
        return False
    uid, device = levels[1], levels[2]
    if uid == _SINGLE_LEVEL:
        return device == _SINGLE_LEVEL
    return is_valid_user_id(uid) and (device == _SINGLE_LEVEL or is_valid_user_id(device))


def can_receive(p: Principal, topic: str) -> bool:
    """May a message on ``topic`` be delivered to ``p`` (also guards retained replays)?"""
    levels = _levels(topic)
    if levels is None:
        return False
    if p.is_service:
        return _is_inbound(levels, uid=None) or _is_presence(levels, uid=None)
    return _is_user_stream(levels, uid=p.user_id) or _is_presence(levels, uid=None)


def can_set_will(p: Principal, topic: str, *, retain: bool) -> bool:
    """May ``p`` leave a Last Will on ``topic``? Only on its own presence (retained or not);
    the service has no Will."""
    del retain  # allowed either way on presence, which is the only place a Will may go
    if p.is_service:
        return False
    levels = _levels(topic)
    return levels is not None and _is_presence(levels, uid=p.user_id)


def check(p: Principal, action: Action, topic: str, *, retain: bool = False) -> bool:
    """Dispatch to :func:`can_publish`, :func:`can_subscribe` or :func:`can_receive`.

    ``action`` may also be the plain string value (``"publish"``), as gateways receive it.
    """
    if action == Action.PUBLISH:
        return can_publish(p, topic, retain=retain)
    if action == Action.SUBSCRIBE:
        return can_subscribe(p, topic)
    if action == Action.RECEIVE:
        return can_receive(p, topic)
    return False


def _levels(topic: str) -> list[str] | None:
    # Each rule compares whole levels; a non-string or empty topic is simply denied.
    if not isinstance(topic, str) or not topic:
        return None
    return topic.split("/")


def _is_inbound(levels: list[str], *, uid: str | None) -> bool:
    """``inbound/{uid}`` exactly; any valid uid when ``uid`` is None."""
    if len(levels) != 2 or levels[0] != _INBOUND:
        return False
    return is_valid_user_id(levels[1]) if uid is None else levels[1] == uid


def _is_user_stream(levels: list[str], *, uid: str | None) -> bool:
    """``users/{uid}/messages|events`` exactly; any valid uid when ``uid`` is None."""
    if len(levels) != 3 or levels[0] != _USERS or levels[2] not in _USER_STREAMS:
        return False
    return is_valid_user_id(levels[1]) if uid is None else levels[1] == uid


def _is_presence(levels: list[str], *, uid: str | None) -> bool:
    """``presence/{uid}/{device}`` exactly; any valid uid when ``uid`` is None."""
    if len(levels) != 3 or levels[0] != _PRESENCE or not is_valid_user_id(levels[2]):
        return False
    return is_valid_user_id(levels[1]) if uid is None else levels[1] == uid
