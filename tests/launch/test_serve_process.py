"""``messenger serve`` as a user runs it: a real process, its banner, its stop, its port errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVE = [sys.executable, "-m", "launch.cli", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    return clean | {
        "MESSENGER_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "MESSENGER_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def test_serve_prints_its_listeners_and_stops_cleanly_on_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen(
        [*SERVE, "--mqtt-port", str(ports[0]), "--ws-port", str(ports[1]), "--api-port", str(ports[2])],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = []
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(banner)
        assert f"mqtt://127.0.0.1:{ports[0]}" in text
        assert f"ws://127.0.0.1:{ports[1]}/mqtt" in text
        assert f"http://127.0.0.1:{ports[2]}" in text
        assert "presence  in-process" in text
        # the port really answers
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=5):
            pass
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Stopped." in out
    assert "Traceback" not in err
    assert (tmp_path / "serve.db").exists()


@pytest.mark.parametrize(
    ("flag", "env_name"),
    [
        ("--mqtt-port", "MESSENGER_MQTT_PORT"),
        ("--ws-port", "MESSENGER_WS_PORT"),
        ("--api-port", "MESSENGER_API_PORT"),
    ],
)
def test_a_taken_port_is_one_line_naming_the_flag(
    env: dict[str, str], tmp_path: Path, taken_port: int, flag: str, env_name: str
) -> None:
    ports = {"--mqtt-port": str(free_port()), "--ws-port": str(free_port()), "--api-port": str(free_port())}
    ports[flag] = str(taken_port)
    args = [part for pair in ports.items() for part in pair]
    result = subprocess.run(
        [*SERVE, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {taken_port}" in lines[0]
    assert flag in lines[0] and env_name in lines[0]
    # nothing was started, not even the database
    assert not (tmp_path / "serve.db").exists()
