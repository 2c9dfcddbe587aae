"""A write whose commit fails is answered with that failure, never with a 200."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from acl.tokens import TokenConfig, TokenVerifier
from api.app import create_app
from api.deps import ApiDeps
from messenger.constants import DEV_SECRET
from messenger.db import session_factory, unit_of_work
from messenger.mqtt import MqttPublisher
from messenger.presence import MemoryPresenceStore
from messenger.repositories import blocks
from tests.api.testclient import TestClient
from tests.conftest import token


class _CommitFails(Session):
    def commit(self) -> None:
        raise OperationalError("COMMIT", {}, Exception("the disk went away"))


def test_a_failed_commit_is_a_503_and_nothing_is_stored(
    engine: Engine, make_user: Callable[..., str], publisher: MqttPublisher
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    failing = sessionmaker(engine, class_=_CommitFails, expire_on_commit=False)
    verifier = TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))
    client = TestClient(
        create_app(ApiDeps(failing, MemoryPresenceStore(), verifier, publisher, "http://login"))
    )

    response = client.put(f"/v1/blocks/{bob}", headers={"Authorization": f"Bearer {token(alice)}"})

    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    with unit_of_work(session_factory(engine)) as session:
        assert blocks.get(session, alice, bob) is None
