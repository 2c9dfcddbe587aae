"""Member lists, mass messages and tips over REST, on each database.

The app is the real ASGI app around real clients (SQLite and MariaDB through ``engine``, the
machine's Mosquitto through ``publisher``). The two services that live outside the product,
the list service and billing, are either the embedded ones (tables in the same database) or
one real HTTP server started here (:class:`tests.fakes.FakeServices`) behind the product's
HTTP clients. The fan-out of a mass message and the settlement of a pending tip, which the
handler's background threads do in production, are driven step by step by the tests with the
same functions (:class:`messenger.fanout.FanoutRunner`, :func:`messenger.tipping.settle`).

What the API publishes is recorded by :class:`Recorder`, which wraps the real publisher and
checks, at the moment of publishing, that what the payload names is already committed (seen
from another database session): events go out only after the commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from messenger import fanout, tipping
from messenger.actions import Outbound
from messenger.db import unit_of_work
from messenger.models import ListMember, MassMessage, Message, Tip, utcnow
from messenger.mqtt import MqttPublisher
from messenger.repositories import mass_messages, tips, users
from messenger.services import Services
from messenger.services.billing import HttpBilling
from messenger.services.http import HttpService
from messenger.services.lists import EmbeddedLists, HttpLists, ListService
from messenger.tipping import TipPolicy
from tests.api.app import ADMIN_KEY, MakeClient, client_maker
from tests.api.testclient import TestClient
from tests.conftest import token
from tests.fakes import CHARGES, LIST, FakeServices, Recorded

MakeUser = Callable[..., str]
MakeUid = Callable[[str], str]
Sessions = sessionmaker[Session]

BILLING_URL = "https://billing.example/settings?from=tests"
#: A settlement retry an hour away: no background settler (of a stack sharing the MariaDB
#: database) picks a pending tip of these tests up; the tests claim it themselves.
POLICY = TipPolicy(billing_url=BILLING_URL, retry_s=3600.0)
#: Bounds on waiting for the fake services (never a measurement).
WAIT_S = 10.0
#: The billing client's timeout: short, so that a stalled charge is "unknown" quickly.
BILLING_TIMEOUT_S = 1.0


# --- the external services, as a real HTTP server ---


@pytest.fixture
def fake() -> Iterator[FakeServices]:
    """The list service and billing; a charge scripted ``"slow"`` is made, and its answer held
    (until the end of the test) past the billing client's timeout."""
    with FakeServices(slow_s=WAIT_S) as services:
        yield services


def charge_keys(fake: FakeServices, payer: str) -> list[tuple[str | None, str]]:
    """The idempotency key of each charge request for ``payer``, in its header and in its body."""
    return [
        (r.headers.get("idempotency-key"), r.json["idempotency_key"])
        for r in fake.requests_for(CHARGES)
        if r.json["payer"] == payer
    ]


# --- the app ---


@dataclass(frozen=True)
class Published:
    topic: str
    payload: dict[str, Any]
    #: Whether what the payload names was visible to another session when it was published
    #: (None: nothing to check).
    committed: bool | None


class Recorder:
    """The real publisher, remembering what it was given and whether it was committed then."""

    def __init__(self, inner: MqttPublisher, sessions: Sessions) -> None:
        self.inner = inner
        self.sessions = sessions
        self.sent: list[Published] = []

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def publish(self, out: Sequence[Outbound]) -> None:
        for o in out:
            payload = json.loads(o.payload)
            self.sent.append(Published(o.topic, payload, self._committed(o.topic, payload)))
        self.inner.publish(out)

    def to(self, topic: str, **fields: Any) -> list[Published]:
        return [
            p for p in self.sent if p.topic == topic and all(p.payload.get(k) == v for k, v in fields.items())
        ]

    def _committed(self, topic: str, payload: dict[str, Any]) -> bool | None:
        user = topic.split("/")[1]
        with self.sessions() as session:
            if payload.get("type") == "message":
                return session.get(Message, payload["id"]) is not None
            if payload.get("mass_message") is not None:
                mass = session.get(MassMessage, payload["mass_message"])
                return mass is not None and mass.client_msg_id == payload["client_id"]
            tip = payload.get("tip")
            if isinstance(tip, dict):
                row = session.scalars(
                    select(Tip).where(Tip.payer_id == user, Tip.client_msg_id == payload["client_id"])
                ).one_or_none()
                return row is not None and row.status == tip["status"]
        return None


@pytest.fixture
def recorder(publisher: MqttPublisher, sessions: Sessions) -> Recorder:
    return Recorder(publisher, sessions)


@pytest.fixture
def make_client(sessions: Sessions, recorder: Recorder) -> Iterator[MakeClient]:
    """Build a TestClient around real deps; keyword arguments replace fields of ApiDeps."""
    with client_maker(sessions=sessions, publisher=recorder, tip_policy=POLICY) as make:
        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def external(fake: FakeServices) -> Iterator[Services]:
    """The product's HTTP clients of the two fake services (no retries: one request per try)."""
    services = Services(
        HttpLists(HttpService("lists", fake.url, timeout_s=WAIT_S, retries=0)),
        HttpBilling(HttpService("billing", fake.url, timeout_s=BILLING_TIMEOUT_S, retries=0)),
    )
    yield services
    services.close()


@pytest.fixture
def http_client(make_client: MakeClient, external: Services) -> TestClient:
    return make_client(services=external)


@pytest.fixture
def make_creator(make_user: MakeUser, sessions: Sessions) -> Iterator[Callable[[], str]]:
    """Creators for one test; their mass messages still going at the end are canceled, so that
    no fan-out worker of another run sharing the database picks them up later."""
    made: list[str] = []

    def make() -> str:
        made.append(make_user("creator", "creator"))
        return made[-1]

    yield make
    with unit_of_work(sessions) as session:
        active = session.scalars(
            select(MassMessage).where(
                MassMessage.sender_id.in_(made), MassMessage.status.in_(mass_messages.ACTIVE)
            )
        )
        for mass in active:
            fanout.cancel(session, mass)


