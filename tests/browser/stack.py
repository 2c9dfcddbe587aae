"""A Messenger stack for the browser tests (web/e2e), started and restarted from Playwright.

    python -m tests.browser.stack serve        # `messenger serve`: embedded broker, SQLite
    python -m tests.browser.stack mosquitto    # the production topology: Mosquitto + plugin,
                                               # API, two handlers, a worker, the bridge

Every port is a free one on 127.0.0.1. When the stack answers, one JSON line goes to stdout::

    {"stack": "serve", "app": "http://127.0.0.1:P", "control": "http://127.0.0.1:C",
     "billing_url": "...", "admin_key": "...", "workdir": "/tmp/...", "logs": ["/tmp/.../serve.log", ...]}

``app`` is where the chat app and the API are (the app finds the broker through
``GET /v1/config``). ``control`` is this process's own HTTP endpoint for the tests:

``POST /stop``   stop "the server" as a user sees it, gracefully (SIGTERM): ``messenger serve``;
                 in the topology Mosquitto and the API (the handlers, worker and bridge stay and
                 reconnect, as in a rolling deploy of the edge)
``POST /start``  start it again on the same ports, with the same data, once it answers

The stack stops (and its temporary files go) when stdin closes or on SIGTERM/SIGINT: the test
runner that spawned it ends it by closing the pipe, also when it crashes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import httpx

from scripts.topology import ROOT, Topology, free_port

#: Where a member whose tip was declined fixes their payment method (the tests check the link).
BILLING_URL = "https://billing.example.test/settings/payment"
#: The operator key (X-Admin-Key) the tests revoke tokens with.
ADMIN_KEY = secrets.token_hex(16)
#: The database of the production topology; ``messenger serve`` gets a SQLite file of its own.
DATABASE_URL = os.environ.get("MESSENGER_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("MESSENGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Stack(Protocol):
    app: str
    logs: list[Path]

    def start(self) -> None: ...
    def stop_server(self) -> None: ...
    def start_server(self) -> None: ...
    def close(self) -> None: ...


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    return False


class ServeStack:
    """``messenger serve`` on its embedded defaults (SQLite in the work directory, in-process
    presence), as ``make serve`` runs it, on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {"mqtt": free_port(), "ws": free_port(), "api": free_port()}
        self.app = f"http://127.0.0.1:{self.ports['api']}"
        self.logs = [workdir / "serve.log"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.start_server()

    def start_server(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")} | {
            "MESSENGER_DATABASE_URL": f"sqlite:///{self.workdir / 'serve.db'}",
            "MESSENGER_BILLING_PREFERENCES_URL": BILLING_URL,
            "MESSENGER_ADMIN_KEY": ADMIN_KEY,
            "MESSENGER_LOG_LEVEL": "INFO",
        }
        argv = [sys.executable, "-m", "launch.cli", "serve"]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        with self.logs[0].open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while not _healthy(self.app):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"messenger serve did not start; see {self.logs[0]}")
            time.sleep(0.1)

    def stop_server(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop_server()


class MosquittoStack:
    """The production topology of ``make topology`` (scripts/topology.py) on free ports, against
    the machine's MariaDB and Redis, with the app's broker URL set as production sets it."""

    def __init__(self, workdir: Path) -> None:
        self.topology = Topology(
            database_url=DATABASE_URL,
            redis_url=REDIS_URL,
            handlers=2,
            workers=1,
            workdir=workdir,
            extra_env={"MESSENGER_BILLING_PREFERENCES_URL": BILLING_URL, "MESSENGER_ADMIN_KEY": ADMIN_KEY},
        )
        self.app = self.topology.api_url
        names = ("api", "mosquitto", "handler-1", "handler-2", "worker-1", "bridge")
        self.logs = [self.topology.log(name) for name in names]

    def start(self) -> None:
        self.topology.start()

    def stop_server(self) -> None:
        for name in ("mosquitto", "api"):
            if name in self.topology.procs:
                self.topology.kill(name, signal.SIGTERM)

    def start_server(self) -> None:
        if "api" not in self.topology.procs:
            self.topology.start_api()
        if "mosquitto" not in self.topology.procs:
            self.topology.start_mosquitto()

    def close(self) -> None:
        self.topology.stop()


def _control(stack: Stack) -> ThreadingHTTPServer:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            actions = {"/stop": stack.stop_server, "/start": stack.start_server}
            action = actions.get(self.path)
            if action is None:
                self._answer(404, {"error": f"no {self.path}; POST /stop or /start"})
                return
            try:
                with lock:
                    action()
            except Exception as exc:  # the test shows why, with the logs' paths
                self._answer(500, {"error": repr(exc), "logs": [str(p) for p in stack.logs]})
                return
            self._answer(200, {"ok": True})

        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", choices=["serve", "mosquitto"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix=f"messenger-e2e-{args.stack}-"))
    (workdir / "logs").mkdir()
    stack: Stack = ServeStack(workdir) if args.stack == "serve" else MosquittoStack(workdir)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    control: ThreadingHTTPServer | None = None
    try:
        stack.start()
        control = _control(stack)
        ready = {
            "stack": args.stack,
            "app": stack.app,
            "control": f"http://127.0.0.1:{control.server_port}",
            "billing_url": BILLING_URL,
            "admin_key": ADMIN_KEY,
            "workdir": str(workdir),
            "logs": [str(p) for p in stack.logs],
        }
        print(json.dumps(ready), flush=True)

        def until_stdin_closes() -> None:  # the runner closes it when it is done (or dies)
            sys.stdin.read()
            done.set()

        threading.Thread(target=until_stdin_closes, daemon=True).start()
        done.wait()
    finally:
        if control is not None:
            control.shutdown()
        stack.close()
        if not os.environ.get("MESSENGER_E2E_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
