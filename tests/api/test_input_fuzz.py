"""Whatever a client sends, the REST API answers 2xx or 4xx with the project's error shape, never
a 5xx: Hypothesis over every operation that takes a JSON body (read from the app's OpenAPI
document, so a new one is covered without touching this file), with arbitrary JSON and
arbitrary Unicode (lone surrogates, control characters, noncharacters), and over the path and
query of the read operations with arbitrary percent-encoded bytes. On each database.

schemathesis (test_openapi_fuzz.py) generates from the schema; this generates what the schema
does not describe: text that is not Unicode, keys nobody declared, bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from acl.principal import Role
from acl.tokens import TokenConfig, TokenVerifier
from api.app import create_app
from api.deps import ApiDeps, WebApp
from messenger.actions import Outbound
from messenger.constants import DEV_SECRET
from messenger.mqtt import Publisher
from messenger.presence import MemoryPresenceStore
from tests.api.app import ADMIN_KEY, client_maker
from tests.api.testclient import TestClient
from tests.conftest import token

MakeUser = Callable[..., str]
Sessions = sessionmaker[Session]

#: Deterministic (derandomize, no example database) and modest: each example is a request.
FUZZ_BODIES = settings(max_examples=75)  # the profile: tests/conftest.py
FUZZ_READS = settings(FUZZ_BODIES, max_examples=25)
GATEWAY_SECRET = "fuzz-gateway-secret-" + uuid.uuid4().hex


def _openapi() -> dict[str, Any]:
    """The app's OpenAPI document; building it touches none of the clients."""
    verifier = TokenVerifier(TokenConfig(hs256_secret=DEV_SECRET))
    unused = cast(Publisher, None)
    return create_app(
        ApiDeps(sessionmaker(), MemoryPresenceStore(), verifier, unused, "http://login")
    ).openapi()


OPENAPI = _openapi()
SCHEMAS: dict[str, Any] = OPENAPI["components"]["schemas"]
#: (method, path template, names of the body's fields) of every operation taking a JSON body.
WITH_BODY = sorted(
    (
        method.upper(),
        path,
        tuple(
            SCHEMAS[op["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]][
                "properties"
            ]
        ),
    )
    for path, operations in OPENAPI["paths"].items()
    for method, op in operations.items()
    if "requestBody" in op
)
#: Read operations, their path templates.
READS = sorted(path for path, operations in OPENAPI["paths"].items() if "get" in operations)


class Discard:
    """The API's publisher: what committed requests publish is only checked to be UTF-8 JSON."""

    @property
    def connected(self) -> bool:
        return True

    def publish(self, out: Sequence[Outbound]) -> None:
        for o in out:
            json.loads(o.payload.decode("utf-8"))


@pytest.fixture
def client(sessions: Sessions) -> Iterator[TestClient]:
    # development tokens on, so that POST /v1/dev/token is fuzzed past its 404
    dev = WebApp(dev_secret=DEV_SECRET)
    with client_maker(sessions=sessions, publisher=Discard(), gateway_secret=GATEWAY_SECRET, app=dev) as make:
        yield make()


@pytest.fixture
def people(client: TestClient, make_user: MakeUser) -> dict[str, str]:
    """Who the requests are from and about: a member, a creator, and a list the creator owns."""
    member, creator = make_user("fz-member"), make_user("fz-creator", "creator")
    made = client.post("/v1/lists", json={"name": "fans"}, headers=_auth(creator, Role.CREATOR))
    assert made.status_code == 201, made.text
    return {
        "member": member,
        "member_token": token(member),
        "creator": creator,
        "list_id": made.json()["id"],
        "user": make_user("fz-other"),
    }


def _auth(user: str, role: Role = Role.MEMBER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, role)}"}


def _headers(people: dict[str, str], as_creator: bool) -> dict[str, str]:
    caller = _auth(people["creator"], Role.CREATOR) if as_creator else _auth(people["member"])
    return caller | {"X-Admin-Key": ADMIN_KEY, "X-Gateway-Secret": GATEWAY_SECRET}


def check_answer(response: Any) -> None:
    """2xx, 3xx or 4xx; a 4xx in the error shape; every JSON answer UTF-8."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.headers.get("content-type", "").startswith("application/json"):
        answer = json.loads(response.content.decode("utf-8"))
        if response.status_code >= 400:
            assert isinstance(answer["code"], str), answer
            assert isinstance(answer["detail"], str), answer


#: Any code point, lone surrogates and control characters included, and often one of those.
ANY_CHAR = st.characters(codec=None, exclude_categories=()) | st.sampled_from(
    ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\x1b", "\x7f", "\x85", "\n", "\u202e", "\U0001f600"]
)
ANY_TEXT = st.lists(ANY_CHAR, max_size=30).map("".join)  # st.text() would merge the alphabets
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=16,
)


@dataclass(frozen=True)
class Ref:
    """A value naming one of the test's own users or lists, filled in per test."""

    template: str


