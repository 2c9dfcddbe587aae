"""Run the production topology on loopback: Mosquitto with the project's plugin, the API, two
handlers on a shared subscription and the presence bridge, against MariaDB and Redis.

    make topology                       # or: .venv/bin/python -m scripts.topology
    MESSENGER_DATABASE_URL=... MESSENGER_REDIS_URL=... make topology

Every process is configured only by ``MESSENGER_*`` variables, as in production. Ports are
free ephemeral ports on 127.0.0.1 unless given. The tests and the benchmark suite (``bench/``) use
:class:`Topology` to start, kill and restart single processes.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "broker" / "mosquitto"
PLUGIN = PLUGIN_DIR / "build" / "messenger_auth.so"
CONF_TEMPLATE = ROOT / "mosquitto.test.conf"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DEFAULT_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_HANDLED = re.compile(r"stopping after (\d+) commands")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_plugin() -> Path:
    """``make -C broker/mosquitto``; raises CalledProcessError with the compiler's output."""
    subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR)], check=True, capture_output=True, text=True)
    return PLUGIN


def _wait(
    predicate: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not ready within {timeout:.0f}s")


def _end(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig`` and wait; SIGKILL what outlives ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@dataclass
class Topology:
    """The processes of one local topology. ``start()`` brings them up in dependency order:
    the API first (Mosquitto asks it about every CONNECT), then Mosquitto, the bridge and
    the handlers."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    handlers: int = 2
    #: ``messenger worker`` processes; with any, the handlers leave fan-out and tips to them
    workers: int = 0
    mqtt_port: int = 0
    ws_port: int = 0
    api_port: int = 0
    cache_ttl_s: int = 30
    send_rate_per_s: float | None = None
    workdir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    gateway_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    node_id: str = field(default_factory=lambda: f"local-{secrets.token_hex(3)}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mqtt_port = self.mqtt_port or free_port()
        self.ws_port = self.ws_port or free_port()
        self.api_port = self.api_port or free_port()
        self._own_workdir = self.workdir is None
        self._log_start: dict[str, int] = {}
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="messenger-topology-"))
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "mosquitto").mkdir(exist_ok=True)

    # wiring

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
        env |= {
            "MESSENGER_DATABASE_URL": self.database_url,
            "MESSENGER_REDIS_URL": self.redis_url,
            "MESSENGER_MQTT_HOST": "127.0.0.1",
            "MESSENGER_MQTT_PORT": str(self.mqtt_port),
            "MESSENGER_API_PORT": str(self.api_port),
            "MESSENGER_GATEWAY_SECRET": self.gateway_secret,
            "MESSENGER_NODE_ID": self.node_id,
            # the separate processes refuse the published development secret unless told so
            "MESSENGER_ENVIRONMENT": "development",
            "MESSENGER_LOG_LEVEL": os.environ.get("MESSENGER_LOG_LEVEL", "INFO"),
        }
        if self.send_rate_per_s is not None:
            env["MESSENGER_SEND_RATE_PER_S"] = str(self.send_rate_per_s)
        return env | self.extra_env | extra

    def log(self, name: str) -> Path:
        assert self.workdir is not None  # noqa: S101 - set in __post_init__
        return self.workdir / "logs" / f"{name}.log"

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], *, output: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``name``; its output goes to logs/``output or name``.log (appended on restarts)."""
        log = self.log(name)
        self._log_start[name] = log.stat().st_size if log.exists() else 0
        with self.log(output or name).open("ab") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = proc
        return proc

    def _messenger(self, name: str, command: str, **env: str) -> subprocess.Popen[bytes]:
        return self._spawn(name, [sys.executable, "-m", "launch.cli", command], self.env(**env))

    # processes

    def start(self) -> Topology:
        try:
            build_plugin()
            self.migrate()
            self.start_api()
            self.start_mosquitto()
            self.start_bridge()
            for n in range(1, self.handlers + 1):
                self.start_handler(n)
            for n in range(1, self.workers + 1):
                self.start_worker(n)
        except BaseException:
            self.stop()
            raise
        return self

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "launch.cli", "db", "upgrade"],
            env=self.env(),
            check=True,
            capture_output=True,
            cwd=ROOT,
        )

    def start_api(self) -> None:
        proc = self._messenger("api", "api")
        _wait(self._api_healthy, "messenger api", 30, proc)

    def _api_healthy(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
        return False

    def start_mosquitto(self) -> None:
        assert self.workdir is not None  # noqa: S101 - set in __post_init__
        fields = {
            "data_dir": str(self.workdir / "mosquitto"),
            "mqtt_port": str(self.mqtt_port),
            "ws_port": str(self.ws_port),
            "plugin": str(PLUGIN),
            "gateway_url": self.api_url,
            "gateway_secret": self.gateway_secret,
            "cache_ttl_s": str(self.cache_ttl_s),
            "user": getpass.getuser(),
            "log_file": str(self.log("mosquitto")),
        }
        conf = CONF_TEMPLATE.read_text()
        for key, value in fields.items():
            conf = conf.replace(f"@{key}@", value)
        path = self.workdir / "mosquitto.conf"
        path.write_text(conf)
        # Mosquitto logs to logs/mosquitto.log itself (log_dest file); its stdout is only start-up noise
        proc = self._spawn(
            "mosquitto", [MOSQUITTO, "-c", str(path)], os.environ.copy(), output="mosquitto-stdout"
        )
        _wait(lambda: _port_open(self.mqtt_port), "mosquitto", 15, proc)

    def start_bridge(self) -> None:
        proc = self._messenger("bridge", "bridge")
        _wait(lambda: self._logged("bridge", "presence bridge ready"), "messenger bridge", 30, proc)

    def start_handler(self, n: int) -> None:
        name = f"handler-{n}"
        # a stable name per slot: a restarted handler resumes its persistent session
        background = "false" if self.workers else "true"
        proc = self._messenger(
            name,
            "handler",
            MESSENGER_HANDLER_NAME=f"{self.node_id}-{name}",
            MESSENGER_BACKGROUND_WORK=background,
        )
        _wait(lambda: self._logged(name, "handler ready"), f"messenger {name}", 30, proc)

    def start_worker(self, n: int) -> None:
        name = f"worker-{n}"
        proc = self._messenger(name, "worker", MESSENGER_HANDLER_NAME=f"{self.node_id}-{name}")
        _wait(lambda: self._logged(name, "publisher connected"), f"messenger {name}", 30, proc)

    def _logged(self, name: str, text: str) -> bool:
        """Has the current run of ``name`` logged ``text`` (a restart appends to the same log)?"""
        with self.log(name).open("rb") as log:
            log.seek(self._log_start.get(name, 0))
            return text.encode() in log.read()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        _end(self.procs[name], sig, timeout=30)
        del self.procs[name]

    def handled(self, name: str) -> int | None:
        """How many commands handler ``name`` said it handled when it last stopped (SIGTERM);
        None if it never said (handler/main.py logs "stopping after N commands")."""
        found = _HANDLED.findall(self.log(name).read_text(errors="replace"))
        return int(found[-1]) if found else None

    def stop(self) -> None:
        """Stop in reverse order (handlers finish their batches), then tidy up."""
        for name in reversed(list(self.procs)):
            _end(self.procs.pop(name), signal.SIGTERM, timeout=20)

    def cleanup(self) -> None:
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[Topology]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handlers", type=int, default=2)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="messenger worker processes for fan-out and tips (default: none, the handlers do it)",
    )
    parser.add_argument("--mqtt-port", type=int, default=1885)
    parser.add_argument("--ws-port", type=int, default=8084)
    parser.add_argument("--api-port", type=int, default=8081)
    args = parser.parse_args()
    topology = Topology(
        database_url=os.environ.get("MESSENGER_DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=os.environ.get("MESSENGER_REDIS_URL", DEFAULT_REDIS_URL),
        handlers=args.handlers,
        workers=args.workers,
        mqtt_port=args.mqtt_port,
        ws_port=args.ws_port,
        api_port=args.api_port,
        workdir=ROOT / "var" / "topology",
    )
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with topology.running():
        print(
            "Messenger topology is running (Mosquitto + plugin, API, "
            f"{args.handlers} handlers, {args.workers} workers, bridge)\n"
            f"  MQTT      mqtt://127.0.0.1:{topology.mqtt_port}\n"
            f"  WebSocket ws://127.0.0.1:{topology.ws_port}\n"
            f"  REST API  {topology.api_url}  (OpenAPI at /docs)\n"
            f"  logs      {topology.workdir}/logs/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop:
            for name, proc in list(topology.procs.items()):
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; see its log", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
