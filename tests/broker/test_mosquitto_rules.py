"""The Mosquitto plugin's C topic rules (``broker/mosquitto/acl_rules.c``) against :mod:`acl`.

The ``plugin_build`` fixture (``conftest.py``) builds the plugin with its own Makefile; the rules
library is loaded with ctypes. Then:

* every row of the shared vectors (``tests/acl/vectors.json``) through the C functions;
* hand cases the vectors leave out: NULL, empty and very long arguments, ``.``/``..``, 64 vs
  65 characters, non-ASCII;
* a differential check: thousands of topics built from the words the rules care about, each
  asked of the C port and of :mod:`acl.topics` for every action, as a member and as the
  service. It catches a rule changed in Python but not in C that no vector mentions.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acl import topics
from acl.principal import Principal, Role, is_valid_user_id

ROOT = Path(__file__).resolve().parents[2]
VECTORS: list[dict[str, Any]] = json.loads((ROOT / "tests" / "acl" / "vectors.json").read_text("utf-8"))

MEMBER = "alice"
SERVICE = "handler"


class Rules:
    """The C functions, taking Python strings (``None`` is passed as a NULL pointer)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        s, b = ctypes.c_char_p, ctypes.c_bool
        signatures: dict[str, list[Any]] = {
            "ma_is_valid_user_id": [s],
            "ma_client_id_allowed": [s, s],
            "ma_can_publish": [s, b, s, b],
            "ma_can_subscribe": [s, b, s],
            "ma_can_receive": [s, b, s],
            "ma_can_set_will": [s, b, s, b],
        }
        for name, argtypes in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = b

    @staticmethod
    def _c(value: str | None) -> bytes | None:
        if value is None:
            return None
        assert "\0" not in value, "C strings cannot carry NUL (MQTT forbids it in topics)"
        return value.encode("utf-8")

    def is_valid_user_id(self, s: str | None) -> bool:
        return bool(self._lib.ma_is_valid_user_id(self._c(s)))

    def client_id_allowed(self, user: str | None, client_id: str | None) -> bool:
        return bool(self._lib.ma_client_id_allowed(self._c(user), self._c(client_id)))

    def can_publish(self, user: str | None, is_service: bool, topic: str | None, retain: bool) -> bool:
        return bool(self._lib.ma_can_publish(self._c(user), is_service, self._c(topic), retain))

    def can_subscribe(self, user: str | None, is_service: bool, topic_filter: str | None) -> bool:
        return bool(self._lib.ma_can_subscribe(self._c(user), is_service, self._c(topic_filter)))

    def can_receive(self, user: str | None, is_service: bool, topic: str | None) -> bool:
        return bool(self._lib.ma_can_receive(self._c(user), is_service, self._c(topic)))

    def can_set_will(self, user: str | None, is_service: bool, topic: str | None, retain: bool) -> bool:
        return bool(self._lib.ma_can_set_will(self._c(user), is_service, self._c(topic), retain))


@pytest.fixture(scope="session")
def rules(plugin_build: Path) -> Rules:
    return Rules(ctypes.CDLL(str(plugin_build / "libmessenger_acl.so")))


# ---------------------------------------------------------------------------------------------
# The shared vectors


def decide(rules: Rules, row: dict[str, Any]) -> bool:
    user, is_service, action = row["user"], row["role"] == Role.SERVICE.value, row["action"]
    if action == "connect":
        return rules.client_id_allowed(user, row["client_id"])
    if action == "will":
        return rules.can_set_will(user, is_service, row["topic"], row["retain"])
    if action == "publish":
        return rules.can_publish(user, is_service, row["topic"], row["retain"])
    if action == "subscribe":
        return rules.can_subscribe(user, is_service, row["topic"])
    if action == "receive":
        return rules.can_receive(user, is_service, row["topic"])
    raise AssertionError(f"unknown action {action!r}")


def _row_id(row: dict[str, Any]) -> str:
    subject = row["client_id"] if row["action"] == "connect" else row["topic"]
    retained = " retain" if row["retain"] else ""
    return f"{row['user']} {row['action']} {subject!r}{retained} -> {'allow' if row['allow'] else 'deny'}"


@pytest.mark.parametrize("row", VECTORS, ids=[_row_id(r) for r in VECTORS])
def test_vector(rules: Rules, row: dict[str, Any]) -> None:
    assert decide(rules, row) is row["allow"], row["note"]


# ---------------------------------------------------------------------------------------------
# Hand cases

