"""Table-driven tests of the MQTT topic rules (SPEC section 4): what is allowed, and that
everything around it is denied."""

from __future__ import annotations

import pytest

from acl import topics
from acl.principal import Principal, Role
from acl.topics import Action

ALICE = Principal("alice", Role.MEMBER)
CAROL = Principal("carol", Role.CREATOR)  # creators have exactly the members' MQTT rights
BOB = Principal("bob", Role.MEMBER)
SERVICE = Principal("messenger-service", Role.SERVICE)

USERS = [ALICE, CAROL]

# Strings that are never a valid topic or filter for anybody.
MALFORMED = [
    "",
    "/",
    "//",
    "#",
    "+",
    "/inbound/alice",
    "inbound/",
    "inbound//alice",
    "presence//phone",
    "presence/alice/",
    "users//messages",
    "$SYS",
    "$SYS/#",
    "$SYS/broker/clients/connected",
    "\x00",
    "inbound/\x00",
]


def _ids(value: object) -> str:
    return repr(value)


# ---------------------------------------------------------------- templates and parsers


def test_templates() -> None:
    assert topics.inbound_topic("alice") == "inbound/alice"
    assert topics.messages_topic("alice") == "users/alice/messages"
    assert topics.events_topic("alice") == "users/alice/events"
    assert topics.presence_topic("alice", "phone-1") == "presence/alice/phone-1"
    assert topics.INBOUND_FILTER == "inbound/+"
    assert topics.PRESENCE_FILTER == "presence/+/+"
    assert topics.SHARED_GROUP == "handlers"
    assert topics.SHARED_INBOUND_FILTER == "$share/handlers/inbound/+"
    assert topics.SHARED_PRESENCE_FILTER == "$share/handlers/presence/+/+"


@pytest.mark.parametrize("bad", ["", "+", "#", "a/b", "..", ".", "al ice", "élodie", "a" * 65, "a\x00"])
def test_templates_refuse_invalid_ids(bad: str) -> None:
    for build in (topics.inbound_topic, topics.messages_topic, topics.events_topic):
        with pytest.raises(ValueError):
            build(bad)
    with pytest.raises(ValueError):
        topics.presence_topic(bad, "phone")
    with pytest.raises(ValueError):
        topics.presence_topic("alice", bad)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("presence/alice/phone-1", ("alice", "phone-1")),
        ("presence/a.b_c-d/D.e_v-1", ("a.b_c-d", "D.e_v-1")),
        ("presence/" + "a" * 64 + "/" + "d" * 64, ("a" * 64, "d" * 64)),
        ("presence/alice", None),
        ("presence/alice/phone/extra", None),
        ("presence/+/phone", None),
        ("presence/alice/+", None),
        ("presence/+/+", None),
        ("presence/alice/#", None),
        ("presence/alice/", None),
        ("presence//phone", None),
        ("presence/../phone", None),
        ("presence/alice/..", None),
        ("presence/" + "a" * 65 + "/phone", None),
        ("presence/alice/" + "d" * 65, None),
        ("presence/alice/ph\x00ne", None),
        ("presence/alice/téléphone", None),
        ("Presence/alice/phone", None),
        ("$share/handlers/presence/alice/phone", None),
        ("inbound/alice", None),
        ("", None),
    ],
    ids=_ids,
)
def test_parse_presence_topic(topic: str, expected: tuple[str, str] | None) -> None:
    assert topics.parse_presence_topic(topic) == expected


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("inbound/alice", "alice"),
        ("inbound/messenger-service", "messenger-service"),
        ("inbound/+", None),
        ("inbound/#", None),
        ("inbound/alice/x", None),
        ("inbound/", None),
        ("inbound", None),
        ("/inbound/alice", None),
        ("inbound/..", None),
        ("inbound/al\x00ice", None),
        ("inbound/ålice", None),
        ("Inbound/alice", None),
        ("$share/handlers/inbound/alice", None),
        ("users/alice/messages", None),
    ],
    ids=_ids,
)
def test_parse_inbound_topic(topic: str, expected: str | None) -> None:
    assert topics.parse_inbound_topic(topic) == expected


# ---------------------------------------------------------------- client ids


