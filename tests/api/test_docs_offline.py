"""``/docs`` and ``/redoc`` work without internet: every asset they load is served by the app."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.app import DOCS_ASSETS_URL
from messenger.mqtt import MqttPublisher
from tests.api.app import MakeClient, client_maker
from tests.api.testclient import TestClient

#: Content type of each kind of asset the pages load.
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}
#: The attribute values of a page that make a browser fetch something.
_FETCHED = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""")


@pytest.fixture
def client(sessions: sessionmaker[Session], publisher: MqttPublisher) -> Iterator[TestClient]:
    make: MakeClient
    with client_maker(sessions=sessions, publisher=publisher) as make:
        yield make()


@pytest.mark.parametrize(
    ("page", "needs"),
    [("/docs", {".js", ".css", ".png"}), ("/redoc", {".js", ".png"})],
    ids=["swagger-ui", "redoc"],
)
def test_docs_pages_load_every_asset_from_the_app(client: TestClient, page: str, needs: set[str]) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # no CDN, no web font, not even a protocol-relative //host/... URL
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == [], html

    assets = _FETCHED.findall(html)
    assert {a[a.rindex(".") :] for a in assets} >= needs, assets
    for asset in assets:
        assert asset.startswith(f"{DOCS_ASSETS_URL}/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert served.content, asset
        content_type = served.headers["content-type"].split(";")[0]
        assert content_type in CONTENT_TYPES[asset[asset.rindex(".") :]], (asset, content_type)


def test_swagger_ui_reads_the_apps_own_schema(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert client.get("/openapi.json").status_code == 200


def test_an_unknown_asset_is_a_json_404(client: TestClient) -> None:
    response = client.get(f"{DOCS_ASSETS_URL}/no-such-file.js")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert client.get(f"{DOCS_ASSETS_URL}/../app.py").status_code == 404


def test_the_assets_are_not_in_the_public_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")]