#: A valid body of each operation: the generator changes one or two of its fields (or adds one),
#: so that the text it puts there gets past every other check.
VALID: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/mqtt/acl"): {
        "username": Ref("{member}"),
        "clientid": Ref("{member}/fuzz"),
        "topic": Ref("inbound/{member}"),
        "acc": 2,
    },
    ("POST", "/mqtt/superuser"): {"username": Ref("{member}"), "clientid": Ref("{member}/fuzz")},
    ("POST", "/mqtt/user"): {
        "username": Ref("{member}"),
        "clientid": Ref("{member}/fuzz"),
        "password": Ref("{member_token}"),
    },
    ("POST", "/v1/admin/balances/{user}"): {"amount": 100, "currency": "USD"},
    ("POST", "/v1/admin/revocations"): {"user": Ref("{user}"), "reason": "fuzz"},
    ("POST", "/v1/dev/token"): {"user_id": Ref("{member}"), "role": "member"},
    ("POST", "/v1/lists"): {"name": "fans"},
    ("POST", "/v1/lists/{list_id}/members"): {"members": [Ref("{member}")]},
    ("POST", "/v1/messages"): {"to": Ref("{creator}"), "body": "hi"},
    ("POST", "/v1/messages/read"): {"up_to": 1, "with": Ref("{creator}")},
    ("POST", "/v1/presence/query"): {"users": [Ref("{member}"), Ref("{creator}")]},
    ("POST", "/v1/tips"): {"to": Ref("{creator}"), "amount": 100, "currency": "USD", "body": "thanks"},
    ("PUT", "/v1/admin/users/{user}"): {"role": "member", "display_name": "Fuzz"},
}


def _fill(value: Any, people: dict[str, str]) -> Any:
    if isinstance(value, Ref):
        return value.template.format(**people)
    if isinstance(value, list):
        return [_fill(v, people) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, people) for k, v in value.items()}
    return value


def bodies(valid: dict[str, Any], fields: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Mostly ``valid`` with one declared field set to arbitrary text; also with one set to any
    JSON, with keys added or changed (declared or not), or any JSON at all."""
    declared = st.sampled_from(fields)
    one_text = st.tuples(declared, ANY_TEXT).map(lambda kv: valid | {kv[0]: kv[1]})
    one_value = st.tuples(declared, JSON_VALUES).map(lambda kv: valid | {kv[0]: kv[1]})
    changes = st.dictionaries(declared | ANY_TEXT, ANY_TEXT | JSON_VALUES, min_size=1, max_size=3)
    return st.one_of(one_text, one_text, one_value, changes.map(lambda change: valid | change), JSON_VALUES)


def _encoded(value: Any, ascii_only: bool) -> bytes:
    # ensure_ascii: a lone surrogate goes as a \\udxxx escape; else as the bytes Python would
    # write for it (surrogatepass), which are not UTF-8
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(("method", "path", "fields"), WITH_BODY, ids=[f"{m} {p}" for m, p, _ in WITH_BODY])
@FUZZ_BODIES
@given(data=st.data())
def test_any_body(
    client: TestClient,
    people: dict[str, str],
    method: str,
    path: str,
    fields: tuple[str, ...],
    data: st.DataObject,
) -> None:
    valid = _fill(VALID[method, path], people)
    value = data.draw(bodies(valid, fields), label="body")
    payload = _encoded(value, data.draw(st.booleans(), label="ascii_only"))
    url = path.format(list_id=people["list_id"], user=people["user"])
    headers = _headers(people, data.draw(st.booleans(), label="as_creator"))
    response = client.request(
        method, url, content=payload, headers=headers | {"Content-Type": "application/json"}
    )
    check_answer(response)


def test_every_operation_with_a_body_has_a_valid_example() -> None:
    """A new operation taking a body fails here until VALID has an example of it."""
    assert {(m, p) for m, p, _ in WITH_BODY} == set(VALID)


def test_the_valid_examples_are_valid(client: TestClient, people: dict[str, str]) -> None:
    """Else the mutations would be refused for something else than the text they carry."""
    for method, path, _ in WITH_BODY:
        url = path.format(list_id=people["list_id"], user=people["user"])
        body = _fill(VALID[method, path], people)
        response = client.request(
            method, url, json=body, headers=_headers(people, path.startswith("/v1/lists"))
        )
        assert response.status_code < 300 or (path, response.status_code) == ("/v1/tips", 402), response.text
        if path.startswith("/mqtt/") and path != "/mqtt/superuser":
            assert response.json()["ok"] is True, (path, response.text)


@pytest.mark.parametrize("path", READS)
@FUZZ_READS
@given(
    segment=st.binary(max_size=12), query=st.lists(st.tuples(ANY_TEXT, st.binary(max_size=12)), max_size=3)
)
def test_any_path_and_query(
    client: TestClient,
    people: dict[str, str],
    path: str,
    segment: bytes,
    query: list[tuple[str, bytes]],
) -> None:
    """Path parameters and query values as arbitrary bytes, percent-encoded (what a URL carries)."""
    quoted = quote_from_bytes(segment, safe="")
    url = path.format_map({name: quoted for name in ("user", "list_id", "mass_id")})
    names = ["with", "after", "before", "limit", "users"]
    pairs = [
        f"{quote_from_bytes(k.encode('utf-8', 'surrogatepass'), safe='')}={quote_from_bytes(v, safe='')}"
        for k, v in query
    ]
    pairs += [f"{n}={quote_from_bytes(segment, safe='')}" for n in names[: len(query)]]
    response = client.get(f"{url}?{'&'.join(pairs)}", headers=_headers(people, as_creator=bool(segment)))
    check_answer(response)