@pytest.mark.parametrize(
    ("principal", "client_id", "allowed"),
    [
        (ALICE, "alice/phone-1", True),
        (ALICE, "alice/web:3f2a_b.c-d", True),
        (ALICE, "alice/" + "x" * 128, True),
        (ALICE, "alice/" + "x" * 129, False),
        (ALICE, "alice/", False),  # empty suffix
        (ALICE, "alice", False),
        (ALICE, "alice-phone", False),
        (ALICE, "alicephone", False),
        (ALICE, "alice/phone/2", False),  # '/' is not in the suffix charset
        (ALICE, "alice//phone", False),
        (ALICE, "alice/phone 1", False),
        (ALICE, "alice/phöne", False),  # unicode
        (ALICE, "alice/ph\x00ne", False),
        (ALICE, "alice/phone\n", False),
        (ALICE, "alice/+", False),
        (ALICE, "alice/#", False),
        (ALICE, "Alice/phone", False),  # ids are case-sensitive
        (ALICE, "bob/phone", False),
        (ALICE, "/alice/phone", False),
        (ALICE, "xalice/phone", False),
        (ALICE, "", False),
        (BOB, "bob/x", True),
        (BOB, "bobby/x", False),  # prefix confusion: "bob" must not get "bobby"'s sessions
        (Principal("bobby", Role.MEMBER), "bob/x", False),
        (Principal("bobby", Role.MEMBER), "bobby/x", True),
        (Principal("a.b", Role.MEMBER), "a.b/x", True),
        (Principal("a.b", Role.MEMBER), "aXb/x", False),  # '.' is literal, not a regex wildcard
        (CAROL, "carol/studio", True),
        (SERVICE, "messenger-service/handler-1", True),
        (SERVICE, "messenger-service", False),  # the rule applies to the service too
        (SERVICE, "handler-1", False),
        (SERVICE, "alice/phone", False),
    ],
    ids=_ids,
)
def test_client_id_allowed(principal: Principal, client_id: str, allowed: bool) -> None:
    assert topics.client_id_allowed(principal, client_id) is allowed


# ---------------------------------------------------------------- publish

USER_PUBLISH_ALLOWED = [
    ("inbound/{me}", False),
    ("presence/{me}/phone-1", False),
    ("presence/{me}/phone-1", True),  # retained presence is the point
    ("presence/{me}/web.tab_2", True),
]

USER_PUBLISH_DENIED = [
    ("inbound/{me}", True),  # never retained
    ("inbound/bob", False),
    ("inbound/+", False),
    ("inbound/#", False),
    ("inbound/{me}/x", False),
    ("inbound/{me}/", False),
    ("users/{me}/messages", False),  # only the handler publishes there
    ("users/{me}/events", False),
    ("users/bob/messages", False),
    ("users/bob/events", False),
    ("presence/bob/phone", False),
    ("presence/bob/phone", True),
    ("presence/{me}/+", False),
    ("presence/{me}/#", False),
    ("presence/+/phone", False),
    ("presence/{me}", False),
    ("presence/{me}/", False),
    ("presence/{me}/phone/extra", False),
    ("presence/{me}/ph+one", False),
    ("presence/{me}/ph#one", False),
    ("presence/{me}/ph\x00one", False),
    ("presence/{me}/phöne", False),
    ("presence/{me}/..", False),
    ("inbound/{me}\x00", False),
    ("$share/handlers/inbound/{me}", False),
    ("$SYS/broker/load", False),
    ("$CONTROL/kick", False),
    ("{me}", False),
    ("anything/else", False),
    ("users/{me}/messages/x", False),
]


@pytest.mark.parametrize("principal", USERS, ids=lambda p: p.role.value)
@pytest.mark.parametrize(("template", "retain"), USER_PUBLISH_ALLOWED, ids=_ids)
def test_user_publish_allowed(principal: Principal, template: str, retain: bool) -> None:
    topic = template.format(me=principal.user_id)
    assert topics.can_publish(principal, topic, retain=retain)
    assert topics.check(principal, Action.PUBLISH, topic, retain=retain)


@pytest.mark.parametrize("principal", USERS, ids=lambda p: p.role.value)
@pytest.mark.parametrize(("template", "retain"), USER_PUBLISH_DENIED, ids=_ids)
def test_user_publish_denied(principal: Principal, template: str, retain: bool) -> None:
    topic = template.format(me=principal.user_id)
    assert not topics.can_publish(principal, topic, retain=retain)
    assert not topics.check(principal, Action.PUBLISH, topic, retain=retain)


