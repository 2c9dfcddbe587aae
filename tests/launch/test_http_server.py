"""The one uvicorn configuration every REST listener is built from (launch/http_server.py)."""

from __future__ import annotations

import uvicorn

from launch.http_server import ServerConfig, server_config
from messenger.settings import ApiSettings


def test_every_listener_is_configured_from_the_settings() -> None:
    settings = ApiSettings(
        http_header_timeout_s=3, http_body_timeout_s=4, http_keepalive_s=7, http_max_connections=50
    )

    config = server_config(object(), settings)  # type: ignore[arg-type]

    assert isinstance(config, ServerConfig)
    assert isinstance(config, uvicorn.Config)
    assert (config.header_timeout_s, config.body_timeout_s) == (3, 4)
    assert config.timeout_keep_alive == 7
    assert config.limit_concurrency == 51  # uvicorn counts the connection asking too
