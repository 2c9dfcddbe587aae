"""The two stacks a scenario runs against, started on free loopback ports and always stopped.

- ``embedded``: one ``messenger serve`` process (amqtt broker, handler, API and presence in
  process) on a fresh SQLite file: what ``make serve`` runs.
- ``production``: ``scripts/topology.py``: Mosquitto with the project's auth/ACL plugin, the
  API (the plugin's gateway), ``--handlers`` handler processes on a shared subscription, the
  presence bridge and, with ``--workers``, background workers, against MariaDB and Redis.

Both give a scenario the same things: the MQTT port, the REST API's URL, the database URL, the
HS256 secret that signs the tokens the stack accepts, and the pids of its processes (for the CPU
split). The production stack uses a database of its own (``messenger_bench`` by default), created
when missing: background workers take any queued work in their database, so a bench must not
share one with the test suite or another stack.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.engine import Engine

from bench.procstat import database_pid
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine
from messenger.ratelimit import Action
from scripts.topology import DEFAULT_REDIS_URL, ROOT, Topology

STACKS = ("embedded", "production")
DEFAULT_BENCH_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/messenger_bench"
#: Starts of the production topology before giving up (a free port can be taken before it is bound).
START_ATTEMPTS = 3
#: A few bench users send thousands of messages and requests each, all from one address: every
#: rate limit off (MESSENGER_SEND_RATE_PER_S=0, ...).
UNLIMITED = {f"MESSENGER_{action.name}_RATE_PER_S": "0" for action in Action}
_BANNER = re.compile(r"(MQTT|REST API)\s+(?:mqtt|http)://([\d.]+):(\d+)")


class StackError(Exception):
    """A stack did not come up (its log's tail is in the message)."""


class Stack(Protocol):
    """What a scenario gets: where the stack listens, its database, and the token secret."""

    @property
    def name(self) -> str: ...

    @property
    def mqtt_port(self) -> int: ...

    @property
    def api_url(self) -> str: ...

    @property
    def database_url(self) -> str: ...

    @property
    def redis_url(self) -> str | None: ...

    @property
    def secret(self) -> str: ...

    def pids(self) -> dict[str, int]: ...

    def describe(self) -> str: ...


@dataclass
class StackOptions:
    """What the command line says about the stacks."""

    database_url: str = DEFAULT_BENCH_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    handlers: int = 2
    workers: int = 0
    #: extra MESSENGER_* settings for every process of the stack
    env: dict[str, str] = field(default_factory=dict)


def ensure_database(url: str) -> None:
    """CREATE DATABASE for a MariaDB/MySQL URL when it is missing (SQLite files create themselves)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith(("mysql", "mariadb")) or not parsed.database:
        return
    server = create_db_engine(parsed.set(database="").render_as_string(hide_password=False))
    try:
        with server.begin() as conn:
            conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}`"))
    finally:
        server.dispose()


def children(pids: dict[str, int]) -> dict[str, int]:
    """The child processes of named processes (a handler's publisher process, say), named after
    their parent: their CPU belongs in the split too."""
    found = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            for n, kid in enumerate(kids, 1):
                found[f"{name} child{'' if len(kids) == 1 else f' {n}'}"] = int(kid)
    return found


def bench_engine(stack: Stack) -> Engine:
    return create_db_engine(stack.database_url)


@dataclass
class EmbeddedStack:
    """``messenger serve`` on a temporary SQLite file (in-process presence unless ``redis_url``)."""

    env: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None
    name: str = "embedded"
    mqtt_port: int = 0
    api_url: str = ""
    secret: str = DEV_SECRET
    database_url: str = ""

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="messenger-bench-"))
        self.database_url = f"sqlite:///{self._dir}/messenger.db"
        self.log = self._dir / "serve.log"
        self.proc: subprocess.Popen[str] | None = None
        self._banner: threading.Thread | None = None

    def start(self) -> EmbeddedStack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
        env |= {
            "MESSENGER_BIND_HOST": "127.0.0.1",
            "MESSENGER_MQTT_PORT": "0",
            "MESSENGER_WS_PORT": "0",
            "MESSENGER_API_PORT": "0",
            "MESSENGER_DATABASE_URL": self.database_url,
            "MESSENGER_LOG_LEVEL": "WARNING",
        }
        env |= UNLIMITED
        if self.redis_url:
            env["MESSENGER_REDIS_URL"] = self.redis_url
        env |= self.env
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "launch.cli", "serve"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops the stack in order
            )
        found: dict[str, int] = {}
        banner_done = threading.Event()

        def read_banner() -> None:
            assert self.proc is not None and self.proc.stdout is not None  # noqa: S101 - PIPE
            for line in self.proc.stdout:
                if match := _BANNER.search(line):
                    found[match.group(1)] = int(match.group(3))
                if len(found) == 2:
                    banner_done.set()
            banner_done.set()

        self._banner = threading.Thread(target=read_banner, name="serve-banner", daemon=True)
        self._banner.start()
        if not banner_done.wait(60) or len(found) < 2:
            self.stop()
            raise StackError(f"messenger serve did not print its listeners:\n{self.tail()}")
        self.mqtt_port = found["MQTT"]
        self.api_url = f"http://127.0.0.1:{found['REST API']}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise StackError(f"messenger serve never became ready:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text_ = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(text_[-lines:]) or "(nothing on stderr)"

    def pids(self) -> dict[str, int]:
        if self.proc is None or self.proc.poll() is not None:
            return {}
        found = {"messenger serve": self.proc.pid}
        return found | children(found)

    def describe(self) -> str:
        presence = "Redis" if self.redis_url else "in process"
        return f"messenger serve (amqtt, SQLite, presence {presence})"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self._banner is not None:
                self._banner.join(5)  # it reads stdout to its end, which the exit closed
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class ProductionStack:
    """The production topology of ``scripts/topology.py`` on its own database."""

    options: StackOptions
    name: str = "production"
    secret: str = DEV_SECRET

    def __post_init__(self) -> None:
        self.topology = self._new_topology()

    def _new_topology(self) -> Topology:
        return Topology(
            database_url=self.options.database_url,
            redis_url=self.options.redis_url,
            handlers=self.options.handlers,
            workers=self.options.workers,
            extra_env=UNLIMITED | dict(self.options.env),
        )

    @property
    def mqtt_port(self) -> int:
        return self.topology.mqtt_port

    @property
    def api_url(self) -> str:
        return self.topology.api_url

    @property
    def database_url(self) -> str:
        return self.options.database_url

    @property
    def redis_url(self) -> str | None:
        return self.options.redis_url

    def start(self) -> ProductionStack:
        ensure_database(self.options.database_url)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self.topology.start()
                return self
            except Exception as exc:
                # Topology picks free ports before its processes bind them: another program on
                # the machine can take one in between. Start again on new ports.
                if attempt == START_ATTEMPTS:
                    raise StackError(f"the production topology did not start: {exc}\n{self.tail()}") from exc
                self.topology.cleanup()
                self.topology = self._new_topology()
        raise AssertionError("unreachable")

    def tail(self, lines: int = 10) -> str:
        assert self.topology.workdir is not None  # noqa: S101 - set by Topology
        out = []
        for log in sorted((self.topology.workdir / "logs").glob("*.log")):
            out.append(f"--- {log.name}")
            out.extend(log.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def pids(self) -> dict[str, int]:
        found = {name: proc.pid for name, proc in self.topology.procs.items() if proc.poll() is None}
        found |= children(found)
        if (db := database_pid()) is not None:
            found["mariadbd"] = db
        return found

    def describe(self) -> str:
        o = self.options
        workers = f", {o.workers} workers" if o.workers else ""
        return f"Mosquitto + plugin, {o.handlers} handlers{workers}, bridge, API, MariaDB, Redis"

    def stop(self) -> None:
        self.topology.stop()
        self.topology.cleanup()


@contextlib.contextmanager
def running(name: str, options: StackOptions) -> Iterator[EmbeddedStack | ProductionStack]:
    """Start stack ``name`` (``embedded`` or ``production``) and stop it afterwards."""
    stack: EmbeddedStack | ProductionStack
    if name == "embedded":
        stack = EmbeddedStack(env=dict(options.env))
    elif name == "production":
        stack = ProductionStack(options)
    else:
        raise ValueError(f"unknown stack {name!r}; one of {', '.join(STACKS)}")
    try:
        yield stack.start()
    finally:
        stack.stop()
