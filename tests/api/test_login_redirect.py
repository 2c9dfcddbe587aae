"""The login redirect: ``next=`` is built from the configured public URL, never from the request's
Host (or X-Forwarded-Host) header, so that a forged header cannot send a member elsewhere after
signing in (issue 16, class 8).

The app is the real one on the real databases; :func:`api.errors.next_url` is also checked alone
with paths no router would match (``//host``, backslashes), since the rule must hold for any path.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.deps import build_deps
from api.errors import next_url
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher
from messenger.presence import MemoryPresenceStore
from messenger.settings import ApiSettings
from tests.api.app import VERIFIER, MakeClient, client_maker
from tests.api.testclient import TestClient

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
PUBLIC_URL = "https://chat.example.com/api"


@pytest.fixture
def make_client(sessions: sessionmaker[Session], publisher: MqttPublisher) -> Iterator[MakeClient]:
    with client_maker(sessions=sessions, publisher=publisher) as make:
        yield make


def next_of(client: TestClient, url: str, **headers: str) -> str:
    """The ``next`` a browser without a token is sent to log in with."""
    page = client.get(url, headers=BROWSER | headers, follow_redirects=False)
    assert page.status_code == 303, page.text
    query = parse_qs(urlsplit(page.headers["location"]).query)
    assert len(query["next"]) == 1
    return query["next"][0]


@pytest.mark.parametrize(
    "headers",
    [{"Host": "evil.example"}, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}],
    ids=["host", "x-forwarded-host"],
)
def test_a_forged_host_never_reaches_next(make_client: MakeClient, headers: dict[str, str]) -> None:
    for client in (make_client(), make_client(public_url=PUBLIC_URL)):
        back_to = next_of(client, "/v1/conversations?limit=5", **headers)

        assert "evil.example" not in back_to
        assert urlsplit(back_to).netloc in ("", "chat.example.com")


def test_next_is_the_path_and_query_on_the_configured_public_url(make_client: MakeClient) -> None:
    client = make_client(public_url=PUBLIC_URL)

    back_to = next_of(client, "/v1/messages?with=bob&before=12&note=a%20b%26c")

    assert back_to == f"{PUBLIC_URL}/v1/messages?with=bob&before=12&note=a%20b%26c"
    parts = urlsplit(back_to)
    assert parse_qs(parts.query) == {"with": ["bob"], "before": ["12"], "note": ["a b&c"]}


def test_without_a_public_url_next_is_a_path_only(make_client: MakeClient) -> None:
    back_to = next_of(make_client(), "/v1/conversations?limit=5")

    assert back_to == "/v1/conversations?limit=5"


def test_the_login_page_keeps_its_own_query(make_client: MakeClient) -> None:
    page = make_client().get("/v1/blocks", headers=BROWSER, follow_redirects=False)

    location = urlsplit(page.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "login.example", "/login")
    assert parse_qs(location.query) == {"app": ["messenger"], "next": ["/v1/blocks"]}


@pytest.mark.parametrize(
    "path",
    ["//evil.example/x", "///evil.example/x", "/\\evil.example/x", "\\\\evil.example/x", "/\\/evil.example"],
)
def test_a_path_cannot_leave_the_origin(path: str) -> None:
    on_public = urlsplit(next_url(PUBLIC_URL, path, "a=1"))
    assert (on_public.scheme, on_public.netloc) == ("https", "chat.example.com")
    assert on_public.path.startswith("/api/")
    assert on_public.query == "a=1"

    relative = next_url(None, path, "")
    assert relative.startswith("/")
    assert not relative.startswith("//")
    assert "\\" not in relative
    # what a browser makes of it, resolved against the login page: still on that page's origin
    assert urlsplit(relative).netloc == ""


@pytest.mark.parametrize("public_url", ["https://chat.example.com/api", "https://chat.example.com/api/"])
def test_the_public_url_may_end_with_a_slash(public_url: str) -> None:
    assert next_url(public_url, "/v1/blocks", "") == "https://chat.example.com/api/v1/blocks"


def test_a_path_is_percent_encoded() -> None:
    assert next_url(None, "/v1/presence/a b", "x=é") == "/v1/presence/a%20b?x=%C3%A9"


# --- the setting ---


def test_the_setting_reaches_the_redirect(sessions: sessionmaker[Session], publisher: MqttPublisher) -> None:
    settings = ApiSettings(public_url=PUBLIC_URL)
    deps = build_deps(
        settings,
        sessions=sessions,
        presence=MemoryPresenceStore(),
        verifier=VERIFIER,
        publisher=publisher,
        limiter=None,
        metrics=Metrics(),
    )
    with TestClient(create_app(deps)) as client:
        assert next_of(client, "/v1/blocks", Host="evil.example") == f"{PUBLIC_URL}/v1/blocks"
    assert ApiSettings().public_url is None


@pytest.mark.parametrize(
    "public_url",
    [
        "chat.example.com",
        "ftp://chat.example.com",
        "https://",
        "https://chat.example.com/api?x=1",
        "https://chat.example.com/#x",
        "https://user@chat.example.com",
        "https://chat.example.com:99999",
        "https://chat.example.com\\@evil.example",
        "https://chat.example.com/a b",
    ],
)
def test_a_public_url_must_be_an_origin_and_a_path(public_url: str) -> None:
    with pytest.raises(ValidationError, match="MESSENGER_PUBLIC_URL"):
        ApiSettings(public_url=public_url)
