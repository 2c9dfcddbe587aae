"""The broker gateway (``POST /mqtt/user``, ``/mqtt/acl``, ``/mqtt/superuser``) end to end.

Brokers (Mosquitto's plugin, EMQX, mosquitto-go-auth) ask these endpoints whether a CONNECT, a
publish, a subscription or a delivery may go ahead. Every call carries ``X-Gateway-Secret``;
the answer is always HTTP 200 with the decision in ``ok``/``result`` (403 without the secret,
4xx for a body that is not a request at all, 503 when the database is down).

Each test builds the real app around real deps (SQLite and MariaDB through ``sessions``, the
machine's Mosquitto through ``publisher``), as ``test_endpoints.py`` does. The topic rules run
from the shared vectors (``tests/acl/vectors.json``); their user ids are replaced with fresh
ones per test (whole topic levels and the client id prefix), so that rows provisioned in the
shared MariaDB never meet another test's users.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier, issue_token
from api.app import create_app
from api.deps import ApiDeps
from messenger.constants import DEV_SECRET
from messenger.db import create_db_engine, session_factory
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher
from messenger.presence import MemoryPresenceStore
from messenger.repositories import users
from tests.api.testclient import TestClient
from tests.conftest import token

MakeUid = Callable[[str], str]
Sessions = sessionmaker[Session]
MakeClient = Callable[..., TestClient]
Answer = dict[str, Any]

GATEWAY_SECRET = "test-gateway-secret-" + uuid.uuid4().hex
GATEWAY = {"X-Gateway-Secret": GATEWAY_SECRET}
ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex
ENDPOINTS = ("/mqtt/user", "/mqtt/acl", "/mqtt/superuser")
VERIFIER = TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))

VECTORS_PATH = Path(__file__).resolve().parent.parent / "acl" / "vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
TOPIC_ROWS = [r for r in VECTORS if r["action"] in ("publish", "subscribe", "receive")]
VECTOR_USERS = sorted({r["user"] for r in VECTORS})
#: How each vector action reaches the gateway: mosquitto-go-auth's ``acc`` and EMQX's ``action``.
ACC_OF_ACTION = {"receive": 1, "publish": 2, "subscribe": 4}
EMQX_ACTIONS = ("publish", "subscribe")


# --- the app ---


def gateway_deps(sessions: Sessions, publisher: MqttPublisher, **overrides: Any) -> ApiDeps:
    """Real deps with the gateway on; keyword arguments replace fields of ApiDeps."""
    fields: dict[str, Any] = {
        "sessions": sessions,
        "presence": MemoryPresenceStore(),
        "verifier": VERIFIER,
        "publisher": publisher,
        "login_url": "http://login.example/login",
        "metrics": Metrics(),
        "admin_key": ADMIN_KEY,
        "gateway_secret": GATEWAY_SECRET,
    }
    return ApiDeps(**(fields | overrides))


@pytest.fixture
def make_client(sessions: Sessions, publisher: MqttPublisher) -> Iterator[MakeClient]:
    """Build a TestClient around :func:`gateway_deps` on each database backend."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            app = create_app(gateway_deps(sessions, publisher, **overrides))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


# --- asking the gateway ---


def ask(client: TestClient, path: str, body: Any) -> Answer:
    """POST ``body`` as JSON to a gateway endpoint with the secret; the answer, which must be a 200."""
    response = client.post(path, json=body, headers=GATEWAY)
    assert response.status_code == 200, response.text
    answer: Answer = response.json()
    return answer


def connect(
    client: TestClient, user: str, raw_token: str, client_id: str | None = None, *, key: str = "clientid"
) -> Answer:
    """``/mqtt/user`` as a broker asks it at CONNECT (``key``: how the broker names the client id)."""
    body = {"username": user, "password": raw_token, key: f"{user}/phone" if client_id is None else client_id}
    return ask(client, "/mqtt/user", body)


