"""The production processes as an orchestrator runs them: real processes, their internal listener,
their start-up checks, their waiting for dependencies, and ``messenger probe``.

The whole topology with every internal listener is in ``tests/e2e/test_topology_health.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest

from acl.tokens import issue_token
from launch import cli
from messenger.constants import DEV_SECRET
from scripts.topology import ROOT, free_port
from tests.fakes import CHARGES, FakeServices, Recorded

REDIS_URL = os.environ.get("MESSENGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "a-production-secret-of-at-least-32-bytes"
GATEWAY_SECRET = "gateway-secret-0123456789"
#: More than Starlette's worker threads per event loop (anyio's default, 40), and than the
#: database connections and billing connections of the process
TIPPERS = 50


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env["MESSENGER_SECRETS_DIR"] = "/nonexistent"  # this machine's /run/secrets is not ours
    return env | extra


def messenger(*argv: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def role_env(internal: int, **extra: str) -> dict[str, str]:
    """A process role on the development secret with its internal listener on ``internal``, Redis,
    and a broker port where nothing listens (liveness and readiness must not need one)."""
    return base_env(
        MESSENGER_ENVIRONMENT="development",
        MESSENGER_REDIS_URL=REDIS_URL,
        MESSENGER_MQTT_PORT=str(free_port()),
        MESSENGER_INTERNAL_PORT=str(internal),
        **extra,
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'messenger.db'}"


class Running:
    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc, self.log = proc, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_logged(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()}"
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.output()}")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def run(command: str, env: dict[str, str]) -> Running:
        log = tmp_path / f"{command}-{len(procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "launch.cli", command],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        procs.append(proc)
        return Running(proc, log)

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5)


def wait_status(url: str, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = get(url)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s (last: {last!r})")


def wait_steady(count: Callable[[], int], quiet_s: float = 2.0, timeout: float = 60) -> int:
    """Wait until ``count()`` has not changed for ``quiet_s``; return it."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"still changing after {timeout}s"
        time.sleep(0.1)
        if (now := count()) != last:
            last, since = now, time.monotonic()
    return last


# --- start-up refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["api", "handler", "worker", "bridge"])
def test_a_production_role_refuses_the_dev_secret_it_was_not_told_to_use(command: str) -> None:
    result = messenger(command, env=base_env(MESSENGER_REDIS_URL=REDIS_URL))
    assert result.returncode == 1
    assert "published development secret" in result.stderr
    assert "MESSENGER_ENVIRONMENT=development" in result.stderr


def test_the_dev_secret_in_production_is_a_configuration_error() -> None:
    result = messenger(
        "handler",
        env=base_env(MESSENGER_ENVIRONMENT="production", MESSENGER_JWT_SECRET=DEV_SECRET),
    )
    assert result.returncode == 2
    assert "MESSENGER_JWT_SECRET is the published development secret" in result.stderr


