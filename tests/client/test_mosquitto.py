"""The client library against the production topology: Mosquitto with the project's plugin,
``messenger api``, two handlers on a shared subscription and the bridge, on MariaDB and Redis
(tests/e2e/deployed.py). One topology for the module: it takes seconds to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client import scenarios
from tests.client.helpers import run
from tests.e2e.deployed import Deployed, deploy


@pytest.fixture(scope="module")
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployed]:
    yield from deploy(request, {})


def test_send_and_receive_both_ways(deployed: Deployed) -> None:
    run(scenarios.send_and_receive_both_ways(deployed))


def test_dropped_connection_catches_up(deployed: Deployed) -> None:
    run(scenarios.dropped_connection_catches_up(deployed))


def test_resend_is_stored_once(deployed: Deployed) -> None:
    run(scenarios.resend_is_stored_once(deployed))


def test_back_to_back_sends_keep_their_order(deployed: Deployed) -> None:
    run(scenarios.back_to_back_sends_keep_their_order(deployed))