ID_64 = "u" * 64
ID_65 = "u" * 65


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [
        ("alice", True),
        ("a", True),
        ("A-z_0.9", True),
        (ID_64, True),
        (ID_65, False),
        (".", False),
        ("..", False),
        ("...", True),
        (".a", True),
        ("", False),
        (None, False),
        ("a/b", False),
        ("a b", False),
        ("+", False),
        ("#", False),
        ("$SYS", False),
        ("alicé", False),
        ("a:b", False),
    ],
)
def test_user_id_charset(rules: Rules, candidate: str | None, valid: bool) -> None:
    assert rules.is_valid_user_id(candidate) is valid
    if candidate is not None:
        assert is_valid_user_id(candidate) is valid


@pytest.mark.parametrize(
    ("user", "client_id", "allowed"),
    [
        (ID_64, ID_64 + "/phone", True),
        (ID_65, ID_65 + "/phone", False),
        ("alice", "alice/" + "x" * 128, True),
        ("alice", "alice/" + "x" * 129, False),
        ("alice", "alice/" + "x" * 100_000, False),
        ("alice", "alice/a:b", True),
        ("alice", "alice/.", True),
        ("alice", "alice//", False),
        ("alice", "alice/é", False),
        ("alice", "alice", False),
        ("alice", "alice/", False),
        ("alice", "", False),
        ("alice", None, False),
        (None, "alice/phone", False),
        ("", "/phone", False),
        (".", "./phone", False),
        ("..", "../phone", False),
        ("bob", "bobby/x", False),
        ("bobby", "bob/x", False),
    ],
)
def test_client_id_edges(rules: Rules, user: str | None, client_id: str | None, allowed: bool) -> None:
    assert rules.client_id_allowed(user, client_id) is allowed


@pytest.mark.parametrize("is_service", [False, True], ids=["member", "service"])
@pytest.mark.parametrize(
    "topic", [None, "", "/", "a" * 100_000, "inbound/" + "a" * 100_000, "presence/alice/" + "d" * 100_000]
)
def test_null_empty_and_long_topics_are_denied(rules: Rules, topic: str | None, is_service: bool) -> None:
    user = SERVICE if is_service else MEMBER
    assert not rules.can_publish(user, is_service, topic, False)
    assert not rules.can_subscribe(user, is_service, topic)
    assert not rules.can_receive(user, is_service, topic)
    assert not rules.can_set_will(user, is_service, topic, False)


@pytest.mark.parametrize("user", [None, "", ".", "..", ID_65, "al/ice", "+", "alicé"])
def test_invalid_principal_gets_nothing(rules: Rules, user: str | None) -> None:
    """The Python rules cannot build such a principal; the C rules refuse it everything."""
    for is_service in (False, True):
        assert not rules.can_publish(user, is_service, "users/bob/messages", False)
        assert not rules.can_publish(user, is_service, f"inbound/{user}", False)
        assert not rules.can_publish(user, is_service, topics.CONTROL_TOPIC, False)
        assert not rules.can_subscribe(user, is_service, "presence/+/+")
        assert not rules.can_receive(user, is_service, "presence/bob/phone")
        assert not rules.can_set_will(user, is_service, f"presence/{user}/phone", True)


def test_longest_allowed_topic_is_allowed(rules: Rules) -> None:
    topic = f"presence/{ID_64}/{'d' * 64}"
    assert rules.can_publish(ID_64, False, topic, True)
    assert rules.can_set_will(ID_64, False, topic, True)
    assert rules.can_receive("bob", False, topic)
    assert not rules.can_publish(ID_64, False, f"presence/{ID_64}/{'d' * 65}", True)


def test_control_topic(rules: Rules) -> None:
    control = topics.CONTROL_TOPIC
    assert rules.can_publish(SERVICE, True, control, False)
    assert not rules.can_publish(SERVICE, True, control, True)
    assert not rules.can_publish(MEMBER, False, control, False)
    for is_service, user in ((True, SERVICE), (False, MEMBER)):
        assert not rules.can_subscribe(user, is_service, control)
        assert not rules.can_subscribe(user, is_service, "$CONTROL/#")
        assert not rules.can_receive(user, is_service, control)
        assert not rules.can_set_will(user, is_service, control, False)


def test_service_shared_filters(rules: Rules) -> None:
    for allowed in (topics.SHARED_INBOUND_FILTER, topics.SHARED_PRESENCE_FILTER, "inbound/+", "presence/+/+"):
        assert rules.can_subscribe(SERVICE, True, allowed), allowed
        assert not rules.can_subscribe(MEMBER, False, allowed) or allowed == "presence/+/+", allowed
    for denied in ("$share/other/inbound/+", "$share/handlers/#", "$share/handlers/inbound/#", "inbound/#"):
        assert not rules.can_subscribe(SERVICE, True, denied), denied


# ---------------------------------------------------------------------------------------------
# Differential: the C port and acl.topics agree on generated topics