# --- helpers ---


def auth(user: str, role: Role = Role.MEMBER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}"}


def creator_auth(user: str) -> dict[str, str]:
    return auth(user, Role.CREATOR)


ADMIN = {"X-Admin-Key": ADMIN_KEY}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error_code(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["code"]
    return code


def messages_of(user: str) -> str:
    return f"users/{user}/messages"


def events_of(user: str) -> str:
    return f"users/{user}/events"


def new_list(client: TestClient, creator: str, *members: str, name: str = "fans") -> str:
    created = ok(client.post("/v1/lists", json={"name": name}, headers=creator_auth(creator)), 201)
    if members:
        ok(
            client.post(
                f"/v1/lists/{created['id']}/members",
                json={"members": list(members)},
                headers=creator_auth(creator),
            )
        )
    list_id: str = created["id"]
    return list_id


def to_list(
    client: TestClient, creator: str, list_id: str, body: str = "new post", *, key: str | None = None
) -> Any:
    headers = creator_auth(creator) | ({"Idempotency-Key": key} if key else {})
    return client.post("/v1/messages", json={"list": list_id, "body": body}, headers=headers)


def mass_rows(sessions: Sessions, sender: str) -> list[MassMessage]:
    with sessions() as session:
        query = select(MassMessage).where(MassMessage.sender_id == sender).order_by(MassMessage.id)
        return list(session.scalars(query))


def stored(sessions: Sessions, sender: str, recipient: str) -> list[Message]:
    with sessions() as session:
        query = select(Message).where(Message.sender_id == sender, Message.recipient_id == recipient)
        return list(session.scalars(query.order_by(Message.id)))


def tip_rows(sessions: Sessions, payer: str) -> list[Tip]:
    with sessions() as session:
        return list(session.scalars(select(Tip).where(Tip.payer_id == payer).order_by(Tip.id)))


def run_fanout(
    sessions: Sessions,
    lists: ListService,
    mass_id: int,
    *,
    page_size: int,
    steps: int | None = None,
    owner: str | None = None,
) -> list[fanout.Chunk]:
    """Claim one mass message (by id, never another test's, as ``owner``) and expand it, page by
    page, until it is done or ``steps`` pages were done. Nothing claimed: no chunks."""
    owner = owner or f"test-{uuid.uuid4().hex[:8]}"
    runner = fanout.FanoutRunner(sessions, lists, owner=owner, page_size=page_size)
    with unit_of_work(sessions) as session:
        claimed = mass_messages.claim(session, mass_id, runner.owner, utcnow(), fanout.LEASE_S)
    chunks: list[fanout.Chunk] = []
    if not claimed:
        return chunks
    for _ in range(steps or 100):
        chunks.append(runner.step(mass_id))
        if chunks[-1].done:
            break
    return chunks


def outbound(chunks: Sequence[fanout.Chunk]) -> list[tuple[str, dict[str, Any]]]:
    return [(o.topic, json.loads(o.payload)) for chunk in chunks for o in chunk.out]


def tip(
    client: TestClient,
    payer: str,
    payee: str,
    amount: int = 500,
    currency: str = "USD",
    *,
    key: str | None = None,
    body: str = "thanks!",
    role: Role = Role.MEMBER,
) -> Any:
    headers = auth(payer, role) | ({"Idempotency-Key": key} if key else {})
    payload = {"to": payee, "amount": amount, "currency": currency, "body": body}
    return client.post("/v1/tips", json=payload, headers=headers)


def top_up(client: TestClient, user: str, amount: int, currency: str = "USD") -> dict[str, int]:
    answer = ok(
        client.post(
            f"/v1/admin/balances/{user}", json={"amount": amount, "currency": currency}, headers=ADMIN
        )
    )
    assert answer["user"] == user
    balances: dict[str, int] = answer["balances"]
    return balances


def balances(client: TestClient, user: str) -> dict[str, int]:
    result: dict[str, int] = ok(client.get(f"/v1/admin/balances/{user}", headers=ADMIN))["balances"]
    return result


# --- lists ---


def test_a_creator_manages_lists_and_members(
    client: TestClient, sessions: Sessions, make_creator: Callable[[], str], make_uid: MakeUid
) -> None:
    creator = make_creator()
    headers = creator_auth(creator)

    first = ok(client.post("/v1/lists", json={"name": "VIP"}, headers=headers), 201)
    second = ok(client.post("/v1/lists", json={"name": "All fans"}, headers=headers), 201)
    assert (first["name"], first["owner"], first["members"]) == ("VIP", creator, 0)
    assert first["id"] != second["id"]

    # members need not be users yet (they come from elsewhere); adding is idempotent
    a, b, c, d = sorted(make_uid(n) for n in "abcd")
    added = ok(client.post(f"/v1/lists/{first['id']}/members", json={"members": [a, b, c]}, headers=headers))
    assert added == {"added": 3, "members": 3}
    again = ok(
        client.post(f"/v1/lists/{first['id']}/members", json={"members": [c, b, d, d]}, headers=headers)
    )
    assert again == {"added": 1, "members": 4}

    got = ok(client.get(f"/v1/lists/{first['id']}", headers=headers))
    assert (got["id"], got["name"], got["owner"], got["members"]) == (first["id"], "VIP", creator, 4)
    assert got["created_at"] == first["created_at"]

    mine = ok(client.get("/v1/lists", headers=headers))
    assert {(r["id"], r["members"]) for r in mine["lists"]} == {(first["id"], 4), (second["id"], 0)}
    assert mine["next_after"] is None
    page = ok(client.get("/v1/lists", headers=headers, params={"limit": 1}))
    assert len(page["lists"]) == 1
    assert page["next_after"] == page["lists"][0]["id"]
    rest = ok(client.get("/v1/lists", headers=headers, params={"limit": 1, "after": page["next_after"]}))
    assert [r["id"] for r in page["lists"] + rest["lists"]] == sorted([first["id"], second["id"]])
    assert rest["next_after"] is None

    members_url = f"/v1/lists/{first['id']}/members"
    page1 = ok(client.get(members_url, headers=headers, params={"limit": 3}))
    assert page1 == {"members": [a, b, c], "next_after": c}
    page2 = ok(client.get(members_url, headers=headers, params={"limit": 3, "after": c}))
    assert page2 == {"members": [d], "next_after": None}

    assert ok(client.delete(f"{members_url}/{b}", headers=headers), 204) is None
    assert ok(client.delete(f"{members_url}/{b}", headers=headers), 204) is None  # idempotent
    assert ok(client.get(members_url, headers=headers))["members"] == [a, c, d]
    assert ok(client.get(f"/v1/lists/{first['id']}", headers=headers))["members"] == 3

    assert ok(client.delete(f"/v1/lists/{first['id']}", headers=headers), 204) is None
    assert error_code(client.get(f"/v1/lists/{first['id']}", headers=headers), 403) == "list_not_owned"
    assert error_code(client.delete(f"/v1/lists/{first['id']}", headers=headers), 403) == "list_not_owned"
    assert [r["id"] for r in ok(client.get("/v1/lists", headers=headers))["lists"]] == [second["id"]]
    with sessions() as session:
        left = session.scalar(select(func.count()).where(ListMember.list_id == first["id"]))
    assert left == 0


def test_lists_are_for_their_owner_only(
    client: TestClient, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    owner, other, member = make_creator(), make_creator(), make_user("member")
    list_id = new_list(client, owner, member)
    ok(client.post("/v1/lists", json={"name": "theirs"}, headers=creator_auth(other)), 201)

    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/v1/lists/{list_id}", None),
        ("DELETE", f"/v1/lists/{list_id}", None),
        ("GET", f"/v1/lists/{list_id}/members", None),
        ("POST", f"/v1/lists/{list_id}/members", {"members": [other]}),
        ("DELETE", f"/v1/lists/{list_id}/members/{member}", None),
    ]
    for method, url, body in calls:
        refused = client.request(method, url, json=body, headers=creator_auth(other))
        assert error_code(refused, 403) == "list_not_owned", (method, url)
    # a member has no lists at all, not even to look at
    for method, url, body in [*calls, ("GET", "/v1/lists", None), ("POST", "/v1/lists", {"name": "x"})]:
        refused = client.request(method, url, json=body, headers=auth(member))
        assert error_code(refused, 403) == "not_a_creator", (method, url)
    assert error_code(client.get(f"/v1/lists/{list_id}"), 401) == "unauthorized"

    # nothing changed, and nobody else's lists show up in anyone's
    assert ok(client.get(f"/v1/lists/{list_id}/members", headers=creator_auth(owner)))["members"] == [member]
    assert [r["id"] for r in ok(client.get("/v1/lists", headers=creator_auth(owner)))["lists"]] == [list_id]
    assert list_id not in [r["id"] for r in ok(client.get("/v1/lists", headers=creator_auth(other)))["lists"]]


def test_list_validation(client: TestClient, make_creator: Callable[[], str], make_uid: MakeUid) -> None:
    creator = make_creator()
    headers = creator_auth(creator)
    list_id = new_list(client, creator)

    for name in ("", "x" * 129):
        assert (
            error_code(client.post("/v1/lists", json={"name": name}, headers=headers), 422)
            == "invalid_request"
        )
    assert error_code(client.post("/v1/lists", json={}, headers=headers), 422) == "invalid_request"
    assert (
        error_code(client.post("/v1/lists", json={"name": "a", "x": 1}, headers=headers), 422)
        == "invalid_request"
    )

    members_url = f"/v1/lists/{list_id}/members"
    too_many = [f"m{i:04d}-{creator}"[:64] for i in range(1001)]
    for members in ([], too_many, ["bad/id"], ["a b"], [""], ["x" * 65], ["émile"], ["+"], [7]):
        refused = client.post(members_url, json={"members": members}, headers=headers)
        assert error_code(refused, 422) == "invalid_request", members
    assert error_code(client.delete(f"{members_url}/bad%20id", headers=headers), 422) == "invalid_request"
    assert error_code(client.get(f"/v1/lists/{'x' * 65}", headers=headers), 422) == "invalid_request"
    assert (
        error_code(client.get(members_url, headers=headers, params={"limit": 1001}), 422) == "invalid_request"
    )
    assert ok(client.get(f"/v1/lists/{list_id}", headers=headers))["members"] == 0

    # exactly 1,000 at once is fine
    thousand = sorted({make_uid("m") for _ in range(1000)})
    assert len(thousand) == 1000
    assert ok(client.post(members_url, json={"members": thousand}, headers=headers)) == {
        "added": 1000,
        "members": 1000,
    }
    assert ok(client.get(members_url, headers=headers, params={"limit": 1000})) == {
        "members": thousand,
        "next_after": None,
    }


def test_reserved_user_ids_are_not_list_members(client: TestClient, make_creator: Callable[[], str]) -> None:
    """``acl.principal.is_valid_user_id`` refuses ``.`` and ``..`` (they are reserved), and the
    HTTP list client drops them from pages; the embedded list must not take them in either."""
    creator = make_creator()
    list_id = new_list(client, creator)
    for reserved in (".", ".."):
        refused = client.post(
            f"/v1/lists/{list_id}/members", json={"members": [reserved]}, headers=creator_auth(creator)
        )
        assert error_code(refused, 422) == "invalid_request", reserved


def test_the_list_endpoints_answer_409_when_lists_are_external(
    http_client: TestClient, make_creator: Callable[[], str], fake: FakeServices
) -> None:
    creator = make_creator()
    fake.lists["ext-1"] = (creator, ["someone"])
    headers = creator_auth(creator)
    for method, url, body in [
        ("POST", "/v1/lists", {"name": "VIP"}),
        ("GET", "/v1/lists", None),
        ("GET", "/v1/lists/ext-1", None),
        ("DELETE", "/v1/lists/ext-1", None),
        ("GET", "/v1/lists/ext-1/members", None),
        ("POST", "/v1/lists/ext-1/members", {"members": ["bob"]}),
        ("DELETE", "/v1/lists/ext-1/members/someone", None),
    ]:
        answer = http_client.request(method, url, json=body, headers=headers)
        assert error_code(answer, 409) == "lists_external", (method, url)
    assert fake.lists["ext-1"] == (creator, ["someone"])


# --- mass messages ---


def test_a_list_message_is_queued_then_fanned_out(
    client: TestClient,
    recorder: Recorder,
    sessions: Sessions,
    make_creator: Callable[[], str],
    make_user: MakeUser,
    make_uid: MakeUid,
) -> None:
    creator, other = make_creator(), make_creator()
    fans = sorted(make_user("fan") for _ in range(3))
    blocker, newcomer = make_user("blocker"), make_uid("newcomer")  # the newcomer is no user yet
    ok(client.put(f"/v1/blocks/{creator}", headers=auth(blocker)))
    list_id = new_list(client, creator, *fans, blocker, newcomer)

    answer = to_list(client, creator, list_id, "new post!", key="post-1")
    queued = ok(answer, 202)
    mass_id = queued["id"]
    assert (queued["client_id"], queued["list"], queued["body"], queued["status"]) == (
        "post-1",
        list_id,
        "new post!",
        "queued",
    )
    assert (queued["recipients"], queued["processed"], queued["stored"], queued["skipped"]) == (5, 0, 0, 0)
    assert (queued["progress"], queued["started_at"], queued["finished_at"]) == (0.0, None, None)
    (row,) = mass_rows(sessions, creator)
    assert (row.id, row.status, row.list_id, row.body, row.client_msg_id) == (
        mass_id,
        "queued",
        list_id,
        "new post!",
        "post-1",
    )
    # the creator's devices hear of it once it is committed; nothing is delivered yet
    (ack,) = recorder.to(events_of(creator), type="ack")
    assert ack.payload == {
        "type": "ack",
        "client_id": "post-1",
        "id": None,
        "mass_message": mass_id,
        "status": "queued",
        "duplicate": False,
    }
    assert ack.committed
    assert not [p for p in recorder.sent if p.topic.endswith("/messages")]

    # a retry is the same mass message, whether the key is a header or client_id
    assert ok(to_list(client, creator, list_id, "new post!", key="post-1")) == queued
    repeat = client.post(
        "/v1/messages",
        json={"list": list_id, "body": "new post!", "client_id": "post-1"},
        headers=creator_auth(creator),
    )
    assert ok(repeat)["id"] == mass_id
    assert len(recorder.to(events_of(creator), mass_message=mass_id, duplicate=True)) == 2
    assert len(mass_rows(sessions, creator)) == 1

    # only the sender sees it
    assert ok(client.get(f"/v1/mass-messages/{mass_id}", headers=creator_auth(creator))) == queued
    for stranger in (creator_auth(other), auth(fans[0])):
        assert error_code(client.get(f"/v1/mass-messages/{mass_id}", headers=stranger), 404) == "not_found"
        assert ok(client.get("/v1/mass-messages", headers=stranger))["mass_messages"] == []

    # the fan-out, two members a page, as the handler's background worker runs it
    worker = f"worker-{mass_id}"
    chunks = run_fanout(sessions, EmbeddedLists(sessions), mass_id, page_size=2, steps=1, owner=worker)
    halfway = ok(client.get(f"/v1/mass-messages/{mass_id}", headers=creator_auth(creator)))
    assert (halfway["status"], halfway["processed"], halfway["progress"]) == ("sending", 2, 0.4)
    assert halfway["started_at"] is not None and halfway["finished_at"] is None
    # another worker cannot take it over while the lease runs; the same one goes on
    assert run_fanout(sessions, EmbeddedLists(sessions), mass_id, page_size=2) == []
    chunks += run_fanout(sessions, EmbeddedLists(sessions), mass_id, page_size=2, owner=worker)
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])

    sent = ok(client.get(f"/v1/mass-messages/{mass_id}", headers=creator_auth(creator)))
    assert (sent["status"], sent["recipients"], sent["processed"], sent["stored"], sent["skipped"]) == (
        "sent",
        5,
        5,
        4,
        1,
    )
    assert sent["progress"] == 1.0
    assert sent["finished_at"] is not None
    receivers = sorted([*fans, newcomer])
    published = outbound(chunks)
    delivered = sorted(
        (topic, p["to"], p["list"], p["body"], p["client_id"])
        for topic, p in published
        if p["type"] == "message"
    )
    assert delivered == [(messages_of(r), r, list_id, "new post!", "post-1") for r in receivers]
    assert [p for topic, p in published if topic == events_of(creator)] == [
        {
            "type": "ack",
            "client_id": "post-1",
            "id": None,
            "mass_message": mass_id,
            "status": "sent",
            "duplicate": False,
        }
    ]

    # one copy per member who did not block the creator; the newcomer became a user to keep it
    for r in receivers:
        (copy,) = stored(sessions, creator, r)
        assert (copy.list_id, copy.body, copy.blocked) == (list_id, "new post!", False)
        (seen,) = ok(client.get("/v1/messages", headers=auth(r), params={"with": creator}))["messages"]
        assert (seen["id"], seen["list"], seen["from"]) == (copy.id, list_id, creator)
    assert stored(sessions, creator, blocker) == []
    with sessions() as session:
        assert users.roles(session, [newcomer]) == {newcomer: "member"}

    # it is over: running it again stores nothing more, and it cannot be canceled
    assert run_fanout(sessions, EmbeddedLists(sessions), mass_id, page_size=2) == []
    assert (
        error_code(client.post(f"/v1/mass-messages/{mass_id}/cancel", headers=creator_auth(creator)), 409)
        == "already_finished"
    )
    assert len(stored(sessions, creator, fans[0])) == 1