@pytest.mark.parametrize(
    ("topic", "retain", "allowed"),
    [
        ("users/alice/messages", False, True),
        ("users/alice/events", False, True),
        ("users/bob/messages", False, True),
        ("users/a.b_c-d/events", False, True),
        ("users/alice/messages", True, False),  # never retained
        ("users/alice/events", True, False),
        ("users/+/messages", False, False),
        ("users/#", False, False),
        ("users/alice/#", False, False),
        ("users/alice/other", False, False),
        ("users/alice", False, False),
        ("users//messages", False, False),
        ("users/../messages", False, False),
        ("users/alice/messages/x", False, False),
        ("inbound/alice", False, False),  # the service consumes inbound, it does not feed it
        ("presence/alice/phone", False, False),
        ("presence/alice/phone", True, False),
        ("$SYS/broker", False, False),
        ("#", False, False),
    ],
    ids=_ids,
)
def test_service_publish(topic: str, retain: bool, allowed: bool) -> None:
    assert topics.can_publish(SERVICE, topic, retain=retain) is allowed
    assert topics.check(SERVICE, Action.PUBLISH, topic, retain=retain) is allowed


@pytest.mark.parametrize("topic", MALFORMED, ids=_ids)
@pytest.mark.parametrize("principal", [ALICE, CAROL, SERVICE], ids=lambda p: p.role.value)
@pytest.mark.parametrize("retain", [False, True])
def test_malformed_never_published(principal: Principal, topic: str, retain: bool) -> None:
    assert not topics.can_publish(principal, topic, retain=retain)


def test_retain_only_on_presence() -> None:
    """Retained publishes are allowed on presence and on nothing else, for anybody."""
    candidates = [
        "inbound/alice",
        "users/alice/messages",
        "users/alice/events",
        "presence/alice/phone",
        "users/bob/messages",
    ]
    for principal in (ALICE, CAROL, SERVICE):
        for topic in candidates:
            if topics.can_publish(principal, topic, retain=True):
                assert topics.parse_presence_topic(topic) is not None, (principal, topic)
    assert topics.can_publish(ALICE, "presence/alice/phone", retain=True)


# ---------------------------------------------------------------- subscribe

USER_SUBSCRIBE_ALLOWED = [
    "users/{me}/messages",
    "users/{me}/events",
    "presence/bob/phone",
    "presence/{me}/phone",
    "presence/bob/+",
    "presence/{me}/+",
    "presence/+/+",
    "presence/a.b_c-d/D.e_v-1",
]

USER_SUBSCRIBE_DENIED = [
    "#",
    "+",
    "+/+",
    "+/+/+",
    "users/#",
    "users/+/messages",
    "users/+/events",
    "users/+/+",
    "users/{me}/#",
    "users/{me}/+",
    "users/{me}",
    "users/{me}/messages/#",
    "users/{me}/other",
    "users/bob/messages",
    "users/bob/events",
    "users/bob/#",
    "inbound/{me}",  # only the handler reads inbound
    "inbound/+",
    "inbound/#",
    "inbound/bob",
    "presence/#",
    "presence/+",
    "presence/bob/#",
    "presence/+/#",
    "presence/+/phone",  # not one of the listed presence filters
    "presence/bob",
    "presence/bob/phone/x",
    "presence/bob/ph+one",
    "presence/b#ob/phone",
    "presence/bob/phöne",
    "presence/../phone",
    "presence/bob/",
    "$share/handlers/inbound/+",
    "$share/handlers/presence/+/+",
    "$share/g/users/{me}/messages",
    "$share/handlers/users/{me}/messages",
    "$SYS/#",
    "$SYS/broker/clients/connected",
    "$CONTROL/#",
    "Users/{me}/messages",
]


@pytest.mark.parametrize("principal", USERS, ids=lambda p: p.role.value)
@pytest.mark.parametrize("template", USER_SUBSCRIBE_ALLOWED, ids=_ids)
def test_user_subscribe_allowed(principal: Principal, template: str) -> None:
    topic_filter = template.format(me=principal.user_id)
    assert topics.can_subscribe(principal, topic_filter)
    assert topics.check(principal, Action.SUBSCRIBE, topic_filter)