WORDS = [
    "inbound", "users", "presence", "messages", "events", "+", "#", "$share", "handlers",
    "$CONTROL", "messenger", "v1", "alice", "bob", "handler", "", ".", "..", "...", "phone",
    ID_64, "x" * 65, "$SYS", "Alice", "alicé", "a b", "a:b",
]  # fmt: skip

PRINCIPALS = {
    "member": Principal(MEMBER, Role.MEMBER),
    "creator": Principal("bob", Role.CREATOR),
    "service": Principal(SERVICE, Role.SERVICE),
}


def generated_topics() -> list[str]:
    """Every 1-3 level combination of a core vocabulary, plus random deeper mixes of all words."""
    core = [
        "inbound",
        "users",
        "presence",
        "messages",
        "events",
        "+",
        "#",
        "alice",
        "bob",
        "",
        "..",
        "x" * 65,
    ]
    exhaustive = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(core, repeat=n)]
    rng = random.Random(20261123)  # fixed: a failure must reproduce
    mixed = ["/".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(3000)]
    fixed = [
        topics.CONTROL_TOPIC, topics.SHARED_INBOUND_FILTER, topics.SHARED_PRESENCE_FILTER,
        "$CONTROL/messenger/v1/", "$CONTROL/messenger", "/inbound/alice", "inbound/alice/",
    ]  # fmt: skip
    return sorted({t for t in exhaustive + mixed + fixed if t})


TOPICS = generated_topics()


PythonRule = Callable[[Principal, str], bool]
CRule = Callable[[Rules, str, bool, str], bool]

#: Each action as (acl.topics, C port).
ACTIONS: dict[str, tuple[PythonRule, CRule]] = {
    "publish": (
        lambda p, t: topics.can_publish(p, t),
        lambda r, user, svc, t: r.can_publish(user, svc, t, False),
    ),
    "publish retain": (
        lambda p, t: topics.can_publish(p, t, retain=True),
        lambda r, user, svc, t: r.can_publish(user, svc, t, True),
    ),
    "subscribe": (topics.can_subscribe, lambda r, user, svc, t: r.can_subscribe(user, svc, t)),
    "receive": (topics.can_receive, lambda r, user, svc, t: r.can_receive(user, svc, t)),
    "will": (
        lambda p, t: topics.can_set_will(p, t, retain=False),
        lambda r, user, svc, t: r.can_set_will(user, svc, t, False),
    ),
    "will retain": (
        lambda p, t: topics.can_set_will(p, t, retain=True),
        lambda r, user, svc, t: r.can_set_will(user, svc, t, True),
    ),
}


def _differences(rules: Rules, principal: Principal) -> Iterator[str]:
    for topic in TOPICS:
        for action, (python, c) in ACTIONS.items():
            expected = python(principal, topic)
            got = c(rules, principal.user_id, principal.is_service, topic)
            if expected != got:
                yield f"{action} {topic!r}: python {expected}, C {got}"


@pytest.mark.parametrize("who", sorted(PRINCIPALS))
def test_c_rules_match_python_on_generated_topics(rules: Rules, who: str) -> None:
    principal = PRINCIPALS[who]
    assert len(TOPICS) > 1000
    differences = list(itertools.islice(_differences(rules, principal), 20))
    assert not differences, "\n".join(differences)
    # The generated set must exercise both answers for each action, or the comparison proves little.
    # The service never retains and never has a Will.
    always_denied = {"publish retain", "will", "will retain"} if principal.is_service else set()
    for action, (python, _) in ACTIONS.items():
        expected = {False} if action in always_denied else {True, False}
        assert {python(principal, t) for t in TOPICS} == expected, action


def generated_client_ids(user: str) -> list[str]:
    rng = random.Random(f"client-ids-{user}")
    suffix_chars = "az09_.:-/+# é"
    ids = [user, f"{user}/", f"{user}//x", f"{user}x/y", f"x{user}/y", user.upper() + "/y"]
    for _ in range(500):
        prefix = rng.choice([user, user, user[:-1], user + "x", "bob", ""])
        length = rng.choice([1, 2, 5, 127, 128, 129])
        ids.append(prefix + "/" + "".join(rng.choice(suffix_chars) for _ in range(length)))
    return ids


@pytest.mark.parametrize("user", [MEMBER, SERVICE, ID_64])
def test_c_client_id_rule_matches_python(rules: Rules, user: str) -> None:
    principal = Principal(user, Role.MEMBER)
    ids = generated_client_ids(user)
    results = {cid: topics.client_id_allowed(principal, cid) for cid in ids}
    assert set(results.values()) == {True, False}
    mismatches = [cid for cid, expected in results.items() if rules.client_id_allowed(user, cid) != expected]
    assert not mismatches, mismatches[:10]
