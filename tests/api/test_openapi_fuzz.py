"""Property-based run of the OpenAPI schema (schemathesis) against the real app.

Every operation of ``/openapi.json`` gets generated requests, valid and invalid, sent through
schemathesis' ASGI transport to the app wired to each database, presence store and the MQTT
broker. The answers must not be server errors and must conform to the schema: status code,
content type, headers and body.

The generator mixes placeholders of provisioned users into the user-id parameters (``with``,
``to``, ``users``, ``{user}``), and the test swaps them for real ids from ``make_user``, so that
requests get past "no such user". Ids the generator makes up are namespaced for the operator
writes (users, revocations), which keeps the shared MariaDB database free of stray rows.

CI time and determinism: a fixed seed, ``derandomize``, no example database, and a modest
number of examples per operation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier
from api.app import create_app
from api.deps import ApiDeps
from messenger.constants import DEV_SECRET
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher, Publisher
from messenger.presence import MemoryPresenceStore, PresenceStore
from messenger.ratelimit import Action, Limit, MemoryRateLimiter
from tests.conftest import token

ADMIN_KEY = "fuzz-admin-key-0123456789"
SEED = 20240611
MAX_EXAMPLES = 30
LOGIN_URL = "http://login.example/fuzz"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Placeholders the generator mixes into user ids; each test maps them to users it provisioned.
CALLER, PEER, OTHER, CREATOR = "fz-caller", "fz-peer", "fz-other", "fz-creator"


def _verifier() -> TokenVerifier:
    return TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))


def _load_schema() -> OpenApiSchema:
    """The schema as the app serves it; building ``/openapi.json`` touches none of the clients."""
    unused = cast(Publisher, None)
    app = create_app(ApiDeps(sessionmaker(), MemoryPresenceStore(), _verifier(), unused, LOGIN_URL))
    users = {"dictionary": "users", "probability": 0.5}
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "dictionaries": {
                "users": {"values": [CALLER, PEER, OTHER, CREATOR]},
                "admin_key": {"values": [ADMIN_KEY]},
            },
            "parameters": {
                "path.user": users,
                "query.with": users,
                "body.to": users,
                "body.with": users,
                "body.users[*]": users,
                "header.x-admin-key": {"dictionary": "admin_key", "probability": 0.3},
            },
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "deterministic": True},
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = _load_schema()


@dataclass(frozen=True)
class Target:
    app: FastAPI
    users: dict[str, str]  # placeholder -> provisioned id
    namespace: str  # prefix of the ids the generator makes up, in operator writes
    member: dict[str, str]
    service: dict[str, str]


@pytest.fixture
def target(
    sessions: sessionmaker[Session],
    presence_store: PresenceStore,
    publisher: MqttPublisher,
    make_user: Callable[..., str],
    make_uid: Callable[[str], str],
) -> Target:
    deps = ApiDeps(
        sessions,
        presence_store,
        _verifier(),
        publisher,
        login_url=LOGIN_URL,
        limiter=MemoryRateLimiter({Action.SEND: Limit(rate=0, burst=1)}),  # rate 0: not limited
        metrics=Metrics(),
        admin_key=ADMIN_KEY,
    )
    users = {
        CALLER: make_user("fzcaller"),
        PEER: make_user("fzpeer"),
        OTHER: make_user("fzother"),
        CREATOR: make_user("fzcreator", "creator"),
    }
    service = make_user("fzsvc", "service")
    return Target(
        app=create_app(deps),
        users=users,
        namespace=make_uid("fz") + "-",
        member={"Authorization": f"Bearer {token(users[CALLER])}"},
        service={"Authorization": f"Bearer {token(service, Role.SERVICE)}"},
    )


def _resolve(value: Any, users: dict[str, str]) -> Any:
    if isinstance(value, str):
        return users.get(value, value)
    if isinstance(value, list):
        return [_resolve(v, users) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, users) for k, v in value.items()}
    return value


def _namespace(value: Any, target: Target) -> Any:
    if isinstance(value, str) and value not in target.users.values():
        return target.namespace + value
    return value


def _prepare(case: schemathesis.Case, target: Target) -> dict[str, str]:
    """Swap placeholders for real ids, namespace made-up ones, and pick the caller's token."""
    if case.path_parameters:
        case.path_parameters = _resolve(case.path_parameters, target.users)
    if case.query:
        case.query = _resolve(case.query, target.users)
    if isinstance(case.body, dict | list):
        case.body = _resolve(case.body, target.users)
    if not case.operation.path.startswith("/v1/admin/"):
        return target.member
    if case.path_parameters and "user" in case.path_parameters:
        case.path_parameters["user"] = _namespace(case.path_parameters["user"], target)
    if isinstance(case.body, dict) and "user" in case.body:
        case.body["user"] = _namespace(case.body["user"], target)
    return target.service


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the app and its users serve every example alike
    ],
)
def test_openapi(case: schemathesis.Case, target: Target) -> None:
    headers = _prepare(case, target)
    case.call_and_validate(headers=headers, checks=CHECKS, app=target.app)