def test_the_api_in_production_needs_the_gateway_secret() -> None:
    env = base_env(
        MESSENGER_ENVIRONMENT="production", MESSENGER_JWT_SECRET=SECRET, MESSENGER_REDIS_URL=REDIS_URL
    )
    result = messenger("api", env=env)
    assert result.returncode == 1
    assert "needs MESSENGER_GATEWAY_SECRET" in result.stderr


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "messenger_jwt_secret").write_text(SECRET)
    env = base_env(MESSENGER_SECRETS_DIR=str(tmp_path), MESSENGER_ENVIRONMENT="production")
    result = messenger("token", "issue", "alice", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["sub"] == "alice"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(result.stdout.strip(), DEV_SECRET, algorithms=["HS256"], options={"verify_aud": False})


def test_one_shot_commands_print_only_their_answer(sqlite_url: str) -> None:
    env = base_env(MESSENGER_DATABASE_URL=sqlite_url)
    added = messenger("users", "add", "carol", env=env)
    assert (added.returncode, added.stdout, added.stderr) == (0, "user carol (member)\n", "")
    issued = messenger("token", "issue", "carol", env=env)
    assert issued.returncode == 0 and issued.stderr == ""
    verbose = messenger("-v", "db", "upgrade", env=env)
    assert verbose.returncode == 0
    assert "database schema up to date" in verbose.stdout
    assert "INFO" in verbose.stderr  # asked for more, it logs


# --- messenger probe -------------------------------------------------------------------------------


@pytest.mark.redis
def test_probe_answers_by_the_health_endpoint(start: object, sqlite_url: str) -> None:
    port, internal = free_port(), free_port()
    env = role_env(internal, MESSENGER_DATABASE_URL=sqlite_url)
    handler = start("handler", env)  # type: ignore[operator]
    assert messenger("probe", f"http://127.0.0.1:{port}/healthz", env=env).returncode == 1
    wait_status(f"http://127.0.0.1:{internal}/healthz", 200)
    assert messenger("probe", env=env).returncode == 0  # the default: MESSENGER_INTERNAL_PORT
    refused = messenger("probe", f"http://127.0.0.1:{internal}/readyz", env=env)
    assert refused.returncode == 1
    assert "answered 503" in refused.stderr
    handler.proc.send_signal(signal.SIGTERM)
    assert handler.proc.wait(timeout=20) == 0


# --- waiting for dependencies, with readiness saying why -------------------------------------------


@pytest.mark.redis
def test_a_handler_waits_for_the_schema_and_readiness_says_why(start: object, sqlite_url: str) -> None:
    internal = free_port()
    env = role_env(internal, MESSENGER_DATABASE_URL=sqlite_url)
    handler = start("handler", env)  # type: ignore[operator]
    handler.wait_logged("waiting for the database")
    assert "run `messenger db upgrade`" in handler.output()
    assert get(f"http://127.0.0.1:{internal}/healthz").status_code == 200  # alive while it waits
    body = get(f"http://127.0.0.1:{internal}/readyz").json()
    assert body["status"] == "unavailable"
    assert "schema is at nothing" in body["checks"]["database"]

    assert messenger("db", "upgrade", env=env).returncode == 0
    handler.wait_logged("starting: broker")
    body = get(f"http://127.0.0.1:{internal}/readyz").json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "error: not subscribed"  # no broker on that port
    assert handler.proc.poll() is None  # waiting, never crashing

    metrics = get(f"http://127.0.0.1:{internal}/metrics")
    assert metrics.status_code == 200
    for name in (
        "messenger_handler_commands_received_total",
        "messenger_handler_queue_depth",
        "messenger_handler_batch_size",
    ):
        assert name in metrics.text


@pytest.mark.redis
def test_an_unreachable_database_is_waited_for_and_named(start: object) -> None:
    internal = free_port()
    dead = f"mysql+pymysql://root@127.0.0.1:{free_port()}/test"
    env = role_env(internal, MESSENGER_DATABASE_URL=dead)
    worker = start("worker", env)  # type: ignore[operator]
    worker.wait_logged("waiting for the database")
    assert "does not answer (OperationalError" in worker.output()
    body = wait_status(f"http://127.0.0.1:{internal}/readyz", 503).json()
    assert body["checks"]["database"].startswith("error: mysql+pymysql://root@127.0.0.1:")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0  # a stop while waiting is a clean stop


@pytest.mark.redis
def test_the_bridge_serves_readiness_and_metrics(start: object) -> None:
    internal = free_port()
    env = role_env(internal)
    start("bridge", env)  # type: ignore[operator]
    body = wait_status(f"http://127.0.0.1:{internal}/readyz", 503).json()
    assert body["checks"] == {"presence": "ok", "broker": "error: not subscribed"}
    assert "messenger_presence_changes_applied_total" in get(f"http://127.0.0.1:{internal}/metrics").text
    assert get(f"http://127.0.0.1:{internal}/nothing").status_code == 404


@pytest.mark.redis
def test_the_api_moves_the_gateway_and_metrics_to_the_internal_port(start: object, sqlite_url: str) -> None:
    port, internal = free_port(), free_port()
    env = role_env(
        internal,
        MESSENGER_DATABASE_URL=sqlite_url,
        MESSENGER_API_PORT=str(port),
        MESSENGER_GATEWAY_SECRET=GATEWAY_SECRET,
    )
    assert messenger("db", "upgrade", env=env).returncode == 0
    start("api", env)  # type: ignore[operator]
    public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal}"
    wait_status(f"{public}/healthz", 200)
    wait_status(f"{private}/healthz", 200)
    token = messenger("token", "issue", "alice", env=env).stdout.strip()
    login = {"username": "alice", "password": token, "clientid": "alice/web-1"}
    headers = {"X-Gateway-Secret": GATEWAY_SECRET}

    assert httpx.post(f"{public}/mqtt/user", json=login, headers=headers).status_code == 404
    assert get(f"{public}/metrics").status_code == 404
    assert "/mqtt/user" not in json.dumps(get(f"{public}/openapi.json").json()["paths"])
    answer = httpx.post(f"{private}/mqtt/user", json=login, headers=headers)
    assert (answer.status_code, answer.json()["result"]) == (200, "allow")
    assert "messenger_http_request_seconds" in get(f"{private}/metrics").text
    assert get(f"{private}/openapi.json").status_code == 404  # nothing to browse in there