@pytest.mark.parametrize("principal", USERS, ids=lambda p: p.role.value)
@pytest.mark.parametrize("template", USER_SUBSCRIBE_DENIED + MALFORMED, ids=_ids)
def test_user_subscribe_denied(principal: Principal, template: str) -> None:
    topic_filter = template.format(me=principal.user_id)
    assert not topics.can_subscribe(principal, topic_filter)
    assert not topics.check(principal, Action.SUBSCRIBE, topic_filter)


SERVICE_SUBSCRIBE_ALLOWED = [
    "inbound/+",
    "presence/+/+",
    "$share/handlers/inbound/+",
    "$share/handlers/presence/+/+",
    "inbound/alice",
    "presence/alice/phone",
]

SERVICE_SUBSCRIBE_DENIED = [
    "#",
    "+/+",
    "inbound/#",
    "presence/#",
    "presence/+/#",
    "presence/alice/+",
    "presence/+/phone",
    "users/+/messages",
    "users/alice/messages",  # the handler writes user streams, it does not read them
    "users/#",
    "$share/handlers/#",
    "$share/handlers/inbound/#",
    "$share/handlers/inbound/alice",
    "$share/other/inbound/+",
    "$share//inbound/+",
    "$share/handlers/+",
    "$share/handlers/users/+/messages",
    "$share/handlers/presence/+/+/x",
    "$share/handlers",
    "$SYS/#",
    "$SYS/broker/load",
    "inbound/alice/x",
    "inbound/..",
]


@pytest.mark.parametrize("topic_filter", SERVICE_SUBSCRIBE_ALLOWED, ids=_ids)
def test_service_subscribe_allowed(topic_filter: str) -> None:
    assert topics.can_subscribe(SERVICE, topic_filter)
    assert topics.check(SERVICE, Action.SUBSCRIBE, topic_filter)


@pytest.mark.parametrize("topic_filter", SERVICE_SUBSCRIBE_DENIED + MALFORMED, ids=_ids)
def test_service_subscribe_denied(topic_filter: str) -> None:
    assert not topics.can_subscribe(SERVICE, topic_filter)
    assert not topics.check(SERVICE, Action.SUBSCRIBE, topic_filter)


def test_shared_filters_only_for_service() -> None:
    for topic_filter in (topics.SHARED_INBOUND_FILTER, topics.SHARED_PRESENCE_FILTER):
        assert topics.can_subscribe(SERVICE, topic_filter)
        assert not topics.can_subscribe(ALICE, topic_filter)
        assert not topics.can_subscribe(CAROL, topic_filter)


# ---------------------------------------------------------------- receive


@pytest.mark.parametrize(
    ("principal", "topic", "allowed"),
    [
        (ALICE, "users/alice/messages", True),
        (ALICE, "users/alice/events", True),
        (ALICE, "presence/alice/phone", True),
        (ALICE, "presence/bob/phone", True),
        (CAROL, "users/carol/messages", True),
        (CAROL, "presence/alice/web", True),
        (ALICE, "users/bob/messages", False),
        (ALICE, "users/bob/events", False),
        (ALICE, "users/carol/messages", False),
        (ALICE, "inbound/alice", False),
        (ALICE, "inbound/bob", False),
        (ALICE, "users/alice/other", False),
        (ALICE, "users/alice/messages/x", False),
        (ALICE, "users/+/messages", False),  # a received topic never contains wildcards
        (ALICE, "presence/+/+", False),
        (ALICE, "presence/bob/+", False),
        (ALICE, "presence/bob/#", False),
        (ALICE, "presence/bob", False),
        (ALICE, "$SYS/broker/load", False),
        (ALICE, "retained/elsewhere", False),
        (SERVICE, "inbound/alice", True),
        (SERVICE, "inbound/bob", True),
        (SERVICE, "presence/alice/phone", True),
        (SERVICE, "inbound/+", False),
        (SERVICE, "presence/+/+", False),
        (SERVICE, "users/alice/messages", False),
        (SERVICE, "users/alice/events", False),
        (SERVICE, "$share/handlers/inbound/alice", False),
        (SERVICE, "$SYS/broker/load", False),
        (SERVICE, "inbound/alice/x", False),
    ],
    ids=_ids,
)
def test_receive(principal: Principal, topic: str, allowed: bool) -> None:
    assert topics.can_receive(principal, topic) is allowed
    assert topics.check(principal, Action.RECEIVE, topic) is allowed


