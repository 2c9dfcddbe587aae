"""Runs the shared limit vectors (``limit_vectors.json``) through :mod:`acl.limits`.

The same table drives the embedded broker's test (``tests/broker/test_limit_vectors.py``) and the
Mosquitto plugin's (``tests/broker/test_mosquitto_limits.py``), as ``vectors.json`` does for the
topic rules. Every row has ``limit``, ``role``, ``user`` (whose client asks), ``allow`` and a
``note``, and per limit:

* ``payload``: ``topic``, ``size`` (bytes) and ``retain`` of a publish (or Last Will);
* ``subscriptions``: ``held``, the distinct filters the client holds, and ``again``, whether the
  new filter is one of them;
* ``connections``: ``others``, the user's live connections under other client ids.

Rows are chosen so that the topic rules allow every publish a row allows: a broker, which
applies both, must give the row's answer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from acl import limits, topics
from acl.principal import Principal, Role

VECTORS_PATH = Path(__file__).with_name("limit_vectors.json")
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
KEYS = {
    "payload": {"topic", "size", "retain"},
    "subscriptions": {"held", "again"},
    "connections": {"others"},
}
COMMON = {"limit", "role", "user", "allow", "note"}


def row_id(row: dict[str, Any]) -> str:
    verdict = "allow" if row["allow"] else "deny"
    if row["limit"] == "payload":
        retained = " retain" if row["retain"] else ""
        return f"{row['role']} {row['size']} B on {row['topic']!r}{retained} -> {verdict}"
    if row["limit"] == "subscriptions":
        again = " (again)" if row["again"] else ""
        return f"{row['role']} holding {row['held']}{again} -> {verdict}"
    return f"{row['role']} with {row['others']} others -> {verdict}"


def principal(row: dict[str, Any]) -> Principal:
    return Principal(row["user"], Role(row["role"]))


def decide(row: dict[str, Any]) -> bool:
    if row["limit"] == "payload":
        return limits.payload_allowed(row["topic"], row["size"], retain=row["retain"])
    if row["limit"] == "subscriptions":
        return limits.subscription_allowed(row["held"], already_held=row["again"])
    return limits.connection_allowed(principal(row), row["others"])


@pytest.mark.parametrize("row", VECTORS, ids=[row_id(r) for r in VECTORS])
def test_vector(row: dict[str, Any]) -> None:
    assert decide(row) is row["allow"], row["note"]


def test_vectors_are_well_formed() -> None:
    for row in VECTORS:
        assert set(row) == COMMON | KEYS[row["limit"]], row
        assert isinstance(row["allow"], bool) and principal(row), row
        if row["limit"] == "payload":
            assert isinstance(row["retain"], bool) and row["size"] >= 0, row
            # a publish the limits allow, the topic rules allow too: a broker applies both
            if row["allow"] and row["topic"] != topics.CONTROL_TOPIC:
                assert topics.can_publish(principal(row), row["topic"], retain=row["retain"]), row
        if row["limit"] == "subscriptions":
            assert (
                isinstance(row["again"], bool) and 0 <= row["held"] <= limits.MAX_SUBSCRIPTIONS_PER_CLIENT
            ), row
            assert row["held"] > 0 or not row["again"], row
    ids = [row_id(r) for r in VECTORS]
    assert len(ids) == len(set(ids)), "duplicate vectors"


def test_vectors_cover_every_limit() -> None:
    """Each limit has allowed and denied rows; each payload class is tried at and over its limit."""
    seen = Counter((row["limit"], row["allow"]) for row in VECTORS)
    for limit in KEYS:
        assert seen[(limit, True)] and seen[(limit, False)], limit
    payload = [r for r in VECTORS if r["limit"] == "payload"]
    for klass, most in limits.PAYLOAD_LIMITS.items():
        sizes = {r["size"] for r in payload if limits.topic_class(r["topic"]) is klass}
        assert {most, most + 1} <= sizes, klass
    assert any(limits.topic_class(r["topic"]) is None for r in payload)
    retained = {r["size"] for r in payload if r["retain"]}
    assert {limits.MAX_RETAINED_BYTES, limits.MAX_RETAINED_BYTES + 1} <= retained
    assert {r["role"] for r in VECTORS} == {role.value for role in Role}


@pytest.mark.parametrize(
    ("topic", "klass"),
    [
        ("inbound/alice", limits.TopicClass.INBOUND),
        ("inbound/", limits.TopicClass.INBOUND),
        ("users/alice/messages", limits.TopicClass.USER_STREAM),
        ("users/alice/events", limits.TopicClass.USER_STREAM),
        ("users/alice/other", None),
        ("presence/alice/phone", limits.TopicClass.PRESENCE),
        ("presence/+/+", limits.TopicClass.PRESENCE),
        (topics.CONTROL_TOPIC, limits.TopicClass.CONTROL),
        ("$CONTROL/messenger", None),
        ("inbound", None),
        ("", None),
        ("presence/a/b/c", None),
    ],
)
def test_topic_class_by_shape(topic: str, klass: limits.TopicClass | None) -> None:
    assert limits.topic_class(topic) is klass


def test_the_packet_limit_holds_the_largest_payload() -> None:
    assert max(limits.PAYLOAD_LIMITS.values()) < limits.MAX_PACKET_BYTES
    # a command over its limit still reaches the handler, which answers payload_too_large
    assert limits.PAYLOAD_LIMITS[limits.TopicClass.INBOUND] > limits.MAX_COMMAND_BYTES
    # nothing retained is larger than what presence allows
    assert limits.PAYLOAD_LIMITS[limits.TopicClass.PRESENCE] <= limits.MAX_RETAINED_BYTES
