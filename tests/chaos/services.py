"""The chaos suite's own MariaDB and Redis: processes it starts, stops and starts again.

Faults are injected only on these, never on the machine's shared services (3306, 6379, 1883):
each runs from a data directory of its own under the test's temporary directory, listens on a
free port on 127.0.0.1 only, and is stopped (the process ends, as a crashed or stopped server
does; not SIGSTOP) and started again on the same port and data directory. Every wait is bounded.

    with PrivateMariaDB(tmp / "mariadb") as mariadb, PrivateRedis(tmp / "redis") as redis:
        url = mariadb.create_database("chaos_x")   # mysql+pymysql://root@127.0.0.1:<port>/chaos_x
        mariadb.stop(); ...; mariadb.start()       # the same port and data, bounded waits
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import pymysql
import redis

from scripts.topology import free_port

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db") or ""
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
#: ports the suite must never inject a fault on (the machine's shared services)
SHARED_PORTS = frozenset({3306, 6379, 1883})
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """A private service did not start or stop within its bound (its log's tail is in the message)."""


def missing_binaries() -> list[str]:
    """The server programs the suite needs that are not installed here."""
    wanted = {"mariadbd": MARIADBD, "mariadb-install-db": INSTALL_DB, "redis-server": REDIS_SERVER}
    return [name for name, path in wanted.items() if not path or not os.access(path, os.X_OK)]


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class _Private:
    """One server process of the suite's own: start, stop (the process ends), start again."""

    name = "service"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        if self.port in SHARED_PORTS:  # an ephemeral port never is; refuse rather than risk it
            raise ServiceError(f"{self.name}: refusing shared port {self.port}")
        self.log = self.root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server on its port and data directory; wait (bounded) until it answers."""
        if self.running:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self.proc.returncode} on start:\n{_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise ServiceError(
                    f"{self.name} did not answer within {START_TIMEOUT_S:g}s:\n{_tail(self.log)}"
                )
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the process (``sig``, then SIGKILL past the bound) and wait until its port is free."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _port_answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivateMariaDB(_Private):
    """A ``mariadbd`` of the suite's own: a fresh data directory, root without a password on
    127.0.0.1, a small buffer pool, no binary log."""

    name = "mariadb"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.datadir = self.root / "data"
        self.socket = self.root / "mariadb.sock"
        # mariadbd refuses to run as root unless told to; elsewhere it runs as whoever we are
        self.user = getpass.getuser()

    def start(self) -> None:
        if not (self.datadir / "mysql").is_dir():
            self._install()
        super().start()

    def _install(self) -> None:
        argv = [
            INSTALL_DB,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--user={self.user}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=START_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            raise ServiceError(f"mariadb-install-db failed: {exc.stdout!r} {exc.stderr!r}") from exc

    def argv(self) -> list[str]:
        return [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--user={self.user}",
            f"--pid-file={self.root / 'mariadb.pid'}",
            f"--log-error={self.log}",
            f"--tmpdir={self.root}",
            "--skip-log-bin",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=500",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]

    def ready(self) -> bool:
        try:
            conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1)
        except pymysql.MySQLError:
            return False
        conn.close()
        return True

    def url(self, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def _execute(self, sql: str) -> None:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=5)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        self._execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._execute(f"DROP DATABASE IF EXISTS `{name}`")


class PrivateRedis(_Private):
    """A ``redis-server`` of the suite's own: no snapshots, no append-only file, its own directory."""

    name = "redis"

    def argv(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
        ]

    def ready(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"
