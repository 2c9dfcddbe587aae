"""Run the production topology on loopback: Mosquitto with the project's plugin, the API, two
handlers on a shared subscription, the presence bridge and a worker, against MariaDB and Redis.

    make topology                       # or: .venv/bin/python -m scripts.topology
    MESSENGER_DATABASE_URL=... MESSENGER_REDIS_URL=... make topology

Every process is configured only by ``MESSENGER_*`` variables, as in production. Ports are
free ephemeral ports on 127.0.0.1 unless given. The tests and the benchmark suite (``bench/``) use
:class:`Topology` to start, kill and restart single processes.

:data:`ROLES` is the one description of the production topology: the process roles, their
``messenger`` commands, the variables each is configured with and the ports each listens on.
:class:`Topology` starts every process from it (a process gets exactly its role's variables), and
``tests/ship/test_topology_parity.py`` checks ``docker-compose.yml`` and the tables of
``docs/production.md`` against it.
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
from collections.abc import Callable, Iterator, Mapping
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

# ---------------------------------------------------------------------------------------------
# The production topology, declared once (docker-compose.yml and docs/production.md follow it)

#: The internal listener's port (/healthz, /readyz, /metrics; on the API also the broker gateway)
#: in docker-compose.yml and the image; never published. The topology takes free ports instead.
INTERNAL_PORT = 9100


@dataclass(frozen=True)
class Port:
    """A port a role listens on, with its production number."""

    number: int
    what: str
    #: the MESSENGER_* variable that sets it, if the process reads one
    variable: str | None = None


@dataclass(frozen=True)
class Role:
    """One process role of the production topology."""

    name: str
    #: the arguments after ``messenger``; empty for the broker, which is Mosquitto
    command: tuple[str, ...]
    #: the MESSENGER_* variables it is configured with (secrets not included)
    settings: frozenset[str]
    #: the MESSENGER_* secrets it needs; in containers the files /run/secrets/<name in lower case>
    secrets: frozenset[str] = frozenset()
    #: what it serves to clients (published by docker-compose.yml)
    public: tuple[Port, ...] = ()
    #: its internal listener (never published)
    internal: Port | None = None


_PROCESS = frozenset(
    {
        "MESSENGER_ENVIRONMENT",
        "MESSENGER_LOG_LEVEL",
        "MESSENGER_NODE_ID",
        "MESSENGER_BIND_HOST",
        "MESSENGER_INTERNAL_PORT",
        "MESSENGER_MQTT_HOST",
        "MESSENGER_MQTT_PORT",
    }
)
_SERVICES = frozenset({"MESSENGER_LISTS_URL", "MESSENGER_BILLING_URL"})
_INTERNAL = Port(INTERNAL_PORT, "health, readiness, metrics", "MESSENGER_INTERNAL_PORT")

#: The process roles in start order. Mosquitto asks the API about every CONNECT, so the API comes
#: before the broker; the schema is migrated before anything that uses the database.
ROLES: Mapping[str, Role] = {
    role.name: role
    for role in (
        Role(
            "migrate",
            ("db", "upgrade"),
            frozenset({"MESSENGER_DATABASE_URL", "MESSENGER_LOG_LEVEL"}),
            frozenset({"MESSENGER_DATABASE_PASSWORD"}),
        ),
        Role(
            "api",
            ("api",),
            _PROCESS
            | _SERVICES
            | {
                "MESSENGER_API_PORT",
                "MESSENGER_PUBLIC_URL",
                "MESSENGER_PUBLIC_WS_URL",
                "MESSENGER_DATABASE_URL",
                "MESSENGER_REDIS_URL",
            },
            frozenset({"MESSENGER_JWT_SECRET", "MESSENGER_GATEWAY_SECRET", "MESSENGER_DATABASE_PASSWORD"}),
            public=(Port(8080, "REST API", "MESSENGER_API_PORT"),),
            internal=_INTERNAL,
        ),
        Role(
            "broker",
            (),
            frozenset({"MESSENGER_GATEWAY_URL"}),
            frozenset({"MESSENGER_GATEWAY_SECRET"}),
            public=(Port(1883, "MQTT"), Port(8083, "MQTT over WebSocket")),
        ),
        Role(
            "bridge",
            ("bridge",),
            _PROCESS | {"MESSENGER_REDIS_URL"},
            frozenset({"MESSENGER_JWT_SECRET"}),
            internal=_INTERNAL,
        ),
        Role(
            "handler",
            ("handler",),
            _PROCESS
            | _SERVICES
            | {
                "MESSENGER_DATABASE_URL",
                "MESSENGER_REDIS_URL",
                "MESSENGER_HANDLER_NAME",
                "MESSENGER_BACKGROUND_WORK",
            },
            frozenset({"MESSENGER_JWT_SECRET", "MESSENGER_DATABASE_PASSWORD"}),
            internal=_INTERNAL,
        ),
        Role(
            "worker",
            ("worker",),
            # Redis: the payers' charge_declined buckets, shared with the API and the handlers
            _PROCESS
            | _SERVICES
            | {"MESSENGER_DATABASE_URL", "MESSENGER_REDIS_URL", "MESSENGER_HANDLER_NAME"},
            frozenset({"MESSENGER_JWT_SECRET", "MESSENGER_DATABASE_PASSWORD"}),
            internal=_INTERNAL,
        ),
    )
}

#: Declared variables the topology leaves unset on purpose: it runs on the development token
#: secret, puts the database credentials into the URL and uses the embedded list service and
#: ledger (a test may still set these through ``extra_env``).
TOPOLOGY_UNSET = frozenset(
    {
        "MESSENGER_JWT_SECRET",
        "MESSENGER_DATABASE_PASSWORD",
        "MESSENGER_LISTS_URL",
        "MESSENGER_BILLING_URL",
        "MESSENGER_PUBLIC_URL",
    }
)

#: mosquitto.test.conf's @fields@ that carry the broker role's variables
_BROKER_FIELDS = {"gateway_url": "MESSENGER_GATEWAY_URL", "gateway_secret": "MESSENGER_GATEWAY_SECRET"}


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
    """The processes of one local topology. ``start()`` brings them up in the order of
    :data:`ROLES`: the migration, the API (Mosquitto asks it about every CONNECT), Mosquitto, the
    bridge, the handlers and the workers. Each process gets the variables its role declares, and
    every role with an internal listener gets a free port of its own for it."""

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
    #: each process's internal listener port, by process name; kept across restarts
    internal_ports: dict[str, int] = field(default_factory=dict)

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

    def internal_port(self, name: str) -> int:
        """Process ``name``'s internal listener port (a free port, the same after a restart)."""
        return self.internal_ports.setdefault(name, free_port())

    def internal_url(self, name: str) -> str:
        """Base URL of process ``name``'s internal listener (/healthz, /readyz, /metrics; the
        API's also serves the broker gateway)."""
        return f"http://127.0.0.1:{self.internal_port(name)}"

    @property
    def gateway_url(self) -> str:
        """Where the broker's plugin asks about CONNECTs: the API's internal listener."""
        return self.internal_url("api")

    def wiring(self, role: str, name: str) -> dict[str, str]:
        """Every value the topology can give process ``name`` of ``role``; :meth:`env` passes
        each process only those its role declares."""
        values = {
            # the separate processes refuse the published development secret unless told so
            "MESSENGER_ENVIRONMENT": "development",
            "MESSENGER_LOG_LEVEL": os.environ.get("MESSENGER_LOG_LEVEL", "INFO"),
            "MESSENGER_NODE_ID": self.node_id,
            "MESSENGER_BIND_HOST": "127.0.0.1",
            "MESSENGER_DATABASE_URL": self.database_url,
            "MESSENGER_REDIS_URL": self.redis_url,
            "MESSENGER_MQTT_HOST": "127.0.0.1",
            "MESSENGER_MQTT_PORT": str(self.mqtt_port),
            "MESSENGER_API_PORT": str(self.api_port),
            "MESSENGER_GATEWAY_SECRET": self.gateway_secret,
            "MESSENGER_GATEWAY_URL": self.gateway_url,
            # the chat app at the API's / reaches Mosquitto's WebSocket listener here
            "MESSENGER_PUBLIC_WS_URL": f"ws://127.0.0.1:{self.ws_port}",
        }
        if ROLES[role].internal is not None:
            values["MESSENGER_INTERNAL_PORT"] = str(self.internal_port(name))
        # a stable name per slot: a restarted handler resumes its persistent session
        values["MESSENGER_HANDLER_NAME"] = f"{self.node_id}-{name}"
        # with workers, the handlers leave fan-out and tips to them
        values["MESSENGER_BACKGROUND_WORK"] = "false" if self.workers else "true"
        return values

    def env(self, role: str, name: str | None = None, **process: str) -> dict[str, str]:
        """The environment of process ``name`` (default: the role's name) of ``role``: exactly
        the variables :data:`ROLES` declares for it, plus ``process``'s own values (which must be
        declared too) and the tuning of this topology (``send_rate_per_s``, ``extra_env``)."""
        spec = ROLES[role]
        declared = spec.settings | spec.secrets
        if undeclared := sorted(process.keys() - declared):
            raise ValueError(f"{role}: {undeclared} not declared in ROLES[{role!r}] (scripts/topology.py)")
        wiring = {key: value for key, value in self.wiring(role, name or role).items() if key in declared}
        if missing := sorted(declared - wiring.keys() - process.keys() - TOPOLOGY_UNSET):
            raise ValueError(f"{role}: the topology gives no value for {missing}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")} | wiring
        if spec.command:  # the tuning applies to Messenger's processes, not to Mosquitto
            if self.send_rate_per_s is not None:
                env["MESSENGER_SEND_RATE_PER_S"] = str(self.send_rate_per_s)
            env |= self.extra_env
        return env | process

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

    def _messenger(self, name: str, role: str, **env: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "launch.cli", *ROLES[role].command]
        return self._spawn(name, argv, self.env(role, name, **env))

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
            [sys.executable, "-m", "launch.cli", *ROLES["migrate"].command],
            env=self.env("migrate"),
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
        # the broker image renders its configuration from these variables; here the template does
        env = self.env("broker", "mosquitto")
        broker = ROLES["broker"]
        if unused := sorted((broker.settings | broker.secrets) - set(_BROKER_FIELDS.values())):
            raise ValueError(f"broker: {unused} have no field in {CONF_TEMPLATE.name} (_BROKER_FIELDS)")
        fields = {
            "data_dir": str(self.workdir / "mosquitto"),
            "mqtt_port": str(self.mqtt_port),
            "ws_port": str(self.ws_port),
            "plugin": str(PLUGIN),
            **{field_: env[variable] for field_, variable in _BROKER_FIELDS.items()},
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
        proc = self._spawn("mosquitto", [MOSQUITTO, "-c", str(path)], env, output="mosquitto-stdout")
        _wait(lambda: _port_open(self.mqtt_port), "mosquitto", 15, proc)

    def start_bridge(self) -> None:
        proc = self._messenger("bridge", "bridge")
        _wait(lambda: self._logged("bridge", "presence bridge ready"), "messenger bridge", 30, proc)

    def start_handler(self, n: int) -> None:
        name = f"handler-{n}"
        proc = self._messenger(name, "handler")
        _wait(lambda: self._logged(name, "handler ready"), f"messenger {name}", 30, proc)

    def start_worker(self, n: int) -> None:
        name = f"worker-{n}"
        proc = self._messenger(name, "worker")
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
        default=1,
        help="messenger worker processes for fan-out and tips, as in docker-compose.yml (default 1; "
        "0: the handlers do it)",
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
        internal = ", ".join(f"{name} :{port}" for name, port in topology.internal_ports.items())
        print(
            "Messenger topology is running (Mosquitto + plugin, API, "
            f"{args.handlers} handlers, {args.workers} workers, bridge)\n"
            f"  MQTT      mqtt://127.0.0.1:{topology.mqtt_port}\n"
            f"  WebSocket ws://127.0.0.1:{topology.ws_port}\n"
            f"  REST API  {topology.api_url}  (OpenAPI at /docs)\n"
            f"  internal  {internal}  (/healthz, /readyz, /metrics; the API's also /mqtt/*)\n"
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
