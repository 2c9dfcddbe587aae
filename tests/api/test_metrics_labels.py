"""What a client sends never becomes a metric label value: the series stay a bounded set.

Every request adds to ``messenger_http_request_seconds{method,route,status}``; a label value
taken from the request (an invented method, an unmatched path, a path parameter) would make a
new series per request, and the registry and every scrape would grow without bound.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from messenger.mqtt import MqttPublisher
from tests.api.app import MakeClient, client_maker
from tests.api.testclient import TestClient
from tests.conftest import token

SERIES = "messenger_http_request_seconds_count"
#: The only label values allowed (docs/api.md, "GET /metrics").
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
STATUS_CLASSES = {"1xx", "2xx", "3xx", "4xx", "5xx"}
UNMATCHED = "unmatched"


@pytest.fixture
def make_client(sessions: object, publisher: MqttPublisher) -> Iterator[MakeClient]:
    with client_maker(sessions=sessions, publisher=publisher) as make:
        yield make


def series(client: TestClient) -> set[tuple[str, str, str]]:
    """The (method, route, status) label sets of the request histogram's ``_count``."""
    found = set()
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == SERIES:
                found.add((s.labels["method"], s.labels["route"], s.labels["status"]))
    return found


def invented_method(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(4, 12)))


def random_segment(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(1, 24)))


def test_request_data_never_becomes_a_label_value(make_client: MakeClient) -> None:
    client = make_client()
    rng = random.Random(16)  # test data, not a secret
    member = {"Authorization": f"Bearer {token(f'm-{uuid.uuid4().hex[:8]}')}"}
    for n in range(50):
        method = invented_method(rng) if n % 2 else rng.choice(["GET", "POST", "DELETE"])
        path = rng.choice(
            [
                f"/{random_segment(rng)}/{random_segment(rng)}",  # no such route
                f"/v1/messages/{random_segment(rng)}",  # no such route either
                f"/v1/blocks/{random_segment(rng)}",  # a route template, with a random parameter
                f"/v1/presence/{random_segment(rng)}",
            ]
        )
        client.request(method, path, headers=member if n % 3 else {})

    found = series(client)

    # 3 real methods and "other", 3 route labels, the 4xx class (2xx for a presence lookup) at most
    assert len(found) <= 4 * 3 * 2, sorted(found)
    templates = set(client.get("/openapi.json").json()["paths"])
    assert {m for m, _, _ in found} <= METHODS
    assert {r for _, r, _ in found} <= templates | {UNMATCHED}
    assert {s for _, _, s in found} <= STATUS_CLASSES


def test_the_labels_keep_what_an_operator_needs(make_client: MakeClient) -> None:
    client = make_client()
    client.get("/healthz")
    client.request("FOOBAR", "/healthz")
    client.get(f"/no/such/{uuid.uuid4().hex}")

    assert {
        ("GET", "/healthz", "2xx"),
        ("other", "/healthz", "4xx"),  # 405
        ("GET", UNMATCHED, "4xx"),
    } <= series(client)
