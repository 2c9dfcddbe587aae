"""A dead handler's share of Mosquitto's shared subscription is taken over (issue 16).

Against a private Mosquitto 2.0 (plain, anonymous, on a free loopback port), real Redis and the
configured databases: a "dead" handler is a persistent MQTT 5 session in the shared group whose
client vanished without a DISCONNECT while holding unacked commands, so the broker keeps routing
its share into the session, as it does after a SIGKILL. ``tests/chaos`` does the same with the
real processes (``test_handler_sigkill_never_restarted``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from acl.topics import SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER
from handler.consumer import HandlerConsumer
from handler.processor import CommandProcessor
from handler.takeover import HandlerRegistry, Takeover
from messenger.db import unit_of_work
from messenger.models import Message
from messenger.mqtt import service_client
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto binary")

SERVICE = "svc"
TIMEOUT_S = 30.0
Sessions = sessionmaker[Session]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n",
        encoding="utf-8",
    )
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _answers(port), "mosquitto listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def registry() -> Iterator[HandlerRegistry]:
    reg = HandlerRegistry(redis.Redis.from_url(REDIS_URL), key=f"test:handlers:{uuid.uuid4().hex}")
    yield reg
    reg.close()


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _age(registry: HandlerRegistry, name: str, seconds: float) -> None:
    """Make ``name``'s last beat ``seconds`` old (as after that long without a beat)."""
    client = registry._redis
    now_s, now_us = client.time()  # type: ignore[misc]
    client.zadd(registry._key, {name: now_s * 1000 + now_us // 1000 - int(seconds * 1000)})


def _consumer(sessions: Sessions, port: int, name: str, *, leave: bool = False) -> HandlerConsumer:
    client = service_client(
        user=SERVICE,
        token="-",
        name=name,
        clean_session=False,
        manual_ack=True,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect=not leave,
    )
    return HandlerConsumer(
        client,
        CommandProcessor(sessions),
        subscriptions=(SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER),
        session_expiry_s=3600,
        receive_maximum=65_535,
        leave=leave,
    )


def _dead_handler(port: int, name: str) -> tuple[mqtt.Client, list[int]]:
    """A member of the shared group that takes commands and never acks them; the caller
    then cuts its socket (no DISCONNECT), leaving the session to the broker."""
    held: list[int] = []
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{SERVICE}/{name}",
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=True,
        reconnect_on_failure=False,
    )
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_message = lambda _c, _u, msg: held.append(msg.mid)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = 65_535
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.subscribe([(SHARED_INBOUND_FILTER, 1), (SHARED_PRESENCE_FILTER, 1)])
    client.loop_start()
    assert subscribed.wait(10)
    return client, held


def _send(port: int, sender: str, to: str, ids: list[str], *, until: threading.Event | None = None) -> int:
    """Publish a message command per id (QoS 1, confirmed); with ``until``, one every 20 ms and
    stopping early once it is set. Returns how many were sent."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{sender}/test-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    for cid in ids:
        if until is not None and until.wait(0.02):
            break
        command = {"type": "message", "id": cid, "to": to, "body": cid}
        infos.append(client.publish(f"inbound/{sender}", json.dumps(command), qos=1))
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    return len(infos)


def _stored(sessions: Sessions, sender: str) -> tuple[int, int]:
    with unit_of_work(sessions) as session:
        rows, distinct = session.execute(
            select(func.count(), func.count(func.distinct(Message.client_msg_id))).where(
                Message.sender_id == sender
            )
        ).one()
    return int(rows), int(distinct)


def _session_present(port: int, name: str) -> bool:
    """Whether the broker still has a session for ``name`` (connects clean-start false, then
    ends whatever it found or made)."""
    present: list[bool] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{SERVICE}/{name}", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_connect = lambda _c, _u, flags, _rc, _p: present.append(bool(flags.session_present))
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 60
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    _wait(lambda: present, "CONNACK")
    ending = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
    ending.SessionExpiryInterval = 0
    client.disconnect(properties=ending)
    client.loop_stop()
    return present[0]


# --- the registry ---


def test_registry_beats_claims_renews_and_forgets(registry: HandlerRegistry) -> None:
    registry.beat("live")
    _age(registry, "dead", 10)
    assert registry.dead(5) == ["dead"]

    assert registry.claim("dead", "live", 30)
    assert not registry.claim("dead", "other", 30)  # one taker at a time
    assert not registry.renew("dead", "other", 30)
    registry.release("dead", "other")  # not the owner: no effect
    assert not registry.claim("dead", "other", 30)
    assert registry.renew("dead", "live", 30)
    registry.release("dead", "live")
    assert registry.claim("dead", "other", 30)

    registry.beat("dead")  # it came back
    assert not registry.forget("dead", 5)
    assert registry.dead(5) == []
    _age(registry, "dead", 10)
    assert registry.forget("dead", 5)
    assert registry.dead(0.001) in ([], ["live"])
    registry.remove("live")
    assert registry.dead(0) == []


def test_a_beating_handler_is_never_judged_dead_even_after_stale_beats(registry: HandlerRegistry) -> None:
    """After a Redis outage (or a restore) every last beat is old; handlers judge others only
    after their own beats succeeded for a while, by when the live ones have beaten again."""
    names = ["a", "b"]
    for name in names:
        _age(registry, name, 60)
    judged: list[str] = []

    def drain(name: str) -> HandlerConsumer:
        judged.append(name)
        raise RuntimeError("a live handler was judged dead")

    takeovers = [
        Takeover(registry, name, drain, host="127.0.0.1", port=1, beat_s=0.1, dead_after_s=0.5)
        for name in names
    ]
    takeovers[0].start()
    time.sleep(0.3)  # "b" gets Redis back later than "a" (its client's reconnect backoff)
    takeovers[1].start()
    time.sleep(1.7)  # long enough to have judged wrongly, several times over
    for t in takeovers:
        t.stop(leave=True)
    assert judged == []
    assert registry.dead(0) == []  # both left


# --- a dead handler's session ---


def test_a_dead_handlers_share_is_handled_by_a_live_one_and_its_session_ended(
    sessions: Sessions, broker: int, registry: HandlerRegistry, make_user: Callable[..., str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    sender, recipient = make_user("s"), make_user("r")
    dead_name, live_name = f"dead-{tag}", f"live-{tag}"

    dead, held = _dead_handler(broker, dead_name)
    live = _consumer(sessions, broker, live_name)
    live.start("127.0.0.1", broker)
    first = [f"{tag}-a{n}" for n in range(100)]
    _send(broker, sender, recipient, first)
    _wait(lambda: len(held) + live.processed >= len(first), "the first commands shared out")
    assert held, "the dead handler took none of its share"

    # SIGKILL: the socket closes without a DISCONNECT; the broker keeps the session and its share
    sock = dead.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    dead.loop_stop()
    second = [f"{tag}-b{n}" for n in range(100)]
    _send(broker, sender, recipient, second)
    time.sleep(0.5)
    assert _stored(sessions, sender)[0] < len(first) + len(second)  # the dead one's share waits

    registry.beat(dead_name)
    takeover = Takeover(
        registry,
        live_name,
        lambda name: _consumer(sessions, broker, name, leave=True),
        host="127.0.0.1",
        port=broker,
        beat_s=0.2,
        dead_after_s=1.0,
        idle_s=0.5,
    )
    # traffic goes on meanwhile: the taker leaves the group at once, or it would keep getting a
    # share and never be done
    ended = threading.Event()
    third = [f"{tag}-c{n}" for n in range(1000)]
    sent: list[int] = []
    sending = threading.Thread(
        target=lambda: sent.append(_send(broker, sender, recipient, third, until=ended))
    )
    sending.start()
    takeover.start()
    try:
        try:
            _wait(lambda: takeover.ended, "the dead handler's session emptied while commands kept coming", 10)
        finally:
            ended.set()
            sending.join(TIMEOUT_S)
        assert takeover.ended == [dead_name]
        total = len(first) + len(second) + sent[0]
        _wait(lambda: _stored(sessions, sender)[0] >= total, "every command handled")
        assert _stored(sessions, sender) == (total, total)  # each command stored once

        # the group has one member now: every new command goes to the live handler
        fourth = [f"{tag}-d{n}" for n in range(50)]
        _send(broker, sender, recipient, fourth)
        _wait(lambda: _stored(sessions, sender)[0] == total + 50, "new commands handled")
        assert not _session_present(broker, dead_name)
        assert registry.dead(0.001) in ([], [live_name])  # the dead name was forgotten
    finally:
        takeover.stop(leave=live.stop(end_session=True))
    assert registry.dead(0) == []