def test_mass_messages_are_listed_newest_first(
    client: TestClient, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    creator = make_creator()
    list_id = new_list(client, creator, make_user("fan"))
    ids = [ok(to_list(client, creator, list_id, f"post {i}"), 202)["id"] for i in range(3)]

    everything = ok(client.get("/v1/mass-messages", headers=creator_auth(creator)))
    assert [m["id"] for m in everything["mass_messages"]] == ids[::-1]
    assert [m["body"] for m in everything["mass_messages"]] == ["post 2", "post 1", "post 0"]
    assert everything["next_before"] is None
    page = ok(client.get("/v1/mass-messages", headers=creator_auth(creator), params={"limit": 2}))
    assert [m["id"] for m in page["mass_messages"]] == ids[:0:-1]
    assert page["next_before"] == ids[1]
    rest = ok(
        client.get("/v1/mass-messages", headers=creator_auth(creator), params={"limit": 2, "before": ids[1]})
    )
    assert ([m["id"] for m in rest["mass_messages"]], rest["next_before"]) == ([ids[0]], None)


def test_cancel_a_mass_message(
    client: TestClient, sessions: Sessions, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    creator, other = make_creator(), make_creator()
    fans = sorted(make_user("fan") for _ in range(3))
    list_id = new_list(client, creator, *fans)
    lists = EmbeddedLists(sessions)

    # canceled before it started: nobody gets it
    queued = ok(to_list(client, creator, list_id, "oops"), 202)
    cancel_url = f"/v1/mass-messages/{queued['id']}/cancel"
    assert error_code(client.post(cancel_url, headers=creator_auth(other)), 404) == "not_found"
    canceled = ok(client.post(cancel_url, headers=creator_auth(creator)))
    assert (canceled["id"], canceled["status"]) == (queued["id"], "canceled")
    assert canceled["finished_at"] is not None
    assert error_code(client.post(cancel_url, headers=creator_auth(creator)), 409) == "already_finished"
    assert run_fanout(sessions, lists, queued["id"], page_size=1) == []
    assert all(stored(sessions, creator, fan) == [] for fan in fans)
    assert (
        ok(client.get(f"/v1/mass-messages/{queued['id']}", headers=creator_auth(creator)))["status"]
        == "canceled"
    )

    # canceled in the middle: what was stored stays, the rest is not sent
    second = ok(to_list(client, creator, list_id, "half"), 202)
    (first_page,) = run_fanout(sessions, lists, second["id"], page_size=1, steps=1)
    assert not first_page.done
    assert (
        ok(client.post(f"/v1/mass-messages/{second['id']}/cancel", headers=creator_auth(creator)))["status"]
        == "canceled"
    )
    assert run_fanout(sessions, lists, second["id"], page_size=1) == []
    runner = fanout.FanoutRunner(sessions, lists, owner="someone-else", page_size=1)
    assert runner.step(second["id"]) == fanout.Chunk([], done=True)
    after = ok(client.get(f"/v1/mass-messages/{second['id']}", headers=creator_auth(creator)))
    assert (after["status"], after["processed"], after["stored"], after["recipients"]) == (
        "canceled",
        1,
        1,
        3,
    )
    assert [len(stored(sessions, creator, fan)) for fan in fans] == [1, 0, 0]


def test_list_message_refusals(
    client: TestClient, sessions: Sessions, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    creator, other, member = make_creator(), make_creator(), make_user("member")
    mine, theirs = new_list(client, creator, member), new_list(client, other, member)

    def post(body: dict[str, Any], headers: dict[str, str]) -> Any:
        return client.post("/v1/messages", json=body, headers=headers)

    as_member = post({"list": mine, "body": "hi"}, auth(member))
    assert error_code(as_member, 403) == "not_a_creator"
    assert error_code(to_list(client, creator, theirs), 403) == "list_not_owned"
    assert error_code(to_list(client, creator, "no-such-list"), 403) == "list_not_owned"
    for invalid in (
        {"list": mine, "to": member, "body": "both"},
        {"body": "neither"},
        {"list": "", "body": "empty"},
        {"list": "x" * 65, "body": "too long"},
        {"list": "with space", "body": "hi"},
    ):
        assert error_code(post(invalid, creator_auth(creator)), 422) == "invalid_request", invalid
    assert mass_rows(sessions, creator) == []
    assert mass_rows(sessions, member) == []

    # a key names one mass message
    ok(to_list(client, creator, mine, "first", key="k-1"), 202)
    assert error_code(to_list(client, creator, mine, "second", key="k-1"), 409) == "idempotency_conflict"
    assert [m.body for m in mass_rows(sessions, creator)] == ["first"]


def test_list_messages_with_an_external_list_service(
    http_client: TestClient,
    recorder: Recorder,
    sessions: Sessions,
    fake: FakeServices,
    external: Services,
    make_creator: Callable[[], str],
    make_uid: MakeUid,
) -> None:
    creator, other = make_creator(), make_creator()
    fans = sorted(make_uid("fan") for _ in range(3))  # known only to the list service
    fake.lists[f"l-{creator}"] = (creator, fans)
    fake.lists[f"l-{other}"] = (other, fans)

    def down_for_maintenance(request: Recorded) -> tuple[int, Any]:
        if request.list_id == f"down-{creator}":
            return 503, {"error": "down for maintenance"}
        return fake.answer(request)

    fake.script(LIST, [], then=down_for_maintenance)

    queued = ok(to_list(http_client, creator, f"l-{creator}", "hello fans", key="x-1"), 202)
    assert (queued["status"], queued["recipients"], queued["list"]) == ("queued", 3, f"l-{creator}")
    assert recorder.to(events_of(creator), mass_message=queued["id"], status="queued")[0].committed
    assert error_code(to_list(http_client, creator, f"l-{other}"), 403) == "list_not_owned"
    assert error_code(to_list(http_client, creator, f"gone-{creator}"), 403) == "list_not_owned"
    assert error_code(to_list(http_client, creator, f"down-{creator}"), 503) == "service_unavailable"
    assert [m.id for m in mass_rows(sessions, creator)] == [queued["id"]]

    chunks = run_fanout(sessions, external.lists, queued["id"], page_size=2)
    assert len(chunks) == 2 and chunks[-1].done
    done = ok(http_client.get(f"/v1/mass-messages/{queued['id']}", headers=creator_auth(creator)))
    assert (done["status"], done["stored"], done["skipped"], done["progress"]) == ("sent", 3, 0, 1.0)
    for fan in fans:
        assert [(m.list_id, m.body) for m in stored(sessions, creator, fan)] == [
            (f"l-{creator}", "hello fans")
        ]


# --- tips, on the embedded ledger ---


def test_a_tip_fails_without_funds_and_succeeds_after_a_top_up(
    client: TestClient,
    recorder: Recorder,
    sessions: Sessions,
    make_creator: Callable[[], str],
    make_user: MakeUser,
) -> None:
    creator, member = make_creator(), make_user("member")

    broke = tip(client, member, creator, 500, key="tip-1")
    assert error_code(broke, 402) == "tip_failed"
    failed = broke.json()
    assert failed["billing_url"] == BILLING_URL
    assert (failed["tip"]["status"], failed["tip"]["reason"], failed["tip"]["billing_url"]) == (
        "failed",
        "insufficient_funds",
        BILLING_URL,
    )
    assert (failed["tip"]["amount"], failed["tip"]["client_id"], failed["tip"]["message_id"]) == (
        500,
        "tip-1",
        None,
    )
    assert stored(sessions, member, creator) == []
    assert recorder.to(messages_of(creator)) == []
    # (the tip_failed event to the member's devices: test_a_failed_tip_tells_the_members_devices)

    assert top_up(client, member, 1200) == {"USD": 1200}
    assert top_up(client, member, 300, "EUR") == {"USD": 1200, "EUR": 300}

    paid = tip(client, member, creator, 500, key="tip-2", body="love your work")
    succeeded = ok(paid, 201)
    assert (
        succeeded["status"],
        succeeded["from"],
        succeeded["to"],
        succeeded["amount"],
        succeeded["currency"],
    ) == ("succeeded", member, creator, 500, "USD")
    assert (succeeded["billing_url"], succeeded["reason"]) == (None, None)
    assert succeeded["settled_at"] is not None
    (message,) = stored(sessions, member, creator)
    assert message.id == succeeded["message_id"]
    assert (
        message.body,
        message.client_msg_id,
        message.tip_amount,
        message.tip_currency,
        message.tip_status,
    ) == ("love your work", "tip-2", 500, "USD", "succeeded")
    (seen,) = ok(client.get("/v1/messages", headers=creator_auth(creator), params={"with": member}))[
        "messages"
    ]
    assert (seen["id"], seen["body"], seen["tip"]) == (
        message.id,
        "love your work",
        {"amount": 500, "currency": "USD", "status": "succeeded"},
    )
    assert balances(client, member) == {"USD": 700, "EUR": 300}
    assert balances(client, creator) == {"USD": 500}

    (delivery,) = recorder.to(messages_of(creator))
    assert (delivery.payload["id"], delivery.payload["tip"]) == (
        message.id,
        {"amount": 500, "currency": "USD", "status": "succeeded"},
    )
    assert delivery.committed
    (ack,) = recorder.to(events_of(member), type="ack")
    assert (
        ack.payload["id"],
        ack.payload["client_id"],
        ack.payload["status"],
        ack.payload["tip"]["status"],
    ) == (message.id, "tip-2", "sent", "succeeded")
    assert ack.committed

    # a retry is charged once and answers the same tip
    repeat = ok(tip(client, member, creator, 500, key="tip-2", body="love your work"), 200)
    assert repeat == succeeded
    assert balances(client, member)["USD"] == 700
    assert len(stored(sessions, member, creator)) == 1
    assert len(recorder.to(messages_of(creator))) == 1
    conflict = tip(client, member, creator, 600, key="tip-2", body="love your work")
    assert error_code(conflict, 409) == "idempotency_conflict"
    # a failed tip stays failed for its key (a new tip takes a new key), and costs nothing
    assert error_code(tip(client, member, creator, 500, key="tip-1"), 402) == "tip_failed"
    assert balances(client, member)["USD"] == 700
    assert [(t.client_msg_id, t.status) for t in tip_rows(sessions, member)] == [
        ("tip-1", "failed"),
        ("tip-2", "succeeded"),
    ]

    # the creator sees what they received; the member everything they sent
    received = ok(client.get("/v1/tips/received", headers=creator_auth(creator)))
    assert ([t["id"] for t in received["tips"]], received["next_before"]) == ([succeeded["id"]], None)
    sent = ok(client.get("/v1/tips/sent", headers=auth(member)))["tips"]
    assert [(t["client_id"], t["status"], t["billing_url"]) for t in sent] == [
        ("tip-2", "succeeded", None),
        ("tip-1", "failed", BILLING_URL),
    ]
    assert ok(client.get("/v1/tips/received", headers=auth(member)))["tips"] == []
    page = ok(client.get("/v1/tips/sent", headers=auth(member), params={"limit": 1}))
    assert ([t["client_id"] for t in page["tips"]], page["next_before"]) == (["tip-2"], succeeded["id"])
    rest = ok(client.get("/v1/tips/sent", headers=auth(member), params={"before": page["next_before"]}))
    assert [t["client_id"] for t in rest["tips"]] == ["tip-1"]


def test_tip_refusals(
    client: TestClient,
    sessions: Sessions,
    make_creator: Callable[[], str],
    make_user: MakeUser,
    make_uid: MakeUid,
) -> None:
    creator, picky, member, peer = make_creator(), make_creator(), make_user("member"), make_user("peer")
    svc = make_user("svc", "service")
    top_up(client, member, 500_000)
    top_up(client, creator, 500_000)
    ok(client.put(f"/v1/blocks/{member}", headers=creator_auth(picky)))

    assert error_code(tip(client, member, peer), 403) == "tip_refused"
    assert error_code(tip(client, creator, picky, role=Role.CREATOR), 403) == "tip_refused"
    blocked = tip(client, member, picky)
    assert error_code(blocked, 403) == "tip_refused"
    assert picky in blocked.json()["detail"]
    for amount, currency in ((99, "USD"), (200_001, "USD"), (500, "JPY")):
        assert error_code(tip(client, member, creator, amount, currency), 400) == "invalid_tip", (
            amount,
            currency,
        )
    for amount, currency in ((0, "USD"), (-5, "USD"), (500, "usd"), (500, "DOLLAR")):
        assert error_code(tip(client, member, creator, amount, currency), 422) == "invalid_request", (
            amount,
            currency,
        )
    assert error_code(tip(client, member, make_uid("ghost")), 404) == "unknown_recipient"
    assert error_code(tip(client, member, member), 400) == "invalid_recipient"
    assert error_code(tip(client, svc, creator, role=Role.SERVICE), 403) == "forbidden"
    assert (
        error_code(client.post("/v1/tips", json={"to": creator, "amount": 500, "currency": "USD"}), 401)
        == "unauthorized"
    )

    assert tip_rows(sessions, member) == tip_rows(sessions, creator) == []
    assert stored(sessions, member, picky) == []
    assert balances(client, member) == balances(client, creator) == {"USD": 500_000}

    # the bounds themselves are accepted, in each accepted currency
    top_up(client, member, 200_000, "EUR")
    top_up(client, member, 200_000, "GBP")
    for amount, currency in ((100, "USD"), (200_000, "EUR"), (150, "GBP")):
        assert ok(tip(client, member, creator, amount, currency), 201)["status"] == "succeeded"
    assert balances(client, creator) == {"USD": 500_100, "EUR": 200_000, "GBP": 150}


# --- tips, through an HTTP billing service ---


def test_a_tip_whose_charge_times_out_is_pending_then_settled_once(
    http_client: TestClient,
    recorder: Recorder,
    sessions: Sessions,
    fake: FakeServices,
    external: Services,
    make_creator: Callable[[], str],
    make_user: MakeUser,
) -> None:
    creator, member = make_creator(), make_user("member")
    key = f"tip:{member}:t-1"
    fake.balances[(member, "EUR")] = 10_000  # enough for a second charge, were one made
    fake.script(CHARGES, ["slow"])  # the first charge goes through, its answer never arrives in time

    pending = ok(tip(http_client, member, creator, 700, "EUR", key="t-1"), 202)
    assert (pending["status"], pending["message_id"], pending["settled_at"]) == ("pending", None, None)
    assert stored(sessions, member, creator) == []
    (ack,) = recorder.to(events_of(member))
    assert (ack.payload["type"], ack.payload["status"], ack.payload["id"]) == ("ack", "pending", None)
    assert ack.payload["tip"] == {"amount": 700, "currency": "EUR", "status": "pending"}
    assert ack.committed
    assert recorder.to(messages_of(creator)) == []
    # a retry while it is pending answers pending again, without charging again
    assert ok(tip(http_client, member, creator, 700, "EUR", key="t-1"), 202)["id"] == pending["id"]
    assert charge_keys(fake, member) == [(key, key)]

    # it is not due before its retry time; a settler takes it once it is
    with unit_of_work(sessions) as session:
        assert not tips.claim(session, pending["id"], "settler", utcnow(), tipping.LEASE_S)
    with unit_of_work(sessions) as session:
        later = utcnow() + timedelta(seconds=POLICY.retry_s + 1)
        assert tips.claim(session, pending["id"], "settler", later, tipping.LEASE_S)
    settled, out = tipping.settle(sessions, external.billing, pending["id"], POLICY)

    assert settled is not None and settled.status == "succeeded"
    (message,) = stored(sessions, member, creator)
    assert (settled.message_id, message.tip_amount, message.tip_currency, message.tip_status) == (
        message.id,
        700,
        "EUR",
        "succeeded",
    )
    published = [(o.topic, json.loads(o.payload)) for o in out]
    assert [(topic, p["type"], p["id"]) for topic, p in published] == [
        (messages_of(creator), "message", message.id),
        (events_of(member), "ack", message.id),
    ]
    # billing was asked twice with the same key, in the header and the body, and charged once
    assert charge_keys(fake, member) == [(key, key), (key, key)]
    assert fake.charges[key].id == settled.charge_id
    assert (fake.balances[(member, "EUR")], fake.balances[(creator, "EUR")]) == (9_300, 700)
    assert tipping.settle(sessions, external.billing, pending["id"], POLICY)[1] == []
    assert len(charge_keys(fake, member)) == 2

    again = ok(tip(http_client, member, creator, 700, "EUR", key="t-1"), 200)
    assert (again["id"], again["status"], again["message_id"]) == (pending["id"], "succeeded", message.id)
    assert len(charge_keys(fake, member)) == 2
    assert [
        t["status"] for t in ok(http_client.get("/v1/tips/received", headers=creator_auth(creator)))["tips"]
    ] == ["succeeded"]


def test_a_charge_declined_by_billing_is_402(
    http_client: TestClient,
    recorder: Recorder,
    sessions: Sessions,
    fake: FakeServices,
    make_creator: Callable[[], str],
    make_user: MakeUser,
) -> None:
    creator, member = make_creator(), make_user("member")
    fake.declines[member] = "card_declined"

    declined = tip(http_client, member, creator, 300, key="d-1")
    assert error_code(declined, 402) == "tip_failed"
    assert (declined.json()["billing_url"], declined.json()["tip"]["reason"]) == (
        BILLING_URL,
        "card_declined",
    )
    assert stored(sessions, member, creator) == []
    assert recorder.to(messages_of(creator)) == []
    assert charge_keys(fake, member) == [(f"tip:{member}:d-1", f"tip:{member}:d-1")]
    assert fake.succeeded() == []


# --- admin balances ---


def test_balances_need_an_operator(
    client: TestClient, make_user: MakeUser, make_creator: Callable[[], str]
) -> None:
    member, creator, svc = make_user("member"), make_creator(), make_user("svc", "service")
    url = f"/v1/admin/balances/{member}"
    body = {"amount": 1000, "currency": "USD"}

    assert error_code(client.post(url, json=body), 401) == "unauthorized"
    assert error_code(client.post(url, json=body, headers={"X-Admin-Key": "wrong"}), 401) == "unauthorized"
    assert error_code(client.post(url, json=body, headers=auth(member)), 403) == "forbidden"
    assert error_code(client.post(url, json=body, headers=creator_auth(creator)), 403) == "forbidden"
    assert error_code(client.get(url, headers=auth(member)), 403) == "forbidden"
    assert error_code(client.get(url), 401) == "unauthorized"
    assert balances(client, member) == {}

    assert ok(client.post(url, json=body, headers=auth(svc, Role.SERVICE))) == {
        "user": member,
        "balances": {"USD": 1000},
    }
    assert ok(client.get(url, headers=auth(svc, Role.SERVICE))) == {"user": member, "balances": {"USD": 1000}}
    for invalid in ({"amount": 0, "currency": "USD"}, {"amount": 5, "currency": "usd"}, {"amount": 5}):
        assert error_code(client.post(url, json=invalid, headers=ADMIN), 422) == "invalid_request", invalid
    assert (
        error_code(client.post("/v1/admin/balances/bad%20id", json=body, headers=ADMIN), 422)
        == "invalid_request"
    )
    assert balances(client, member) == {"USD": 1000}


def test_balances_are_external_with_an_http_billing_service(
    http_client: TestClient, make_user: MakeUser, fake: FakeServices
) -> None:
    member = make_user("member")
    url = f"/v1/admin/balances/{member}"
    top = http_client.post(url, json={"amount": 1000, "currency": "USD"}, headers=ADMIN)
    assert error_code(top, 409) == "billing_external"
    assert error_code(http_client.get(url, headers=ADMIN), 409) == "billing_external"
    assert fake.requests_for(CHARGES) == []


# --- one client id, one send (bugs found while writing these tests) ---


def test_a_tip_reusing_a_message_key_is_not_charged_for_a_message_without_its_tip(
    client: TestClient, sessions: Sessions, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    creator, member = make_creator(), make_user("member")
    top_up(client, member, 1000)
    plain = ok(
        client.post(
            "/v1/messages",
            json={"to": creator, "body": "hi"},
            headers=auth(member) | {"Idempotency-Key": "k-1"},
        ),
        201,
    )

    answer = tip(client, member, creator, 500, key="k-1", body="hi")

    # refused as a reused key, before any charge (it used to settle onto the plain message)
    assert error_code(answer, 409) == "idempotency_conflict"
    assert balances(client, member) == {"USD": 1000}
    shown = ok(client.get("/v1/messages", headers=creator_auth(creator), params={"with": member}))["messages"]
    assert [m["id"] for m in shown] == [plain["id"]]


def test_a_failed_tip_tells_the_members_devices(
    client: TestClient, recorder: Recorder, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    """A tip that succeeds over REST acks the member's devices; one that fails must likewise send
    them ``tip_failed`` (SPEC 4), as it does for a tip sent over MQTT."""
    creator, member = make_creator(), make_user("member")

    assert error_code(tip(client, member, creator, 500, key="tip-1"), 402) == "tip_failed"

    (told,) = recorder.to(events_of(member))
    assert told.payload == {
        "type": "tip_failed",
        "client_id": "tip-1",
        "billing_url": BILLING_URL,
        "reason": "insufficient_funds",
        "tip": {"amount": 500, "currency": "USD", "status": "failed"},
    }
    assert told.committed


def test_a_list_message_reusing_a_message_key_still_reaches_every_member(
    client: TestClient, sessions: Sessions, make_creator: Callable[[], str], make_user: MakeUser
) -> None:
    creator = make_creator()
    fans = sorted(make_user("fan") for _ in range(2))
    list_id = new_list(client, creator, *fans)
    direct = client.post(
        "/v1/messages",
        json={"to": fans[0], "body": "hi you"},
        headers=creator_auth(creator) | {"Idempotency-Key": "k-1"},
    )
    ok(direct, 201)

    answer = to_list(client, creator, list_id, "new post", key="k-1")

    # refused as a reused key (it used to be queued, and that member silently got no copy)
    assert error_code(answer, 409) == "idempotency_conflict"
    # and the other way round: a 1:1 message cannot take a list message's key either
    mass_id = ok(to_list(client, creator, list_id, "new post", key="k-2"), 202)["id"]
    run_fanout(sessions, EmbeddedLists(sessions), mass_id, page_size=10)
    done = ok(client.get(f"/v1/mass-messages/{mass_id}", headers=creator_auth(creator)))
    assert done["stored"] == done["processed"] == 2
    again = client.post(
        "/v1/messages",
        json={"to": fans[0], "body": "new post"},
        headers=creator_auth(creator) | {"Idempotency-Key": "k-2"},
    )
    assert error_code(again, 409) == "idempotency_conflict"
    for fan in fans:
        assert "new post" in [m.body for m in stored(sessions, creator, fan)], fan