def test_cli_probe_without_a_listener_fails_fast(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", f"http://127.0.0.1:{free_port()}/healthz", "--timeout", "1"]) == 1
    assert "ConnectError" in capsys.readouterr().err


@pytest.mark.redis
def test_the_gateway_answers_while_public_requests_hold_every_worker(start: object, sqlite_url: str) -> None:
    """Admission is not starvable by public traffic: with every worker thread of the public app
    held by tips waiting on a stalled billing service, a broker's login check still answers."""
    port, internal = free_port(), free_port()
    release = threading.Event()

    def stall(request: Recorded) -> tuple[int, object]:
        release.wait(60)
        return fake.answer(request)

    with FakeServices() as fake:
        fake.script(CHARGES, [], then=stall)
        env = role_env(
            internal,
            MESSENGER_DATABASE_URL=sqlite_url,
            MESSENGER_API_PORT=str(port),
            MESSENGER_GATEWAY_SECRET=GATEWAY_SECRET,
            MESSENGER_BILLING_URL=fake.url,
            MESSENGER_SERVICES_TIMEOUT_S="60",
            MESSENGER_SERVICES_RETRIES="0",
            MESSENGER_SEND_RATE_PER_S="0",
        )
        # ids of this run only: the rate-limit buckets (declined charges...) live in the shared Redis
        run = uuid.uuid4().hex[:8]
        creator = f"stall-creator-{run}"
        assert messenger("users", "add", creator, "--role", "creator", env=env).returncode == 0
        start("api", env)  # type: ignore[operator]
        public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal}"
        wait_status(f"{public}/healthz", 200)
        tippers = [f"stall-{run}-{n}" for n in range(TIPPERS)]
        pool = ThreadPoolExecutor(max_workers=TIPPERS)
        try:
            tips = [
                pool.submit(
                    httpx.post,
                    f"{public}/v1/tips",
                    json={"to": creator, "amount": 100, "currency": "USD"},
                    headers={"Authorization": f"Bearer {issue_token(DEV_SECRET, user)}"},
                    timeout=90,
                )
                for user in tippers
            ]
            held = wait_steady(lambda: len(fake.requests_for(CHARGES)))
            assert held >= 10, "the stalled charges should hold the public app's workers"

            login = {"username": "alice", "password": issue_token(DEV_SECRET, "alice"), "clientid": "alice/a"}
            answer = httpx.post(
                f"{private}/mqtt/user", json=login, headers={"X-Gateway-Secret": GATEWAY_SECRET}, timeout=10
            )
            assert (answer.status_code, answer.json()["result"]) == (200, "allow")
        finally:
            release.set()
            statuses = [tip.result().status_code for tip in tips]
            pool.shutdown()
        # released, every tip was answered; waiting too long for a database connection is a 503
    assert set(statuses) <= {201, 402, 503}
    assert 500 not in statuses
