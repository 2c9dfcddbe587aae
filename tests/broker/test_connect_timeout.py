"""The embedded broker drops sockets that never send CONNECT and refuses them beyond its limit.

Real sockets against a real ``messenger serve``, with a 1 s CONNECT timeout so that a test ends
quickly; each test checks *that* the broker closes the socket, reading until EOF under a generous
socket timeout (a bound, never a measurement).
"""

from __future__ import annotations

import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.conftest import Stack, running_stack, stack_settings, token

CLOSED_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    database = f"sqlite:///{tmp_path_factory.mktemp('connect') / 'messenger.db'}"
    with running_stack(stack_settings(database, None, mqtt_connect_timeout_s=1.0)) as running:
        yield running


def closed_by_broker(sock: socket.socket) -> bool:
    """True once the broker closes ``sock`` (EOF or reset); False if it is still open after the bound."""
    sock.settimeout(CLOSED_WITHIN_S)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def mqtt_socket(stack: Stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=CLOSED_WITHIN_S)


def connects(stack: Stack) -> bool:
    """Whether a member's authenticated CONNECT is accepted (CONNACK 0)."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    accepted = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}/phone")
    client.username_pw_set(user, token(user))
    client.on_connect = lambda _c, _u, _f, reason, _p: accepted.set() if not reason.is_failure else None
    client.connect("127.0.0.1", stack.mqtt_port)
    client.loop_start()
    try:
        return accepted.wait(CLOSED_WITHIN_S)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_socket_that_sends_nothing_is_closed(stack: Stack) -> None:
    with mqtt_socket(stack) as sock:
        assert closed_by_broker(sock), f"no CONNECT, still open after {CLOSED_WITHIN_S:g}s"


def test_a_partial_connect_is_closed(stack: Stack) -> None:
    with mqtt_socket(stack) as sock:
        sock.sendall(bytes([0x10, 0x20, 0x00, 0x04]) + b"MQ")  # a CONNECT of 32 bytes, 6 sent
        assert closed_by_broker(sock), f"half a CONNECT, still open after {CLOSED_WITHIN_S:g}s"


def test_a_websocket_that_sends_no_connect_is_closed(stack: Stack) -> None:
    url = f"ws://127.0.0.1:{stack.ws_port}/mqtt"
    with ws_connect(url, subprotocols=["mqtt"]) as ws, pytest.raises(ConnectionClosed):  # type: ignore[list-item]
        ws.recv(timeout=CLOSED_WITHIN_S)


def test_a_client_that_connects_in_time_stays(stack: Stack) -> None:
    assert connects(stack)


def test_sockets_beyond_the_limit_are_closed_at_once(tmp_path: Path) -> None:
    limit = 12  # the stack's own service clients (handler, bridge, publishers) take some of them
    settings = stack_settings(
        f"sqlite:///{tmp_path / 'limit.db'}", None, mqtt_max_connections=limit, mqtt_connect_timeout_s=60.0
    )
    with running_stack(settings) as stack:
        held = [mqtt_socket(stack) for _ in range(limit + 5)]
        try:
            # accepted in the background: wait until the broker has closed the ones over the limit
            closed: set[int] = set()
            deadline = time.monotonic() + CLOSED_WITHIN_S
            while len(closed) < 5 and time.monotonic() < deadline:
                readable, _, _ = select.select(held, [], [], 0.2)
                for sock in readable:
                    if sock.fileno() not in closed and closed_by_broker(sock):
                        closed.add(sock.fileno())
            assert len(closed) >= 5
        finally:
            for sock in held:
                sock.close()
        assert connects(stack)  # room again
