"""Shared fixtures: real databases, Redis and a whole Messenger stack on ephemeral ports.

Backends come from the environment, with localhost defaults:

* ``MESSENGER_TEST_BACKENDS``: comma-separated subset of ``sqlite,mariadb`` (default both).
* ``MESSENGER_TEST_MARIADB_URL`` (default ``mysql+pymysql://root@127.0.0.1:3306/test``).
* ``MESSENGER_TEST_PRESENCE``: subset of ``memory,redis`` (default both);
  ``MESSENGER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
* ``MESSENGER_TEST_MQTT`` (default ``127.0.0.1:1883``): a plain MQTT broker (the machine's
  Mosquitto) that the API tests publish to and watch, instead of a whole stack.

A requested backend that does not answer fails the run: CI must exercise the real services.
Tests isolate themselves with unique user ids, never by wiping shared tables. One thing ids do
not isolate: the background workers of a running stack (fan-out, tip settlement) take any queued
mass message or due tip in their database, as production handlers sharing a database must. Tests
that queue such work and drive it by hand claim it by id, and leave nothing queued or due behind
them; a benchmark run at the same time against the same database can still take it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from acl.tokens import issue_token
from launch.serve import Endpoints, Messenger
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine, migrate, session_factory, unit_of_work
from messenger.mqtt import MqttPublisher, service_client
from messenger.presence import MemoryPresenceStore, PresenceStore, RedisPresenceStore
from messenger.repositories import users
from messenger.settings import ServeSettings

MARIADB_URL = os.environ.get("MESSENGER_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

# Property tests are deterministic here (derandomized, no example database), so CI reruns the
# same examples; each test sets only its own max_examples.
settings.register_profile(
    "messenger",
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("messenger")

REDIS_URL = os.environ.get("MESSENGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = [b for b in os.environ.get("MESSENGER_TEST_BACKENDS", "sqlite,mariadb").split(",") if b]
PRESENCE = [p for p in os.environ.get("MESSENGER_TEST_PRESENCE", "memory,redis").split(",") if p]
MQTT_HOST, _, _MQTT_PORT = os.environ.get("MESSENGER_TEST_MQTT", "127.0.0.1:1883").partition(":")
MQTT_PORT = int(_MQTT_PORT or 1883)


def pytest_report_header() -> list[str]:
    return [f"messenger backends: {','.join(BACKENDS)}; presence: {','.join(PRESENCE)}"]


def _database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'messenger-test.db'}"
    if backend == "mariadb":
        return MARIADB_URL
    raise ValueError(f"unknown backend {backend!r}")


@contextmanager
def fresh_database(backend: str, tmp_path: Path, name: str = "db") -> Iterator[str]:
    """A database URL nobody else uses: a new SQLite file under ``tmp_path``, or a new database
    ``<test db>_<name>_<hex>`` on the MariaDB server, dropped on the way out."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'{name}-{uuid.uuid4().hex[:8]}.db'}"
        return
    base = make_url(MARIADB_URL)
    database = f"{base.database}_{name}_{uuid.uuid4().hex[:8]}"
    server = create_db_engine(base.set(database="").render_as_string(hide_password=False))
    try:
        with server.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{database}`"))
        yield base.set(database=database).render_as_string(hide_password=False)
    finally:
        with server.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
        server.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Each configured database backend, migrated once per session."""
    engine = create_db_engine(_database_url(request.param, tmp_path_factory))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def make_uid() -> Callable[[str], str]:
    """Unique user ids, so tests sharing a database never see each other's rows."""

    def make(name: str = "u") -> str:
        return f"{name}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def make_user(sessions: sessionmaker[Session], make_uid: Callable[[str], str]) -> Callable[..., str]:
    """Create a user in the database and return its id."""

    def make(name: str = "u", role: str = "member") -> str:
        user_id = make_uid(name)
        with unit_of_work(sessions) as session:
            users.ensure(session, user_id, role)
        return user_id

    return make


@pytest.fixture(params=PRESENCE)
def presence_store(request: pytest.FixtureRequest) -> Iterator[PresenceStore]:
    store: PresenceStore = MemoryPresenceStore()
    if request.param == "redis":
        store = RedisPresenceStore(REDIS_URL)
    if not store.ping():
        pytest.fail(f"presence store {request.param} is not reachable at {REDIS_URL}")
    yield store
    store.close()


@pytest.fixture(scope="session")
def publisher() -> Iterator[MqttPublisher]:
    """The API's publisher, connected to the plain test broker (see MESSENGER_TEST_MQTT)."""
    client = service_client(user="messenger-test", token="unused", name=f"api-{uuid.uuid4().hex[:8]}")
    pub = MqttPublisher(client)
    try:
        pub.start(MQTT_HOST, MQTT_PORT, wait_s=10)
    except TimeoutError:
        pytest.fail(f"no MQTT broker at {MQTT_HOST}:{MQTT_PORT} (MESSENGER_TEST_MQTT)")
    yield pub
    pub.stop()


def token(user_id: str, role: Role = Role.MEMBER, **kwargs: object) -> str:
    """A dev token, as ``messenger token issue`` prints it."""
    return issue_token(DEV_SECRET, user_id, role=role, **kwargs)  # type: ignore[arg-type]


@dataclass
class Stack:
    """A running ``messenger serve`` (in a background event loop) and what tests need to use it."""

    app: Messenger
    endpoints: Endpoints

    @property
    def mqtt_port(self) -> int:
        return self.endpoints.mqtt[1]

    @property
    def ws_port(self) -> int:
        assert self.endpoints.ws is not None
        return self.endpoints.ws[1]

    @property
    def api_url(self) -> str:
        host, port = self.endpoints.api
        return f"http://{host}:{port}"

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.app.sessions


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stack-loop", daemon=True)
        self.thread.start()

    def run(self, coro: object, timeout: float = 30) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(
    scope="module", params=[(b, p) for b in BACKENDS for p in PRESENCE], ids=lambda bp: f"{bp[0]}-{bp[1]}"
)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole product on ephemeral loopback ports, against each database and presence store."""
    backend, presence = request.param
    database_url = _database_url(backend, tmp_path_factory)
    with running_stack(stack_settings(database_url, REDIS_URL if presence == "redis" else None)) as stack:
        yield stack


def stack_settings(database_url: str, redis_url: str | None, **overrides: Any) -> ServeSettings:
    """``messenger serve`` settings for a test: ephemeral loopback ports, its own node and
    service user, quiet logs; ``overrides`` set anything else."""
    return ServeSettings(
        environment="development",
        database_url=database_url,
        redis_url=redis_url,
        bind_host="127.0.0.1",
        mqtt_port=0,
        ws_port=0,
        api_port=0,
        node_id=f"test-{uuid.uuid4().hex[:6]}",
        service_user=f"svc-{uuid.uuid4().hex[:6]}",
        log_level="WARNING",
        **overrides,
    )


@contextmanager
def running_stack(settings: ServeSettings) -> Iterator[Stack]:
    """The whole product started in a thread's event loop, stopped on exit."""
    loop = _LoopThread()
    try:
        app = Messenger(settings)
        endpoints = loop.run(app.start())
        assert isinstance(endpoints, Endpoints)
        try:
            yield Stack(app, endpoints)
        finally:
            loop.run(app.stop())
    finally:
        loop.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
