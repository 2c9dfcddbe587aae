"""Fixtures of the client library's tests: one embedded stack for the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS, MARIADB_URL, Stack, running_stack, stack_settings


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``messenger serve`` on ephemeral ports: one database and in-process presence are enough
    here (the stack's own tests cover the backends; these cover the client)."""
    if "sqlite" in BACKENDS:
        database_url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'messenger.db'}"
    else:
        database_url = MARIADB_URL
    with running_stack(stack_settings(database_url, None)) as stack:
        yield stack