def acl(client: TestClient, user: str, topic: str, *, client_id: str | None = None, **access: Any) -> Answer:
    """``/mqtt/acl`` for ``topic`` with ``access`` (``acc=...`` or ``action=...``, ``retain=...``)."""
    body = {"username": user, "clientid": f"{user}/phone" if client_id is None else client_id, "topic": topic}
    return ask(client, "/mqtt/acl", body | access)


def denied(answer: Answer) -> str:
    """The reason of a denial, after checking that the whole answer is one."""
    assert (answer["ok"], answer["result"], answer["is_superuser"]) == (False, "deny", False), answer
    assert set(answer) == {"ok", "result", "is_superuser", "reason"}, answer
    reason: str = answer["reason"]
    assert reason, answer
    return reason


def decision(answer: Answer) -> bool:
    """True for an allow, False for a deny; either way the answer must be well-formed."""
    if answer["result"] == "allow":
        assert (answer["ok"], answer["is_superuser"]) == (True, False), answer
        assert "reason" not in answer, answer
        return True
    denied(answer)
    return False


def role_of(sessions: Sessions, user: str) -> str | None:
    with sessions() as session:
        row = users.get(session, user)
        return None if row is None else row.role


def provision(client: TestClient, user: str, role: Role = Role.MEMBER, client_id: str | None = None) -> None:
    """Connect ``user`` once through ``/mqtt/user``, which provisions it with the token's role."""
    answer = connect(client, user, token(user, role), client_id)
    assert (answer["result"], answer["user"], answer["role"]) == ("allow", user, role.value), answer


def revoke(client: TestClient, **what: str) -> None:
    response = client.post("/v1/admin/revocations", json=what, headers={"X-Admin-Key": ADMIN_KEY})
    assert response.status_code == 201, response.text


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["code"]
    return code


# --- the shared secret ---


def test_without_a_configured_secret_every_endpoint_is_forbidden(
    make_client: MakeClient, sessions: Sessions, make_uid: MakeUid
) -> None:
    client = make_client(gateway_secret=None)
    alice = make_uid("alice")
    body = {"username": alice, "password": token(alice), "clientid": f"{alice}/phone", "topic": "t", "acc": 1}

    for path in ENDPOINTS:
        for headers in (GATEWAY, {"X-Gateway-Secret": ""}, {}):
            response = client.post(path, json=body, headers=headers)
            assert error_code(response, 403) == "forbidden", (path, headers)
            assert "MESSENGER_GATEWAY_SECRET" in response.json()["detail"]
    assert role_of(sessions, alice) is None


@pytest.mark.parametrize("path", ENDPOINTS)
def test_only_the_right_secret_gets_an_answer(
    client: TestClient, sessions: Sessions, make_uid: MakeUid, path: str
) -> None:
    alice = make_uid("alice")
    body = {"username": alice, "password": token(alice), "clientid": f"{alice}/phone", "topic": "t", "acc": 1}
    wrong: tuple[str | bytes, ...] = (
        "",
        "wrong",
        GATEWAY_SECRET[:-1],
        GATEWAY_SECRET + "x",
        GATEWAY_SECRET.upper(),
        f" {GATEWAY_SECRET}",
        "sécret".encode("latin-1"),  # headers arrive as latin-1: not valid UTF-8
    )

    missing = client.post(path, json=body)
    assert error_code(missing, 403) == "forbidden"
    assert missing.json()["detail"] == "invalid or missing X-Gateway-Secret"
    for secret in wrong:
        response = client.post(path, json=body, headers={"X-Gateway-Secret": secret})
        assert error_code(response, 403) == "forbidden", secret
    assert role_of(sessions, alice) is None  # a refused caller provisions nobody

    # alice is not provisioned, so only /mqtt/user allows
    assert ask(client, path, body)["ok"] is (path == "/mqtt/user")


# --- /mqtt/user ---


