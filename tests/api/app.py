"""The app under test for the REST tests: :func:`api.app.create_app` around real deps.

:func:`client_maker` gives a ``make(**overrides)`` that builds a :class:`TestClient` around
``ApiDeps``: a fresh in-memory presence store and metrics, the dev-secret verifier,
:data:`LOGIN_URL` and :data:`ADMIN_KEY`, then the maker's own defaults (sessions, publisher,
...), then the call's keyword overrides. Every client is closed when the ``with`` ends::

    @pytest.fixture
    def make_client(sessions, publisher):
        with client_maker(sessions=sessions, publisher=publisher) as make:
            yield make
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from acl.tokens import TokenConfig, TokenVerifier
from api.app import create_app
from api.deps import ApiDeps
from messenger.constants import DEV_SECRET
from messenger.metrics import Metrics
from messenger.presence import MemoryPresenceStore
from tests.api.testclient import TestClient

MakeClient = Callable[..., TestClient]

LOGIN_URL = "http://login.example/login?app=messenger"
ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex
VERIFIER = TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))


@contextmanager
def client_maker(**defaults: Any) -> Iterator[MakeClient]:
    """Yield ``make(**overrides)``; keyword arguments (here, then there) replace fields of ApiDeps."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            fields: dict[str, Any] = {
                "presence": MemoryPresenceStore(),
                "verifier": VERIFIER,
                "login_url": LOGIN_URL,
                "metrics": Metrics(),
                "admin_key": ADMIN_KEY,
            }
            return stack.enter_context(TestClient(create_app(ApiDeps(**(fields | defaults | overrides)))))

        yield make