@pytest.mark.parametrize("topic", MALFORMED, ids=_ids)
@pytest.mark.parametrize("principal", [ALICE, CAROL, SERVICE], ids=lambda p: p.role.value)
def test_malformed_never_received(principal: Principal, topic: str) -> None:
    assert not topics.can_receive(principal, topic)


# ---------------------------------------------------------------- Last Will


@pytest.mark.parametrize(
    ("principal", "topic", "retain", "allowed"),
    [
        (ALICE, "presence/alice/phone", True, True),
        (ALICE, "presence/alice/phone", False, True),
        (CAROL, "presence/carol/web-1", True, True),
        (ALICE, "presence/bob/phone", True, False),  # someone else's presence
        (ALICE, "presence/bob/phone", False, False),
        (ALICE, "presence/alice/+", True, False),
        (ALICE, "presence/alice/#", True, False),
        (ALICE, "presence/alice", True, False),
        (ALICE, "presence/alice/phone/x", True, False),
        (ALICE, "inbound/alice", False, False),  # a Will can only announce presence
        (ALICE, "inbound/bob", False, False),
        (ALICE, "users/alice/messages", False, False),
        (ALICE, "users/bob/messages", False, False),
        (ALICE, "$SYS/broker", False, False),
        (ALICE, "#", False, False),
        (ALICE, "", False, False),
        (SERVICE, "presence/messenger-service/handler", True, False),  # the service has no Will
        (SERVICE, "presence/messenger-service/handler", False, False),
        (SERVICE, "users/alice/messages", False, False),
        (SERVICE, "inbound/alice", False, False),
    ],
    ids=_ids,
)
def test_will(principal: Principal, topic: str, retain: bool, allowed: bool) -> None:
    assert topics.can_set_will(principal, topic, retain=retain) is allowed


# ---------------------------------------------------------------- cross-cutting properties


def test_check_accepts_plain_action_strings() -> None:
    assert topics.check(ALICE, "publish", "inbound/alice")  # type: ignore[arg-type]
    assert topics.check(ALICE, "subscribe", "users/alice/messages")  # type: ignore[arg-type]
    assert topics.check(ALICE, "receive", "presence/bob/phone")  # type: ignore[arg-type]
    assert not topics.check(ALICE, "will", "presence/alice/phone")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, 1, b"inbound/alice", ["inbound", "alice"]], ids=_ids)
def test_non_string_topics_are_denied(value: object) -> None:
    for principal in (ALICE, SERVICE):
        assert not topics.can_publish(principal, value)  # type: ignore[arg-type]
        assert not topics.can_subscribe(principal, value)  # type: ignore[arg-type]
        assert not topics.can_receive(principal, value)  # type: ignore[arg-type]
        assert not topics.can_set_will(principal, value, retain=True)  # type: ignore[arg-type]
        assert not topics.client_id_allowed(principal, value)  # type: ignore[arg-type]


def test_users_cannot_read_each_others_streams() -> None:
    """For every pair of users, one never subscribes to or receives the other's streams."""
    people = [ALICE, BOB, CAROL, Principal("alice2", Role.MEMBER), Principal("ALICE", Role.MEMBER)]
    for reader in people:
        for owner in people:
            for topic in (topics.messages_topic(owner.user_id), topics.events_topic(owner.user_id)):
                expected = reader.user_id == owner.user_id
                assert topics.can_subscribe(reader, topic) is expected, (reader, topic)
                assert topics.can_receive(reader, topic) is expected, (reader, topic)
            assert topics.can_publish(reader, topics.inbound_topic(owner.user_id)) is (reader == owner)
            presence = topics.presence_topic(owner.user_id, "phone")
            assert topics.can_publish(reader, presence, retain=True) is (reader == owner)
            assert topics.can_set_will(reader, presence, retain=True) is (reader == owner)
            assert topics.can_subscribe(reader, presence)
            assert topics.can_receive(reader, presence)