def test_a_valid_token_is_allowed_and_its_user_provisioned(
    client: TestClient, sessions: Sessions, make_uid: MakeUid
) -> None:
    alice = make_uid("alice")
    issued = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    raw = token(alice, Role.CREATOR, jti=f"jti-{alice}", now=issued, ttl=timedelta(minutes=30))
    assert role_of(sessions, alice) is None

    answer = connect(client, alice, raw, f"{alice}/phone-1")

    assert answer == {
        "ok": True,
        "result": "allow",
        "is_superuser": False,
        "user": alice,
        "role": "creator",
        "jti": f"jti-{alice}",
        "iat": int(issued.timestamp()),
        "expire_at": int((issued + timedelta(minutes=30)).timestamp()),
    }
    assert role_of(sessions, alice) == "creator"
    # connecting again (another device) is allowed as well and changes nothing
    assert connect(client, alice, raw, f"{alice}/laptop")["result"] == "allow"
    assert role_of(sessions, alice) == "creator"


@pytest.mark.parametrize("key", ["clientid", "client_id"])
def test_either_spelling_of_the_client_id_is_read(client: TestClient, make_uid: MakeUid, key: str) -> None:
    alice, bob = make_uid("alice"), make_uid("bob")
    provision(client, bob)
    raw = token(alice)

    assert connect(client, alice, raw, f"{alice}/web", key=key)["result"] == "allow"
    assert "client id" in denied(connect(client, alice, raw, f"{bob}/web", key=key))
    own = {"username": alice, key: f"{alice}/web", "topic": f"inbound/{alice}", "acc": 2}
    assert decision(ask(client, "/mqtt/acl", own))
    assert "client id" in denied(ask(client, "/mqtt/acl", own | {key: f"{bob}/web"}))


#: Refused CONNECTs: what the broker sends for user ``u`` (``v`` is another user), and a
#: fragment of the reason.
REFUSED_CONNECTS: dict[str, tuple[Callable[[str, str], dict[str, Any]], str]] = {
    "bad signature": (
        lambda u, v: {"password": issue_token("another-secret-" + "x" * 32, u)},
        "invalid token (bad_signature)",
    ),
    "expired": (
        lambda u, v: {"password": token(u, now=datetime.now(UTC) - timedelta(hours=2))},
        "invalid token (expired)",
    ),
    "not yet valid": (
        lambda u, v: {"password": token(u, now=datetime.now(UTC) + timedelta(hours=1))},
        "invalid token (not_yet_valid)",
    ),
    "not a token": (lambda u, v: {"password": "not.a.jwt"}, "invalid token (malformed)"),
    "token too long": (lambda u, v: {"password": "a" * 10_000}, "invalid token (malformed)"),
    "username is not the subject": (lambda u, v: {"username": v}, "is not the token subject"),
    "no username": (lambda u, v: {"username": None}, "is not the token subject"),
    "another user's token": (lambda u, v: {"password": token(v)}, "is not the token subject"),
    "another user's client id": (lambda u, v: {"clientid": f"{v}/phone"}, "client id"),
    "client id prefix confusion": (lambda u, v: {"clientid": f"{u}x/phone"}, "client id"),
    "client id without suffix": (lambda u, v: {"clientid": f"{u}/"}, "client id"),
    "no client id": (lambda u, v: {"clientid": None}, "client id"),
    "empty password": (lambda u, v: {"password": ""}, "no token"),
    "no password": (lambda u, v: {"password": None}, "no token"),
}


@pytest.mark.parametrize("case", REFUSED_CONNECTS)
def test_a_refused_connect_is_a_deny_with_a_reason(
    client: TestClient, sessions: Sessions, make_uid: MakeUid, case: str
) -> None:
    alice, bob, carol = make_uid("alice"), make_uid("bob"), make_uid("carol")
    change, reason = REFUSED_CONNECTS[case]

    def body(user: str) -> dict[str, Any]:
        return {"username": user, "password": token(user), "clientid": f"{user}/phone"}

    assert ask(client, "/mqtt/user", body(carol))["result"] == "allow"  # only the change makes a deny

    answer = ask(client, "/mqtt/user", body(alice) | change(alice, bob))

    assert reason in denied(answer)
    assert role_of(sessions, alice) is None  # a deny provisions nobody


