"""The Mosquitto plugin's C limits (``broker/mosquitto/limits.c``) against :mod:`acl.limits`.

* The numbers: ``limits_generated.h`` is what ``scripts/plugin_limits.py`` writes from
  :mod:`acl.limits` today, and both Mosquitto configs' ``max_packet_size`` is its packet limit.
* Every row of the shared limit vectors (``tests/acl/limit_vectors.json``) through the C functions
  (the rules library that ``plugin_build`` builds, loaded with ctypes).
* A differential check of the topic classes and payload limits on the generated topics of
  ``test_mosquitto_rules.py``, at sizes around every limit, retained or not.

``test_broker_limits.py`` runs the plugin itself, in Mosquitto.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from acl import limits
from acl.principal import Role
from scripts.plugin_limits import HEADER
from tests.acl.test_limit_vectors import row_id
from tests.broker.test_mosquitto_rules import TOPICS

ROOT = Path(__file__).resolve().parents[2]
VECTORS: list[dict[str, Any]] = json.loads((ROOT / "tests" / "acl" / "limit_vectors.json").read_text("utf-8"))
#: enum ma_topic_class, in its order
CLASSES = [
    None,
    limits.TopicClass.INBOUND,
    limits.TopicClass.USER_STREAM,
    limits.TopicClass.PRESENCE,
    limits.TopicClass.CONTROL,
]


class Limits:
    """The C functions of limits.h."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        s, b, n = ctypes.c_char_p, ctypes.c_bool, ctypes.c_size_t
        self.topic_class = lib.ma_topic_class
        self.topic_class.argtypes, self.topic_class.restype = [s], ctypes.c_int
        self.payload_allowed = lib.ma_payload_allowed
        self.payload_allowed.argtypes, self.payload_allowed.restype = [s, n, b], b
        self.subscription_allowed = lib.ma_subscription_allowed
        self.subscription_allowed.argtypes, self.subscription_allowed.restype = [n, b], b
        self.connection_allowed = lib.ma_connection_allowed
        self.connection_allowed.argtypes, self.connection_allowed.restype = [b, n], b

    def decide(self, row: dict[str, Any]) -> bool:
        if row["limit"] == "payload":
            return bool(self.payload_allowed(row["topic"].encode(), row["size"], row["retain"]))
        if row["limit"] == "subscriptions":
            return bool(self.subscription_allowed(row["held"], row["again"]))
        return bool(self.connection_allowed(row["role"] == Role.SERVICE, row["others"]))


@pytest.fixture(scope="module")
def c_limits(plugin_build: Path) -> Limits:
    return Limits(ctypes.CDLL(str(plugin_build / "libmessenger_acl.so")))


def test_the_generated_header_is_up_to_date() -> None:
    assert HEADER.read_text(encoding="utf-8") == limits.c_header(), (
        "broker/mosquitto/limits_generated.h is stale: run `make plugin-limits`"
    )


@pytest.mark.parametrize("conf", ["mosquitto.conf", "mosquitto.test.conf"])
def test_max_packet_size_is_the_packet_limit(conf: str) -> None:
    found = re.findall(r"^max_packet_size (\d+)$", (ROOT / conf).read_text(encoding="utf-8"), re.MULTILINE)
    assert [int(size) for size in found] == [limits.MAX_PACKET_BYTES]


@pytest.mark.parametrize("row", VECTORS, ids=[row_id(r) for r in VECTORS])
def test_vector(c_limits: Limits, row: dict[str, Any]) -> None:
    assert c_limits.decide(row) is row["allow"], row["note"]


def test_c_topic_classes_and_payload_limits_match_python(c_limits: Limits) -> None:
    edges = sorted(
        {0, 1, *itertools.chain.from_iterable((m - 1, m, m + 1) for m in limits.PAYLOAD_LIMITS.values())}
    )
    differences = []
    for topic in TOPICS:
        klass = CLASSES[c_limits.topic_class(topic.encode())]
        if klass is not limits.topic_class(topic):
            differences.append(f"class of {topic!r}: C {klass}, python {limits.topic_class(topic)}")
        for size, retain in itertools.product(edges, (False, True)):
            expected = limits.payload_allowed(topic, size, retain=retain)
            if c_limits.payload_allowed(topic.encode(), size, retain) != expected:
                differences.append(f"{size} B on {topic!r} retain={retain}: python {expected}")
    assert not differences, "\n".join(differences[:20])
    # the generated topics reach every class, or the comparison proves little
    assert {limits.topic_class(t) for t in TOPICS} == set(CLASSES)
    assert c_limits.topic_class(None) == 0 and not c_limits.payload_allowed(None, 0, False)
