"""The REST API through FastAPI's TestClient, on each database and presence store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier, issue_token
from api.app import create_app
from api.deps import ApiDeps
from messenger import actions
from messenger.constants import DEV_SECRET
from messenger.db import unit_of_work
from messenger.mqtt import MqttPublisher
from messenger.presence import PresenceStore
from messenger.repositories import blocks, messages
from messenger.repositories.messages import NewMessage
from tests.api.testclient import TestClient
from tests.conftest import token

MakeUser = Callable[..., str]
MakeUid = Callable[[str], str]
Sessions = sessionmaker[Session]
LOGIN_URL = "http://login.example/x"


@pytest.fixture
def client(
    sessions: Sessions, presence_store: PresenceStore, publisher: MqttPublisher
) -> Iterator[TestClient]:
    verifier = TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))
    deps = ApiDeps(sessions, presence_store, verifier, publisher, login_url=LOGIN_URL)
    with TestClient(create_app(deps)) as test_client:
        yield test_client


def auth(user: str, role: Role = Role.MEMBER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}"}


def send(sessions: Sessions, *new: NewMessage) -> list[int]:
    with unit_of_work(sessions) as session:
        return [m.id for m, _ in messages.store_many(session, list(new))]


def get_json(client: TestClient, url: str, user: str, status: int = 200, **params: Any) -> Any:
    response = client.get(url, headers=auth(user), params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def history(client: TestClient, user: str, peer: str, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = get_json(client, "/v1/messages", user, **{"with": peer, **params})
    return page


def ids(page: dict[str, Any]) -> list[int]:
    return [m["id"] for m in page["messages"]]


# --- authentication ---


def _expired(user: str) -> str:
    return issue_token(DEV_SECRET, user, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer garbage",
        "Bearer ",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer {expired}",
        "Bearer {other_secret}",
        "Bearer {tampered}",
        "Bearer {wrong_alg}",
    ],
    ids=["missing", "garbage", "empty", "basic", "expired", "other-secret", "tampered", "alg-none"],
)
@pytest.mark.parametrize("url", ["/v1/messages?with=bob", "/v1/blocks", "/v1/blocks/bob", "/v1/presence/bob"])
def test_unauthorized(client: TestClient, make_uid: MakeUid, authorization: str | None, url: str) -> None:
    user = make_uid("auth")
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            expired=_expired(user),
            other_secret=issue_token("another-secret-that-is-long-enough-32b", user),
            tampered=issue_token(DEV_SECRET, user)[:-4] + "AAAA",
            wrong_alg=jwt.encode({"sub": user, "exp": 4_000_000_000}, None, algorithm="none"),
        )
    response = client.get(url, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "unauthorized"
    assert body["login_url"] == LOGIN_URL
    assert body["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_token_detail_says_expired(client: TestClient, make_uid: MakeUid) -> None:
    user = make_uid("exp")
    response = client.get("/v1/blocks", headers={"Authorization": f"Bearer {_expired(user)}"})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_writes_need_a_token_too(client: TestClient, make_user: MakeUser) -> None:
    bob = make_user("bob")
    assert client.put(f"/v1/blocks/{bob}").status_code == 401
    assert client.delete(f"/v1/blocks/{bob}").status_code == 401


def test_healthz_needs_no_token(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- history ---


def alternating_conversation(sessions: Sessions, alice: str, bob: str, count: int) -> list[int]:
    """``count`` messages, alice and bob taking turns (alice first); their ids in order."""
    return send(
        sessions,
        *(
            NewMessage(alice, bob, f"a{i}", f"body {i}")
            if i % 2 == 0
            else NewMessage(bob, alice, f"b{i}", f"body {i}")
            for i in range(count)
        ),
    )


def test_history_pages_newest_first(client: TestClient, sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    sent = alternating_conversation(sessions, alice, bob, 7)

    first = history(client, alice, bob, limit=3)
    assert ids(first) == sent[:-4:-1]
    assert first["next_before"] == sent[4]
    second = history(client, alice, bob, limit=3, before=first["next_before"])
    assert ids(second) == [sent[3], sent[2], sent[1]]
    third = history(client, alice, bob, limit=3, before=second["next_before"])
    assert ids(third) == [sent[0]]
    assert third["next_before"] is None

    # bob sees the same conversation
    assert ids(history(client, bob, alice)) == sent[::-1]
    # with both bounds the page is still newest first
    both = history(client, alice, bob, after=sent[1], before=sent[4])
    assert ids(both) == [sent[3], sent[2]]
    assert (both["next_before"], both["next_after"]) == (None, None)


def test_history_pages_forward_with_after(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    sent = alternating_conversation(sessions, alice, bob, 7)

    # only `after`: oldest first from that id, paging forward with next_after
    newer = history(client, alice, bob, after=sent[4])
    assert ids(newer) == [sent[5], sent[6]]
    assert (newer["next_before"], newer["next_after"]) == (None, None)

    seen: list[int] = []
    cursor = 0
    pages = 0
    while True:
        page = history(client, bob, alice, after=cursor, limit=3)
        assert page["next_before"] is None
        seen.extend(ids(page))
        pages += 1
        if page["next_after"] is None:
            break
        assert page["next_after"] == ids(page)[-1]
        cursor = page["next_after"]
    assert seen == sent
    assert pages == 3
    assert history(client, alice, bob, after=sent[-1]) == {
        "messages": [],
        "next_before": None,
        "next_after": None,
    }


def test_history_message_shape(client: TestClient, sessions: Sessions, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    (mid,) = send(sessions, NewMessage(alice, bob, "cid-1", "héllo 👋"))
    page = history(client, bob, alice)
    (message,) = page["messages"]
    assert message["id"] == mid
    assert message["client_id"] == "cid-1"
    assert message["from"] == alice
    assert message["to"] == bob
    assert message["body"] == "héllo 👋"
    assert message["read_at"] is None
    assert message["tip"] is None
    assert message["list"] is None
    sent_at = datetime.fromisoformat(message["sent_at"].replace("Z", "+00:00"))
    assert sent_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - sent_at) < timedelta(days=1)


def test_history_exact_multiple_of_the_limit(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    sent = send(sessions, *(NewMessage(alice, bob, f"m{i}", "x") for i in range(4)))
    first = history(client, alice, bob, limit=2)
    assert first["next_before"] == sent[2]
    second = history(client, alice, bob, limit=2, before=first["next_before"])
    assert ids(first) + ids(second) == sent[::-1]
    # the server looks one row ahead: the last full page already says there is no more
    assert second["next_before"] is None
    forward = history(client, alice, bob, limit=4, after=0)
    assert ids(forward) == sent
    assert forward["next_after"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": 1001},
        {"limit": "many"},
        {"before": 0},
        {"before": -5},
        {"after": -1},
        {"with": "bad/id"},
        {"with": ""},
        {"with": None},
    ],
    ids=[
        "limit-0",
        "limit-over-max",
        "limit-over-hard-max",
        "limit-text",
        "before-0",
        "before-negative",
        "after-negative",
        "with-slash",
        "with-empty",
        "with-missing",
    ],
)
def test_history_invalid_parameters(client: TestClient, make_user: MakeUser, params: dict[str, Any]) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    query = {"with": bob} | params
    query = {k: v for k, v in query.items() if v is not None}
    response = client.get("/v1/messages", headers=auth(alice), params=query)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["detail"]


def test_history_limit_at_the_maximum(client: TestClient, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    assert history(client, alice, bob, limit=200) == {"messages": [], "next_before": None, "next_after": None}


def test_history_only_shows_the_callers_conversations(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    send(sessions, NewMessage(alice, bob, "1", "private a->b"), NewMessage(bob, alice, "2", "private b->a"))
    (to_carol,) = send(sessions, NewMessage(bob, carol, "3", "for carol"))

    assert ids(history(client, carol, bob)) == [to_carol]
    assert history(client, carol, alice) == {"messages": [], "next_before": None, "next_after": None}
    # asking for "with=alice" as carol can never reveal alice<->bob, whatever the paging
    assert ids(history(client, carol, alice, after=0, limit=200)) == []
    bodies = [m["body"] for m in history(client, carol, bob, limit=200)["messages"]]
    assert bodies == ["for carol"]


def test_history_hides_messages_from_blocked_users(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    (before_block,) = send(sessions, NewMessage(alice, bob, "1", "before"))
    with unit_of_work(sessions) as session:
        blocks.block(session, bob, alice)
    (blocked,) = send(sessions, NewMessage(alice, bob, "2", "blocked", blocked=True))
    (reply,) = send(sessions, NewMessage(bob, alice, "3", "bob still writes"))

    assert ids(history(client, bob, alice)) == [reply, before_block]
    # the sender is not told: alice sees her own message
    assert ids(history(client, alice, bob)) == [reply, blocked, before_block]


# --- blocks ---


def test_block_put_get_delete(client: TestClient, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    assert client.get(f"/v1/blocks/{bob}", headers=auth(alice)).status_code == 404

    first = client.put(f"/v1/blocks/{bob}", headers=auth(alice))
    assert first.status_code == 200, first.text
    assert first.json()["user"] == bob
    again = client.put(f"/v1/blocks/{bob}", headers=auth(alice))
    assert again.status_code == 200
    assert again.json() == first.json()  # idempotent: the first block's time stays

    assert get_json(client, f"/v1/blocks/{bob}", alice) == first.json()
    # one-way
    missing = client.get(f"/v1/blocks/{alice}", headers=auth(bob))
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_blocked"

    deleted = client.delete(f"/v1/blocks/{bob}", headers=auth(alice))
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert client.delete(f"/v1/blocks/{bob}", headers=auth(alice)).status_code == 204
    gone = client.get(f"/v1/blocks/{bob}", headers=auth(alice))
    assert gone.status_code == 404
    assert gone.json()["code"] == "not_blocked"


def test_block_self_is_refused(client: TestClient, make_user: MakeUser) -> None:
    alice = make_user("alice")
    response = client.put(f"/v1/blocks/{alice}", headers=auth(alice))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_block"


def test_block_unknown_user(client: TestClient, make_user: MakeUser, make_uid: MakeUid) -> None:
    alice = make_user("alice")
    response = client.put(f"/v1/blocks/{make_uid('ghost')}", headers=auth(alice))
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_user"
    assert get_json(client, "/v1/blocks", alice) == {"blocks": [], "next_after": None}


def test_block_unknown_user_is_case_sensitive(client: TestClient, make_user: MakeUser) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    response = client.put(f"/v1/blocks/{bob.upper()}", headers=auth(alice))
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_user"


def test_block_by_a_caller_not_yet_provisioned(
    client: TestClient, make_user: MakeUser, make_uid: MakeUid
) -> None:
    newcomer, bob = make_uid("new"), make_user("bob")
    response = client.put(f"/v1/blocks/{bob}", headers=auth(newcomer, Role.CREATOR))
    assert response.status_code == 200, response.text
    assert [b["user"] for b in get_json(client, "/v1/blocks", newcomer)["blocks"]] == [bob]


def test_block_invalid_user_path(client: TestClient, make_user: MakeUser) -> None:
    alice = make_user("alice")
    response = client.put("/v1/blocks/bad%20id", headers=auth(alice))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


def test_block_list_keyset(client: TestClient, make_user: MakeUser) -> None:
    alice = make_user("alice")
    blocked = sorted(make_user(f"b{i}") for i in range(5))
    for user in reversed(blocked):
        assert client.put(f"/v1/blocks/{user}", headers=auth(alice)).status_code == 200

    everything = get_json(client, "/v1/blocks", alice)
    assert [b["user"] for b in everything["blocks"]] == blocked
    assert everything["next_after"] is None

    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        page = get_json(client, "/v1/blocks", alice, **params)
        seen.extend(b["user"] for b in page["blocks"])
        pages += 1
        after = page["next_after"]
        if after is None:
            break
    assert seen == blocked
    assert pages == 3

    for bad in ({"limit": 0}, {"limit": 501}, {"after": "x" * 65}):
        response = client.get("/v1/blocks", headers=auth(alice), params=bad)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"


# --- presence ---


def test_presence(
    client: TestClient, presence_store: PresenceStore, make_user: MakeUser, make_uid: MakeUid
) -> None:
    alice, bob = make_user("alice"), make_uid("bob")
    t0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    presence_store.set_device(bob, "phone", online=True, node="node-1", at=t0 + timedelta(seconds=5))
    presence_store.set_device(bob, "laptop", online=True, node="node-2", at=t0)
    presence_store.set_device(bob, "tablet", online=False, node="node-1", at=t0 + timedelta(seconds=9))

    body = get_json(client, f"/v1/presence/{bob}", alice)
    assert body["user"] == bob
    assert body["online"] is True
    assert [(d["device"], d["node"]) for d in body["devices"]] == [("laptop", "node-2"), ("phone", "node-1")]
    assert datetime.fromisoformat(body["since"].replace("Z", "+00:00")) == t0
    assert datetime.fromisoformat(body["last_seen"].replace("Z", "+00:00")) == t0 + timedelta(seconds=9)

    nobody = get_json(client, f"/v1/presence/{make_uid('nobody')}", alice)
    assert (nobody["online"], nobody["devices"], nobody["since"], nobody["last_seen"]) == (
        False,
        [],
        None,
        None,
    )

    response = client.get("/v1/presence/bad%20id", headers=auth(alice))
    assert response.status_code == 422


# --- documentation and unknown routes ---


def test_openapi_and_docs(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Messenger"
    assert {"/v1/messages", "/v1/blocks", "/v1/blocks/{user}", "/v1/presence/{user}", "/healthz"} <= set(
        schema["paths"]
    )
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    wrong_method = client.post("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"


# --- keyset pagination under concurrent inserts ---


def test_history_paging_is_stable_while_messages_arrive(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    before_paging = alternating_conversation(sessions, alice, bob, 25)
    seen: list[int] = []
    cursor: dict[str, Any] = {"limit": 10}
    while True:
        page = history(client, bob, alice, **cursor)
        seen.extend(ids(page))
        # new messages land between page requests: they are newer than every cursor
        send(sessions, NewMessage(alice, bob, f"late-{len(seen)}", "late"))
        if page["next_before"] is None:
            break
        cursor = {"limit": 10, "before": page["next_before"]}
    assert seen == before_paging[::-1], "a page repeated or skipped a message"


def test_conversation_paging_is_stable_while_other_peers_write(
    client: TestClient, sessions: Sessions, make_user: MakeUser
) -> None:
    def say_hi(sender: str, to: str) -> None:
        with unit_of_work(sessions) as session:
            actions.send_messages(session, [actions.SendRequest(sender, "hello", to, "hi")])

    bob = make_user("bob")
    peers = [make_user(f"p{n}") for n in range(7)]
    for peer in peers:  # p0 oldest ... p6 newest
        say_hi(peer, bob)
    first = get_json(client, "/v1/conversations", bob, limit=3)
    assert [c["peer"] for c in first["conversations"]] == peers[:3:-1]  # p6, p5, p4
    newcomer = make_user("new")
    say_hi(newcomer, bob)  # arrives while bob pages
    rest = get_json(client, "/v1/conversations", bob, limit=10, before=first["next_before"])
    assert [c["peer"] for c in rest["conversations"]] == peers[3::-1]  # p3 .. p0, none twice
    assert rest["next_before"] is None
    assert get_json(client, "/v1/conversations", bob, limit=1)["conversations"][0]["peer"] == newcomer