def test_revoked_tokens_are_denied(client: TestClient, make_uid: MakeUid) -> None:
    alice, bob = make_uid("alice"), make_uid("bob")
    phone, laptop, bobs = token(alice, jti=f"phone-{alice}"), token(alice), token(bob)
    for user, raw in ((alice, phone), (alice, laptop), (bob, bobs)):
        assert connect(client, user, raw)["result"] == "allow"

    revoke(client, jti=f"phone-{alice}")
    assert denied(connect(client, alice, phone)) == "the token is revoked"
    assert connect(client, alice, laptop)["result"] == "allow"

    revoke(client, user=alice)
    assert denied(connect(client, alice, laptop)) == "the token is revoked"
    assert connect(client, bob, bobs)["result"] == "allow"
    # iat is in whole seconds: a token issued in the second of the revocation is covered by it
    time.sleep(1.05 - time.time() % 1)
    assert connect(client, alice, token(alice))["result"] == "allow"
    assert denied(connect(client, alice, laptop)) == "the token is revoked"


def test_a_service_token_is_allowed_but_not_as_a_superuser(
    client: TestClient, sessions: Sessions, make_uid: MakeUid
) -> None:
    svc = make_uid("svc")

    answer = connect(client, svc, token(svc, Role.SERVICE), f"{svc}/handler-1")

    assert (answer["ok"], answer["result"], answer["is_superuser"]) == (True, "allow", False)
    assert (answer["user"], answer["role"]) == (svc, "service")
    assert role_of(sessions, svc) == "service"
    assert "client id" in denied(connect(client, svc, token(svc, Role.SERVICE), "handler-1"))


# --- /mqtt/superuser ---


def test_nobody_is_a_superuser(client: TestClient, make_uid: MakeUid) -> None:
    alice, svc = make_uid("alice"), make_uid("svc")
    provision(client, svc, Role.SERVICE, f"{svc}/handler-1")
    asks = [
        {"username": svc, "password": token(svc, Role.SERVICE), "clientid": f"{svc}/handler-1"},
        {"username": svc, "client_id": f"{svc}/handler-1"},  # EMQX and go-auth send no password here
        {"username": alice, "password": token(alice), "clientid": f"{alice}/phone"},
        {},
    ]

    for body in asks:
        assert denied(ask(client, "/mqtt/superuser", body)) == "no superusers", body


# --- /mqtt/acl ---


def _row_id(row: dict[str, Any]) -> str:
    retained = " retain" if row["retain"] else ""
    verdict = "allow" if row["allow"] else "deny"
    return f"{row['user']} {row['action']} {row['topic']!r}{retained} -> {verdict}"


def _renamed(row: dict[str, Any], names: dict[str, str]) -> tuple[str, str, str]:
    """The row's user, client id and topic with each vector user id replaced by ``names``."""
    user = names[row["user"]]
    client_id = user + row["client_id"].removeprefix(row["user"])
    topic = "/".join(names.get(level, level) for level in row["topic"].split("/"))
    return user, client_id, topic


@pytest.mark.parametrize("row", TOPIC_ROWS, ids=[_row_id(r) for r in TOPIC_ROWS])
def test_vector(client: TestClient, make_uid: MakeUid, row: dict[str, Any]) -> None:
    """Each topic row of the shared vectors, as mosquitto-go-auth (``acc``) and EMQX (``action``) ask."""
    names = {name: make_uid(name) for name in VECTOR_USERS}
    user, client_id, topic = _renamed(row, names)
    provision(client, user, Role(row["role"]), client_id)

    asked = acl(
        client, user, topic, client_id=client_id, acc=ACC_OF_ACTION[row["action"]], retain=row["retain"]
    )
    assert decision(asked) is row["allow"], row["note"]
    if row["action"] in EMQX_ACTIONS:
        emqx = acl(client, user, topic, client_id=client_id, action=row["action"], retain=row["retain"])
        assert decision(emqx) is row["allow"], row["note"]


