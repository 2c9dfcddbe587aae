"""Fixtures of the chaos suite: its own MariaDB and Redis, the fake list and billing services,
the production topology on them, and the load; the count tables in the terminal summary.

``CHAOS_SCALE`` picks the size: ``short`` (default: what ``make test`` and ``.ci/run`` run) or
``full`` (``make chaos``, for release checks). See docs/chaos.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import create_db_engine, session_factory
from scripts.topology import ROOT, Topology
from tests.chaos.load import SCALES, Counts, Load, Scale, count
from tests.chaos.services import PrivateMariaDB, PrivateRedis, missing_binaries
from tests.fakes import FakeServices

SCALE: Scale = SCALES[os.environ.get("CHAOS_SCALE", "short")]
REPORT_DIR = ROOT / "var" / "chaos"
REPORTS = pytest.StashKey[list[str]]()
#: Per-test timeout: start-up, the load, the outage, the bounded settle and the catch-up.
TIMEOUT_S = int(180 + 3 * SCALE.duration_s + 2 * SCALE.outage_s + SCALE.settle_s + 120)
#: When the fault starts, as a share of the load's duration.
FAULT_AT = 0.25


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the chaos suite (tests/chaos, CHAOS_SCALE=short|full)")
    config.stash[REPORTS] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    reports = config.stash.get(REPORTS, [])
    if reports:
        terminalreporter.section(f"chaos count tables ({SCALE.name}; also in {REPORT_DIR})")
        for report in reports:
            terminalreporter.write_line(report + "\n")


def _require_binaries() -> None:
    if missing := missing_binaries():
        why = f"the chaos suite starts its own servers; not installed here: {', '.join(missing)}"
        if os.environ.get("MESSENGER_CHAOS_REQUIRED") == "1":  # CI: a missing server is a failure
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[PrivateMariaDB]:
    """The suite's own ``mariadbd`` (never the machine's on 3306); each scenario has a database.
    Its data directory is not under pytest's temporary directories, which another pytest run on
    the machine may remove while this one still runs."""
    _require_binaries()
    root = Path(tempfile.mkdtemp(prefix="messenger-chaos-mariadb-"))
    server = PrivateMariaDB(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Path:
    """The scenario's directory, var/chaos/<scale>-<scenario>/: the topology's logs and Mosquitto's
    persistence, Redis's directory; kept after the run for a look at the logs."""
    path = REPORT_DIR / f"{SCALE.name}-{request.node.name.removeprefix('test_')}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def redis_server(workdir: Path) -> Iterator[PrivateRedis]:
    """The scenario's own ``redis-server`` (never the machine's on 6379)."""
    _require_binaries()
    with PrivateRedis(workdir / "redis") as server:
        yield server


@dataclass
class Chaos:
    """One scenario's stack: the private services, the fakes, the topology and the load."""

    name: str
    scale: Scale
    mariadb: PrivateMariaDB
    redis: PrivateRedis
    fake: FakeServices
    topology: Topology
    sessions: sessionmaker[Session]
    reports: list[str]
    load: Load = field(init=False)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.load = Load(
            self.scale,
            mqtt_port=self.topology.mqtt_port,
            api_url=self.topology.api_url,
            fake=self.fake,
            sessions=self.sessions,
        )

    def note(self, text: str) -> None:
        elapsed = time.monotonic() - self.load.load_started if self.load.load_started else 0.0
        self.notes.append(f"+{elapsed:.1f}s {text}")

    def run(self, fault: Callable[[Chaos], None]) -> Counts:
        """The load, with ``fault`` injected a quarter of the way in (in a thread of its own,
        while the load goes on); then the bounded settle, the catch-up and the count table."""
        load = self.load
        load.prepare()
        errors: list[BaseException] = []
        started = threading.Event()

        def inject() -> None:
            started.wait()
            time.sleep(self.scale.duration_s * FAULT_AT)
            try:
                fault(self)
            except BaseException as exc:
                errors.append(exc)

        injector = threading.Thread(target=inject, name="chaos-fault", daemon=True)
        injector.start()
        try:
            load.run(on_tick=lambda _elapsed: started.set())
            injector.join(self.scale.outage_s * 4 + 180)
            if injector.is_alive():
                raise AssertionError("the fault did not end within its bound")
            if errors:
                raise errors[0]
            self.note("load sent; waiting for the outstanding acks")
            load.settle()
            self.note("settled; catch-up")
            load.catch_up()
            self.note("caught up")
            counts = count(load, self.name, self.notes)
        finally:
            load.close()
        report = counts.render()
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / f"{self.scale.name}-{self.name}.txt").write_text(report + "\n")
        self.reports.append(report)
        print("\n" + report)
        return counts


@pytest.fixture
def chaos(
    request: pytest.FixtureRequest, mariadb: PrivateMariaDB, redis_server: PrivateRedis, workdir: Path
) -> Iterator[Chaos]:
    """The production topology (Mosquitto with the plugin, the API, two handlers, a worker, the
    bridge) on the suite's MariaDB and Redis, lists and billing played by :class:`FakeServices`."""
    mariadb.start()  # a scenario before may have failed while it was stopped
    name = request.node.name.removeprefix("test_")
    database = f"chaos_{uuid.uuid4().hex[:8]}"
    url = mariadb.create_database(database)
    engine = create_db_engine(url)
    failed_before = request.session.testsfailed
    with FakeServices(slow_s=2.5) as fake:
        topology = Topology(
            database_url=url,
            redis_url=redis_server.url(),
            handlers=2,
            workers=1,
            # the plugin's grant cache (30 s by default) would admit a reconnect without the
            # gateway; short, so a client that reconnects while the API is down meets the outage
            cache_ttl_s=2,
            # on, so every batch asks Redis; high enough that the load stays under it
            send_rate_per_s=50,
            workdir=workdir / "topology",
            extra_env={
                "MESSENGER_SEND_BURST": "500",
                # the load's tips and resends of tips, high above what a person sends
                "MESSENGER_TIP_RATE_PER_S": "50",
                "MESSENGER_TIP_BURST": "500",
                "MESSENGER_LISTS_URL": fake.url,
                "MESSENGER_BILLING_URL": fake.url,
                "MESSENGER_SERVICES_TIMEOUT_S": "1",
                "MESSENGER_TIP_RETRY_S": "0.5",
                "MESSENGER_SYNC_PAGE_SIZE": "1000",
                "MESSENGER_FANOUT_PAGE_SIZE": "50",
            },
        )
        try:
            with topology.running():
                yield Chaos(
                    name,
                    SCALE,
                    mariadb,
                    redis_server,
                    fake,
                    topology,
                    session_factory(engine),
                    request.config.stash[REPORTS],
                )
        finally:
            engine.dispose()
            if request.session.testsfailed > failed_before and topology.workdir is not None:
                for log in sorted((topology.workdir / "logs").glob("*.log")):
                    tail = log.read_text(errors="replace").splitlines()[-30:]
                    print(f"\n--- {log.name} (last lines) ---\n" + "\n".join(tail))
            mariadb.start()
            mariadb.drop_database(database)
