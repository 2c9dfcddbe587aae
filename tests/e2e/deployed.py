"""The production topology (``scripts/topology.py``) as a module fixture of the e2e tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session, sessionmaker

from messenger.db import create_db_engine, session_factory
from scripts.topology import Topology
from tests.conftest import MARIADB_URL, REDIS_URL


@dataclass
class Deployed:
    """The running topology, shaped like the ``stack`` the other e2e tests use."""

    topology: Topology
    sessions: sessionmaker[Session]

    @property
    def mqtt_port(self) -> int:
        return self.topology.mqtt_port

    @property
    def ws_port(self) -> int:
        return self.topology.ws_port

    @property
    def api_url(self) -> str:
        return self.topology.api_url


def deploy(
    request: pytest.FixtureRequest, extra_env: dict[str, str], *, handlers: int = 2, workers: int = 0
) -> Iterator[Deployed]:
    """Mosquitto with the plugin, the API, the handlers (and ``messenger worker`` processes) and
    the bridge on MariaDB and Redis, with the per-user send limit off; prints the tail of every
    log when a test failed."""
    topology = Topology(
        database_url=MARIADB_URL,
        redis_url=REDIS_URL,
        handlers=handlers,
        workers=workers,
        send_rate_per_s=0,
        extra_env=extra_env,
    )
    engine = create_db_engine(MARIADB_URL)
    failed_before = request.session.testsfailed
    try:
        with topology.running():
            yield Deployed(topology, session_factory(engine))
    finally:
        engine.dispose()
        if request.session.testsfailed > failed_before and topology.workdir is not None:
            for log in sorted((topology.workdir / "logs").glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-40:]
                print(f"\n--- {log.name} (last lines) ---\n" + "\n".join(tail))
        topology.cleanup()
