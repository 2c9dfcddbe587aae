"""The shared ACL vectors (``tests/acl/vectors.json``) through the embedded broker's code paths.

``tests/acl/test_vectors.py`` checks :mod:`acl` itself; this module checks that the amqtt
integration asks it the right questions and adds no hole of its own:

* ``connect`` and ``will`` rows through :func:`acl.connect.authorize_connect`, and through
  the plugin as amqtt calls it (a real amqtt ``Session`` carrying the CONNECT fields);
* ``publish``/``subscribe``/``receive`` rows through a :class:`MessengerBroker` (built, not
  listening): its topic filtering for publish and receive, its ``add_subscription`` (amqtt's
  wildcard validation plus the ACL) for subscribe, and its ``retain_message`` for the retain
  flag. amqtt does not show the retain flag to plugins, so a retained publish is allowed on this
  path when the publish passes the ACL *and* the broker keeps the message retained; a retained
  publish that is denied is relayed, if at all, without being retained.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from amqtt.broker import Broker
from amqtt.contexts import Action as AmqttAction
from amqtt.session import Session

from acl.connect import authorize_connect
from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier, issue_token
from broker.plugins import MessengerAclPlugin
from broker.server import PLUGIN_PATH, MessengerBroker
from messenger.constants import DEV_SECRET

VECTORS_PATH = Path(__file__).resolve().parent.parent / "acl" / "vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
CONNECT_ROWS = [r for r in VECTORS if r["action"] in ("connect", "will")]
TOPIC_ROWS = [r for r in VECTORS if r["action"] in ("publish", "subscribe", "receive")]
SUBACK_FAILURE = 0x80

T = TypeVar("T")


def _row_id(row: dict[str, Any]) -> str:
    subject = row["client_id"] if row["action"] == "connect" else row["topic"]
    retained = " retain" if row["retain"] else ""
    return f"{row['user']} {row['action']} {subject!r}{retained} -> {'allow' if row['allow'] else 'deny'}"


def _token(row: dict[str, Any]) -> str:
    return issue_token(DEV_SECRET, row["user"], role=Role(row["role"]))


def _connect_fields(row: dict[str, Any]) -> dict[str, Any]:
    will = row["action"] == "will"
    return {
        "username": row["user"],
        "password": _token(row),
        "client_id": row["client_id"],
        "will_topic": row["topic"] if will else None,
        "will_retain": row["retain"] if will else False,
    }


def _session(row: dict[str, Any]) -> Session:
    """An amqtt session as a CONNECT packet fills it in."""
    fields = _connect_fields(row)
    session = Session()
    session.client_id = fields["client_id"]
    session.username = fields["username"]
    session.password = fields["password"]
    session.clean_session = True
    session.keep_alive = 60
    if fields["will_topic"] is not None:
        session.will_flag = True
        session.will_topic = fields["will_topic"]
        session.will_message = b"offline"
        session.will_qos = 1
        session.will_retain = fields["will_retain"]
    return session


@pytest.fixture(scope="module")
def verifier() -> TokenVerifier:
    return TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))


class _Harness:
    """A MessengerBroker with the Messenger plugin, driven on a private event loop."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.loop = asyncio.new_event_loop()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
            "plugins": {PLUGIN_PATH: {"verifier": verifier, "on_authenticated": None}},
        }

        async def build() -> MessengerBroker:
            return MessengerBroker(config, loop=asyncio.get_running_loop())

        self.broker = self.run(build())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    async def authenticate(self, session: Session) -> bool:
        # What MessengerBroker._initialize_client_session asks before touching any session.
        return await Broker._authenticate(self.broker, session, None)  # type: ignore[arg-type]

    async def decide(self, row: dict[str, Any]) -> bool:
        session = _session(row)
        assert await self.authenticate(session), f"the row's client could not connect: {row}"
        action, topic = row["action"], row["topic"]
        if action == "subscribe":
            try:
                granted = await self.broker.add_subscription((topic, 1), session)
                return granted != SUBACK_FAILURE
            finally:
                await self.broker._del_all_subscriptions(session)
        if action == "receive":
            return await self.broker._topic_filtering(session, topic, AmqttAction.RECEIVE)
        if not await self.broker._topic_filtering(session, topic, AmqttAction.PUBLISH):
            return False
        if not row["retain"]:
            return True
        retained = self.broker.retained_messages
        retained.pop(topic, None)
        try:
            await self.broker.retain_message(session, topic, b"online", 1)
            return topic in retained
        finally:
            retained.pop(topic, None)


@pytest.fixture(scope="module")
def harness(verifier: TokenVerifier) -> Iterator[_Harness]:
    harness = _Harness(verifier)
    try:
        yield harness
    finally:
        harness.close()


def test_vectors_cover_the_broker_paths() -> None:
    actions = {r["action"] for r in VECTORS}
    assert actions == {"connect", "will", "publish", "subscribe", "receive"}
    assert len(CONNECT_ROWS) + len(TOPIC_ROWS) == len(VECTORS)


def test_harness_uses_the_messenger_plugin(harness: _Harness) -> None:
    plugins = list(harness.broker.plugins_manager._plugins)
    assert [type(p) for p in plugins] == [MessengerAclPlugin]


@pytest.mark.parametrize("row", CONNECT_ROWS, ids=[_row_id(r) for r in CONNECT_ROWS])
def test_authorize_connect(verifier: TokenVerifier, row: dict[str, Any]) -> None:
    try:
        principal = authorize_connect(verifier, **_connect_fields(row))
    except PermissionError:
        allowed = False
    else:
        allowed = True
        assert principal.user_id == row["user"] and principal.role == Role(row["role"])
    assert allowed is row["allow"], row["note"]


@pytest.mark.parametrize("row", CONNECT_ROWS, ids=[_row_id(r) for r in CONNECT_ROWS])
def test_plugin_authenticate(harness: _Harness, row: dict[str, Any]) -> None:
    assert harness.run(harness.authenticate(_session(row))) is row["allow"], row["note"]


@pytest.mark.parametrize("row", TOPIC_ROWS, ids=[_row_id(r) for r in TOPIC_ROWS])
def test_broker_topic_decision(harness: _Harness, row: dict[str, Any]) -> None:
    assert harness.run(harness.decide(row)) is row["allow"], row["note"]


def test_unauthenticated_session_is_denied_everything(harness: _Harness) -> None:
    """A session the plugin never authenticated (unknown client id) gets no topic at all."""
    session = Session()
    session.client_id = "nobody/never-connected"
    for action in (AmqttAction.PUBLISH, AmqttAction.SUBSCRIBE, AmqttAction.RECEIVE):
        assert harness.run(harness.broker._topic_filtering(session, "presence/alice/phone", action)) is False
    assert harness.run(harness.broker.add_subscription(("presence/+/+", 1), session)) == SUBACK_FAILURE
