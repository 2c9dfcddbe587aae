"""Presence stores (in-process and Redis) through the ``presence_store`` fixture."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from messenger.presence import (
    DeviceState,
    MemoryPresenceStore,
    PresenceInfo,
    PresenceStore,
    create_presence_store,
)

MakeUid = Callable[[str], str]

T0 = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_unknown_user_is_offline(presence_store: PresenceStore, make_uid: MakeUid) -> None:
    uid = make_uid("nobody")
    info = presence_store.get(uid)
    assert info == PresenceInfo(uid, [], None)
    assert info.online is False
    assert info.since is None


def test_one_device_online_then_offline(presence_store: PresenceStore, make_uid: MakeUid) -> None:
    uid = make_uid("one")
    presence_store.set_device(uid, "phone", online=True, node="node-a", at=at(0))
    info = presence_store.get(uid)
    assert info.online is True
    assert info.devices == [DeviceState("phone", "node-a", at(0))]
    assert info.since == at(0)
    assert info.last_seen is None

    presence_store.set_device(uid, "phone", online=False, node="node-a", at=at(30))
    info = presence_store.get(uid)
    assert info.online is False
    assert info.devices == []
    assert info.since is None
    assert info.last_seen == at(30)


def test_online_while_any_device_is(presence_store: PresenceStore, make_uid: MakeUid) -> None:
    uid = make_uid("multi")
    presence_store.set_device(uid, "phone", online=True, node="node-a", at=at(10))
    presence_store.set_device(uid, "laptop", online=True, node="node-b", at=at(5))
    presence_store.set_device(uid, "tablet", online=True, node="node-a", at=at(20))
    info = presence_store.get(uid)
    assert info.online is True
    # devices sorted by name, each with its node; since = the earliest device
    assert info.devices == [
        DeviceState("laptop", "node-b", at(5)),
        DeviceState("phone", "node-a", at(10)),
        DeviceState("tablet", "node-a", at(20)),
    ]
    assert info.since == at(5)

    presence_store.set_device(uid, "laptop", online=False, node="node-b", at=at(60))
    info = presence_store.get(uid)
    assert info.online is True
    assert [d.device for d in info.devices] == ["phone", "tablet"]
    assert info.since == at(10)
    # last_seen records the offline change even though another device is still online
    assert info.last_seen == at(60)

    presence_store.set_device(uid, "phone", online=False, node="node-a", at=at(70))
    presence_store.set_device(uid, "tablet", online=False, node="node-a", at=at(80))
    info = presence_store.get(uid)
    assert info.online is False
    assert info.since is None
    assert info.last_seen == at(80)


def test_repeated_online_keeps_the_first_since_and_node(
    presence_store: PresenceStore, make_uid: MakeUid
) -> None:
    uid = make_uid("repeat")
    presence_store.set_device(uid, "phone", online=True, node="node-a", at=at(0))
    presence_store.set_device(uid, "phone", online=True, node="node-b", at=at(100))
    info = presence_store.get(uid)
    assert info.devices == [DeviceState("phone", "node-a", at(0))]
    assert info.since == at(0)


def test_back_online_after_offline_starts_a_new_since(
    presence_store: PresenceStore, make_uid: MakeUid
) -> None:
    uid = make_uid("back")
    presence_store.set_device(uid, "phone", online=True, node="node-a", at=at(0))
    presence_store.set_device(uid, "phone", online=False, node="node-a", at=at(10))
    presence_store.set_device(uid, "phone", online=True, node="node-b", at=at(20))
    info = presence_store.get(uid)
    assert info.devices == [DeviceState("phone", "node-b", at(20))]
    assert info.since == at(20)
    assert info.last_seen == at(10)


def test_offline_of_an_unknown_device(presence_store: PresenceStore, make_uid: MakeUid) -> None:
    uid = make_uid("ghost-dev")
    presence_store.set_device(uid, "phone", online=True, node="node-a", at=at(0))
    presence_store.set_device(uid, "never-seen", online=False, node="node-a", at=at(5))
    info = presence_store.get(uid)
    assert [d.device for d in info.devices] == ["phone"]
    assert info.last_seen == at(5)


def test_users_are_independent(presence_store: PresenceStore, make_uid: MakeUid) -> None:
    a, b = make_uid("ind-a"), make_uid("ind-b")
    presence_store.set_device(a, "phone", online=True, node="n", at=at(0))
    presence_store.set_device(b, "phone", online=False, node="n", at=at(1))
    assert presence_store.get(a).online is True
    assert presence_store.get(a).last_seen is None
    assert presence_store.get(b).online is False
    assert presence_store.get(b).last_seen == at(1)


def test_non_utc_times_keep_their_instant(presence_store: PresenceStore, make_uid: MakeUid) -> None:
    uid = make_uid("tz")
    local = datetime(2026, 11, 23, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    presence_store.set_device(uid, "phone", online=True, node="n", at=local)
    presence_store.set_device(uid, "laptop", online=False, node="n", at=local + timedelta(minutes=1))
    info = presence_store.get(uid)
    assert info.since == datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert info.last_seen == datetime(2026, 11, 23, 12, 1, 0, tzinfo=UTC)


def test_ping(presence_store: PresenceStore) -> None:
    assert presence_store.ping() is True


def test_create_presence_store_without_url_is_in_process() -> None:
    store = create_presence_store(None)
    assert isinstance(store, MemoryPresenceStore)
    store.close()


def test_reset_node_marks_only_that_nodes_devices_offline(
    presence_store: PresenceStore, make_uid: Callable[[str], str]
) -> None:
    alice, bob = make_uid("alice"), make_uid("bob")
    node_a, node_b = make_uid("node-a"), make_uid("node-b")
    t0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    presence_store.set_device(alice, "phone", online=True, node=node_a, at=t0)
    presence_store.set_device(alice, "laptop", online=True, node=node_b, at=t0)
    presence_store.set_device(bob, "phone", online=True, node=node_a, at=t0)
    presence_store.set_device(bob, "tablet", online=True, node=node_a, at=t0)
    presence_store.set_device(bob, "tablet", online=False, node=node_a, at=t0)  # already gone

    t1 = t0 + timedelta(minutes=5)
    assert presence_store.reset_node(node_a, t1) == 2

    assert [d.device for d in presence_store.get(alice).devices] == ["laptop"]
    assert presence_store.get(bob).online is False
    assert presence_store.get(bob).last_seen == t1
    # a second reset finds nothing left, and the other node is untouched
    assert presence_store.reset_node(node_a, t1) == 0
    assert presence_store.get(alice).online is True
