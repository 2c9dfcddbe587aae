"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Stack
from tests.e2e.helpers import Clients


@pytest.fixture
def clients(stack: Stack) -> Iterator[Clients]:
    """Test clients on ``stack``, all closed after the test."""
    pool = Clients(stack)
    try:
        yield pool
    finally:
        pool.close_all()
