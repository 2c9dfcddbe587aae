"""The REST listeners drop slow and idle connections, and refuse connections beyond their limit.

Real sockets against a real ``messenger serve`` (and one ``messenger api`` process), configured
with 1 s timeouts so that a test ends quickly. Each test checks *that* the server closes the
socket, reading until EOF under a generous socket timeout: a bound, never a measurement.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.topology import free_port
from tests.conftest import Stack, running_stack, stack_settings
from tests.launch.test_processes import messenger, role_env, start, wait_status

__all__ = ["start"]  # the fixture, used by test_the_production_api_drops_partial_headers

#: How long a test waits for the server to close a socket (the configured timeouts are 1 s).
CLOSED_WITHIN_S = 30.0

SHORT = {"http_header_timeout_s": 1.0, "http_body_timeout_s": 1.0, "http_keepalive_s": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    database = f"sqlite:///{tmp_path_factory.mktemp('slow') / 'messenger.db'}"
    with running_stack(stack_settings(database, None, **SHORT)) as running:
        yield running


def connect(stack: Stack) -> socket.socket:
    return socket.create_connection(stack.endpoints.api, timeout=CLOSED_WITHIN_S)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it never does."""
    received = b""
    sock.settimeout(CLOSED_WITHIN_S)
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {CLOSED_WITHIN_S:g}s (got {received!r})")
    return received


def test_a_connection_that_sends_nothing_is_closed(stack: Stack) -> None:
    with connect(stack) as sock:
        answer = read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_a_partial_request_line_is_closed(stack: Stack) -> None:
    with connect(stack) as sock:
        sock.sendall(b"GET /healthz HT")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_headers_that_never_end_are_closed(stack: Stack) -> None:
    with connect(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: messenger\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_headers_sent_a_line_at_a_time_forever_are_closed(stack: Stack) -> None:
    """Slowloris: each header line arrives before any idle timeout, the headers never end."""
    with connect(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: messenger\r\n")
        deadline = time.monotonic() + CLOSED_WITHIN_S
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                break
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_body_shorter_than_its_length_is_closed(stack: Stack) -> None:
    with connect(stack) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: messenger\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b'{"to":"bob'
        )
        answer = read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_is_closed(stack: Stack) -> None:
    with connect(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: messenger\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1") == 1  # the answer, then the close


def test_a_request_in_time_is_answered_and_the_connection_kept(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert client.post("/v1/messages", json={"to": "bob", "body": "hi"}).status_code == 401


def test_connections_beyond_the_limit_get_503(tmp_path: Path) -> None:
    settings = stack_settings(f"sqlite:///{tmp_path / 'limit.db'}", None, http_max_connections=2)
    with running_stack(settings) as stack:
        held = [connect(stack) for _ in range(2)]
        try:
            # the held sockets are accepted in the background: ask until the limit shows
            status, deadline = 0, time.monotonic() + CLOSED_WITHIN_S
            while status != 503 and time.monotonic() < deadline:
                status = httpx.get(f"{stack.api_url}/healthz", timeout=CLOSED_WITHIN_S).status_code
            assert status == 503
        finally:
            for sock in held:
                sock.close()
        wait_status(f"{stack.api_url}/healthz", 200)  # room again


@pytest.mark.redis
def test_the_production_api_drops_partial_headers(start: object, tmp_path: Path) -> None:
    port, internal = free_port(), free_port()
    env = role_env(
        internal,
        MESSENGER_DATABASE_URL=f"sqlite:///{tmp_path / 'api.db'}",
        MESSENGER_API_PORT=str(port),
        MESSENGER_HTTP_HEADER_TIMEOUT_S="1",
    )
    assert messenger("db", "upgrade", env=env).returncode == 0
    start("api", env)  # type: ignore[operator]
    for listener in (port, internal):
        wait_status(f"http://127.0.0.1:{listener}/healthz", 200)
        with socket.create_connection(("127.0.0.1", listener), timeout=CLOSED_WITHIN_S) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: messenger\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