def test_read_and_write_needs_both(client: TestClient, make_uid: MakeUid) -> None:
    alice = make_uid("alice")
    provision(client, alice)
    # (topic, may read, may write): acc 3 is allowed only where both are
    cases = [
        (f"inbound/{alice}", False, True),
        (f"users/{alice}/messages", True, False),
        (f"presence/{alice}/phone", True, True),
        (f"inbound/{make_uid('bob')}", False, False),
    ]

    for topic, may_read, may_write in cases:
        assert decision(acl(client, alice, topic, acc=1)) is may_read, topic
        assert decision(acl(client, alice, topic, acc=2)) is may_write, topic
        assert decision(acl(client, alice, topic, acc=3)) is (may_read and may_write), topic


@pytest.mark.parametrize(
    "access",
    [{}, {"acc": 0}, {"acc": 5}, {"acc": 8}, {"acc": -1}, {"acc": 2**70}, {"action": "receive"}]
    + [{"action": a} for a in ("connect", "PUBLISH", "", "publish ")],
    ids=repr,
)
def test_an_unknown_access_is_denied(client: TestClient, make_uid: MakeUid, access: dict[str, Any]) -> None:
    alice = make_uid("alice")
    provision(client, alice)
    # the topic is one alice may publish and subscribe to: only the access is wrong
    topic = f"presence/{alice}/phone"
    assert decision(acl(client, alice, topic, acc=2)) and decision(acl(client, alice, topic, acc=4))

    assert "unknown access" in denied(acl(client, alice, topic, **access))


def test_acl_needs_a_known_user_with_its_own_client_id(client: TestClient, make_uid: MakeUid) -> None:
    alice, bob, ghost = make_uid("alice"), make_uid("bob"), make_uid("ghost")
    provision(client, alice)
    provision(client, bob)
    topic = f"inbound/{alice}"
    assert decision(acl(client, alice, topic, acc=2))

    assert denied(acl(client, ghost, f"inbound/{ghost}", acc=2)) == "unknown user"
    for client_id in (f"{bob}/phone", f"{alice}x/phone", f"{alice}/", alice, ""):
        assert "client id" in denied(acl(client, alice, topic, client_id=client_id, acc=2)), client_id
    no_client_id = ask(client, "/mqtt/acl", {"username": alice, "topic": topic, "acc": 2})
    assert "client id" in denied(no_client_id)
    # bob may not act as alice, whatever client id he gives
    assert not decision(acl(client, bob, topic, client_id=f"{bob}/phone", acc=2))


def test_acl_without_a_user_or_topic_is_a_deny(client: TestClient, make_uid: MakeUid) -> None:
    """The contract: a request without a username or topic is answered 200 deny, never 422 or 500."""
    alice = make_uid("alice")
    provision(client, alice)
    full = {"username": alice, "clientid": f"{alice}/phone", "topic": f"inbound/{alice}", "acc": 2}
    assert decision(ask(client, "/mqtt/acl", full))

    for missing in ("topic", "username"):
        without = {k: v for k, v in full.items() if k != missing}
        assert denied(ask(client, "/mqtt/acl", without)) == "username and topic are required", missing
        assert denied(ask(client, "/mqtt/acl", full | {missing: None})) == "username and topic are required"
    for username in ("", "bad/id", "+", "#", "."):
        assert denied(ask(client, "/mqtt/acl", full | {"username": username})) == (
            "username and topic are required"
        ), username
    assert denied(ask(client, "/mqtt/acl", full | {"topic": ""})) == "topic not allowed"


# --- bodies that are not requests, and outages ---


