"""The chat app's side of the API (api/routes/webapp.py): its public config, the development-only
token endpoint, and the built app served at ``/`` without shadowing any of the API's own paths.

A temporary directory stands in for ``web/app/dist`` (these tests need no Node.js).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.deps import WebApp, build_deps
from api.routes.webapp import APP_CSP
from messenger.constants import DEV_SECRET, MAX_PAYLOAD_BYTES
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher
from messenger.presence import MemoryPresenceStore
from messenger.settings import ApiSettings, ServeSettings
from tests.api.app import VERIFIER, MakeClient, client_maker
from tests.api.testclient import TestClient

INDEX = '<!doctype html><title>app</title><script type="module" src="/assets/app-1.js"></script>'


@pytest.fixture
def make_client(sessions: sessionmaker[Session], publisher: MqttPublisher) -> Iterator[MakeClient]:
    with client_maker(sessions=sessions, publisher=publisher) as make:
        yield make


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "assets" / "app-1.js").write_text("console.log(1)")
    (root / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def _client(settings: ApiSettings, sessions: sessionmaker[Session], publisher: MqttPublisher) -> TestClient:
    deps = build_deps(
        settings,
        sessions=sessions,
        presence=MemoryPresenceStore(),
        verifier=VERIFIER,
        publisher=publisher,
        limiter=None,
        metrics=Metrics(),
    )
    return TestClient(create_app(deps))


# --- GET /v1/config


def test_config_is_public_and_carries_the_apps_settings(make_client: MakeClient) -> None:
    client = make_client(app=WebApp(mqtt_url="wss://chat.example.com/mqtt", mqtt_ws_port=8083))

    config = client.get("/v1/config")  # no token

    assert config.status_code == 200, config.text
    body = config.json()
    assert body["mqtt_url"] == "wss://chat.example.com/mqtt"
    assert body["mqtt_ws_port"] is None  # a configured URL wins
    assert body["api_url"] is None
    assert body["login_url"].startswith("http://login.example/")
    assert body["dev_tokens"] is False
    assert body["limits"]["max_body_bytes"] == MAX_PAYLOAD_BYTES
    assert body["limits"]["tip_currencies"] == ["EUR", "GBP", "USD"]


def test_serve_points_the_app_at_its_own_websocket_port(
    sessions: sessionmaker[Session], publisher: MqttPublisher
) -> None:
    with _client(ServeSettings(ws_port=18083, environment="development"), sessions, publisher) as client:
        body = client.get("/v1/config").json()
    assert (body["mqtt_url"], body["mqtt_ws_port"], body["dev_tokens"]) == (None, 18083, True)


def test_a_public_ws_url_must_be_a_websocket_url() -> None:
    assert ApiSettings(public_ws_url="wss://chat.example.com/mqtt").public_ws_url is not None
    for bad in ("https://chat.example.com/mqtt", "wss:///mqtt", "wss://a b/mqtt", "wss://u@host/mqtt"):
        with pytest.raises(ValueError, match="MESSENGER_PUBLIC_WS_URL"):
            ApiSettings(public_ws_url=bad)


# --- POST /v1/dev/token


def test_development_issues_a_token_for_any_user(make_client: MakeClient, make_uid: object) -> None:
    client = make_client(app=WebApp(dev_secret=DEV_SECRET))
    assert client.get("/v1/config").json()["dev_tokens"] is True

    issued = client.post("/v1/dev/token", json={"user_id": "dev-alice", "role": "creator"})

    assert issued.status_code == 200, issued.text
    token = issued.json()["token"]
    principal = VERIFIER.verify(token)
    assert (principal.user_id, principal.role.value) == ("dev-alice", "creator")
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["user"] == "dev-alice"


@pytest.mark.parametrize(
    "body",
    [{"user_id": "no spaces"}, {"user_id": ""}, {"user_id": "bob", "role": "service"}, {}],
    ids=["space", "empty", "service-role", "missing"],
)
def test_a_bad_dev_token_request_is_422(make_client: MakeClient, body: dict[str, str]) -> None:
    client = make_client(app=WebApp(dev_secret=DEV_SECRET))
    assert client.post("/v1/dev/token", json=body).status_code == 422


def test_production_has_no_dev_token_endpoint(
    sessions: sessionmaker[Session], publisher: MqttPublisher
) -> None:
    production = ApiSettings(environment="production", jwt_secret="a-login-service-secret-" + "x" * 20)
    own_secret = ApiSettings(environment="development", jwt_secret="a-login-service-secret-" + "y" * 20)
    for settings in (production, own_secret):
        assert not settings.issues_dev_tokens()
        with _client(settings, sessions, publisher) as client:
            refused = client.post("/v1/dev/token", json={"user_id": "alice"})
            assert refused.status_code == 404, refused.text
            assert refused.json()["code"] == "not_found"
            assert client.get("/v1/config").json()["dev_tokens"] is False
    assert ApiSettings(environment="development").issues_dev_tokens()


# --- the app at /


def test_the_app_is_served_at_root_and_conversation_links(make_client: MakeClient, dist: Path) -> None:
    client = make_client(app=WebApp(web_dir=dist))

    for path in ("/", "/c/bob", "/c/a.b-c_d"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.text == INDEX
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == APP_CSP
        assert page.headers["cache-control"] == "no-cache"
    asset = client.get("/assets/app-1.js")
    assert asset.status_code == 200 and asset.text == "console.log(1)"
    assert "immutable" in asset.headers["cache-control"]
    assert client.get("/favicon.svg").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/nothing",
        "/c/bob/more",
        "/assets/missing.js",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets",
    ],
)
def test_anything_else_is_404(make_client: MakeClient, dist: Path, path: str) -> None:
    client = make_client(app=WebApp(web_dir=dist))
    answer = client.get(path)
    assert answer.status_code == 404, (path, answer.text)
    assert "outside" not in answer.text


def test_the_app_never_shadows_the_apis_paths(make_client: MakeClient, dist: Path) -> None:
    client = make_client(app=WebApp(web_dir=dist))

    assert client.get("/v1/nothing").json()["code"] == "not_found"
    assert client.get("/v1/me").status_code == 401
    assert client.get("/openapi.json").json()["info"]["title"] == "Messenger"
    assert "swagger" in client.get("/docs").text.lower()
    assert "redoc" in client.get("/redoc").text.lower()
    assert client.get("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405  # still the route's own answer
    assert client.get("/mqtt/user").status_code == 405  # the gateway route: POST only
    for path in ("/mqtt/nothing", "/metrics/x", "/docs/nothing", "/readyz/x"):
        assert client.get(path).status_code == 404, path
        assert INDEX not in client.get(path).text
    assert "/{path}" not in client.get("/openapi.json").json()["paths"]


def test_without_a_build_root_says_how_to_build(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(app=WebApp(web_dir=tmp_path / "not-built"))

    for path in ("/", "/c/bob"):
        page = client.get(path)
        assert page.status_code == 200
        assert "make web" in page.text and "20.19" in page.text
    assert client.get("/assets/app-1.js").status_code == 404