JSON_TYPE = {"Content-Type": "application/json"}
#: Bodies that are not gateway requests: (request keyword arguments, endpoints, status).
MALFORMED: dict[str, tuple[dict[str, Any], tuple[str, ...], int]] = {
    "not JSON": ({"content": b"username=alice&password=x", "headers": JSON_TYPE}, ENDPOINTS, 422),
    "form-encoded": ({"data": {"username": "alice", "password": "x"}}, ENDPOINTS, 422),
    "truncated JSON": ({"content": b'{"username": "alice"', "headers": JSON_TYPE}, ENDPOINTS, 422),
    "not UTF-8": ({"content": b'{"username": "\xff\xfe"}', "headers": JSON_TYPE}, ENDPOINTS, 422),
    "empty body": ({"content": b"", "headers": JSON_TYPE}, ENDPOINTS, 422),
    "JSON array": ({"json": [{"username": "alice"}]}, ENDPOINTS, 422),
    "JSON string": ({"json": "alice"}, ENDPOINTS, 422),
    "JSON null": ({"json": None}, ENDPOINTS, 422),
    "username not a string": ({"json": {"username": 42}}, ENDPOINTS, 422),
    "huge username": ({"json": {"username": "a" * 10_000}}, ENDPOINTS, 422),
    "huge clientid": ({"json": {"clientid": "a/" + "b" * 10_000}}, ENDPOINTS, 422),
    "huge client_id": ({"json": {"client_id": "a/" + "b" * 10_000}}, ENDPOINTS, 422),
    "huge password": ({"json": {"password": "a" * 20_000}}, ("/mqtt/user", "/mqtt/superuser"), 422),
    "huge topic": ({"json": {"topic": "a/" * 40_000}}, ("/mqtt/acl",), 422),
    "huge action": ({"json": {"action": "p" * 1_000}}, ("/mqtt/acl",), 422),
    "acc not a number": ({"json": {"acc": "write"}}, ("/mqtt/acl",), 422),
    "acc a fraction": ({"json": {"acc": 1.5}}, ("/mqtt/acl",), 422),
    "retain not a flag": ({"json": {"retain": "maybe"}}, ("/mqtt/acl",), 422),
    "over 512 KiB": ({"json": {"username": "a", "junk": "x" * (600 * 1024)}}, ENDPOINTS, 413),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_body_is_a_json_4xx(client: TestClient, case: str) -> None:
    request, paths, status = MALFORMED[case]
    request = request | {"headers": GATEWAY | request.get("headers", {})}
    expected_code = "payload_too_large" if status == 413 else "invalid_request"

    for path in paths:
        response = client.post(path, **request)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json", path
        assert response.json()["code"] == expected_code, (path, response.text)


def test_a_database_outage_is_a_503(publisher: MqttPublisher, make_uid: MakeUid) -> None:
    alice = make_uid("alice")
    # nothing listens on port 1: every connection attempt is refused at once
    unreachable = create_db_engine("mysql+pymysql://root@127.0.0.1:1/nowhere", pool_pre_ping=False)
    try:
        client = TestClient(create_app(gateway_deps(session_factory(unreachable), publisher)))
        user = {"username": alice, "password": token(alice), "clientid": f"{alice}/phone"}
        acl_ask = {"username": alice, "clientid": f"{alice}/phone", "topic": f"inbound/{alice}", "acc": 2}

        for path, body in (("/mqtt/user", user), ("/mqtt/acl", acl_ask)):
            response = client.post(path, json=body, headers=GATEWAY)
            assert error_code(response, 503) == "unavailable", path
        # refusals that need no database are still answered
        assert "no token" in denied(ask(client, "/mqtt/user", user | {"password": ""}))
        assert denied(ask(client, "/mqtt/superuser", user)) == "no superusers"
    finally:
        unreachable.dispose()


def test_the_acl_follows_the_role_of_the_latest_token(client: TestClient, make_uid: MakeUid) -> None:
    # a user demoted by the login service must not keep service rights on /mqtt/acl
    u = make_uid("u")
    provision(client, u, Role.SERVICE, f"{u}/x")
    assert decision(acl(client, u, "inbound/+", client_id=f"{u}/x", acc=4))
    provision(client, u, Role.MEMBER, f"{u}/x")
    assert not decision(acl(client, u, "inbound/+", client_id=f"{u}/x", acc=4))
    assert decision(acl(client, u, f"inbound/{u}", client_id=f"{u}/x", acc=2))
