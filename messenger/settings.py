"""Configuration, read from ``MESSENGER_*`` environment variables (pydantic-settings).

One class per process; ``messenger serve`` combines them all. The entry point builds them once,
never at import time, and passes them down (the CLI applies its flags on top).
"""

from __future__ import annotations

import ipaddress
import socket
from datetime import timedelta
from pathlib import Path
from typing import Literal, Self
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from acl.principal import Role
from acl.tokens import TokenConfig, issue_token
from messenger import constants
from messenger.ratelimit import Action, Limit


class CommonSettings(BaseSettings):
    """Settings every process needs: database, presence store, tokens."""

    model_config = SettingsConfigDict(env_prefix="MESSENGER_", extra="ignore")

    environment: Literal["development", "staging", "production"] = "development"
    database_url: str = "sqlite:///var/messenger.db"
    database_password: SecretStr | None = Field(
        default=None,
        description="Password put into MESSENGER_DATABASE_URL (e.g. from a secret file), so the URL "
        "itself holds none.",
    )
    redis_url: str | None = None
    dev_secret: SecretStr = SecretStr(constants.DEV_SECRET)
    jwt_secret: SecretStr | None = Field(
        default=None, description="Shared HS256 secret of the login service (replaces the dev secret)."
    )
    jwt_public_key: SecretStr | None = Field(default=None, description="PEM public key (RS256/ES256/EdDSA).")
    jwt_public_key_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    login_url: str = "http://localhost:3000/login"
    node_id: str = Field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    send_rate_per_s: float = Field(
        default=5.0, ge=0, description="Messages a user may send per second, sustained (0: no limit)."
    )
    send_burst: int = Field(default=30, ge=1, description="Messages a user may send at once.")
    # the other per-action buckets (messenger/ratelimit.py, docs/security.md "Limits"); rate 0: off
    tip_rate_per_s: float = Field(default=0.2, ge=0, description="Tips a user may send per second.")
    tip_burst: int = Field(default=10, ge=1, description="Tips a user may send at once.")
    charge_declined_rate_per_s: float = Field(
        default=1 / 600,
        ge=0,
        description="Declined charges a user may run up per second (default one per 10 minutes); "
        "beyond them tips are refused before billing is called.",
    )
    charge_declined_burst: int = Field(default=5, ge=1, description="Declined charges in a row.")
    resend_rate_per_s: float = Field(
        default=0.5,
        ge=0,
        description="REST replays of a stored message that publish it again, per user per second; "
        "beyond them a replay is answered from the database without publishing.",
    )
    resend_burst: int = Field(default=10, ge=1)
    typing_rate_per_s: float = Field(
        default=2.0, ge=0, description="Typing events per user per second; beyond them dropped."
    )
    typing_burst: int = Field(default=10, ge=1)
    read_rate_per_s: float = Field(default=5.0, ge=0, description="Read marks per user per second.")
    read_burst: int = Field(default=30, ge=1)
    sync_rate_per_s: float = Field(
        default=0.5, ge=0, description="Catch-ups over MQTT (sync, a device online) per user per second."
    )
    sync_burst: int = Field(default=10, ge=1)
    request_rate_per_s: float = Field(
        default=20.0, ge=0, description="Authenticated REST requests per user per second."
    )
    request_burst: int = Field(default=100, ge=1)
    address_rate_per_s: float = Field(
        default=100.0,
        ge=0,
        description="REST requests per client address per second (health checks and the broker "
        "gateway exempt).",
    )
    address_burst: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _database_password_into_url(self) -> Self:
        if self.database_password is not None:
            url = make_url(self.database_url).set(password=self.database_password.get_secret_value())
            self.database_url = url.render_as_string(hide_password=False)
        return self

    @model_validator(mode="after")
    def _refuse_dev_secret_outside_development(self) -> Self:
        if self.environment == "development":
            return self
        if self.jwt_secret is None and self.jwt_public_key is None and self.jwt_public_key_file is None:
            raise ValueError(
                f"MESSENGER_ENVIRONMENT={self.environment} does not accept the development token secret: "
                "set MESSENGER_JWT_SECRET or MESSENGER_JWT_PUBLIC_KEY(_FILE)"
            )
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value() == constants.DEV_SECRET:
            raise ValueError("MESSENGER_JWT_SECRET is the published development secret; use your own")
        return self

    def hs256_secret(self) -> str | None:
        """The HS256 secret in force: the login service's, else (in development) the dev one."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        if self.public_key_pem() is not None or self.environment != "development":
            return None
        return self.dev_secret.get_secret_value()

    def public_key_pem(self) -> str | None:
        if self.jwt_public_key is not None:
            return self.jwt_public_key.get_secret_value()
        if self.jwt_public_key_file is not None:
            return self.jwt_public_key_file.read_text()
        return None

    def rate_limits(self) -> dict[Action, Limit]:
        """Each action's bucket, from ``MESSENGER_{ACTION}_RATE_PER_S`` and ``_BURST``."""
        return {
            action: Limit(getattr(self, f"{action.value}_rate_per_s"), getattr(self, f"{action.value}_burst"))
            for action in Action
        }

    def token_config(self) -> TokenConfig:
        return TokenConfig(
            hs256_secret=self.hs256_secret(),
            public_key_pem=self.public_key_pem(),
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
        )


class ListenerSettings(CommonSettings):
    """A process that listens: loopback by default, and never public with the dev secret."""

    bind_host: str = constants.DEFAULT_BIND_HOST

    @model_validator(mode="after")
    def _dev_secret_only_on_loopback(self) -> Self:
        if self.hs256_secret() == constants.DEV_SECRET and not _is_loopback(self.bind_host):
            raise ValueError(
                f"listening on {self.bind_host} with the published development secret would let anyone "
                "sign tokens: set MESSENGER_JWT_SECRET (or a public key), or bind to 127.0.0.1"
            )
        return self


def _has_valid_port(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServiceClientSettings(ListenerSettings):
    """How the API, handler, worker and bridge reach the broker as the service account, and their
    internal listener (health, readiness, metrics; on the API also the broker gateway)."""

    mqtt_host: str = constants.DEFAULT_BIND_HOST
    mqtt_port: int = constants.DEFAULT_MQTT_PORT
    service_user: str = constants.DEFAULT_SERVICE_USER
    service_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the service account; minted from the HS256 secret if unset.",
    )
    internal_port: int | None = Field(
        default=None,
        ge=0,
        le=65_535,
        description="Port of the internal listener (/healthz, /readyz, /metrics; on the API also the "
        "/mqtt gateway, which then leaves the public port); unset: none. Keep it off the internet.",
    )

    def resolve_service_token(self) -> str:
        """The configured service token, or a fresh one signed with the HS256 secret."""
        if self.service_token is not None:
            return self.service_token.get_secret_value()
        secret = self.hs256_secret()
        if secret is None:
            raise ValueError("MESSENGER_SERVICE_TOKEN is required when tokens are verified with a public key")
        return issue_token(
            secret,
            self.service_user,
            role=Role.SERVICE,
            ttl=timedelta(days=365),
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
        )


class ProductSettings(CommonSettings):
    """The list and billing services, tips and mass messages (the handler and the API)."""

    lists_url: str | None = Field(
        default=None, description="Base URL of the list service; unset: lists live in this database."
    )
    billing_url: str | None = Field(
        default=None, description="Base URL of the billing service; unset: the embedded ledger."
    )
    services_token: SecretStr | None = Field(
        default=None, description="Bearer token sent to the list and billing services."
    )
    services_timeout_s: float = Field(default=2.0, gt=0, le=60)
    services_retries: int = Field(default=2, ge=0, le=10, description="Retries after the first try.")
    tip_min_amount: int = Field(default=100, ge=1, description="Smallest tip, in minor units.")
    tip_max_amount: int = Field(default=200_000, ge=1, description="Largest tip, in minor units.")
    tip_currencies: str = Field(
        default="USD,EUR,GBP", pattern=r"^[A-Z]{3}(,[A-Z]{3})*$", description="Accepted tip currencies."
    )
    billing_preferences_url: str = Field(
        default="http://localhost:3000/settings/billing",
        description="Where a member whose tip failed fixes their payment method (tip_failed).",
    )
    tip_retry_s: float = Field(
        default=5.0, gt=0, description="First retry of a charge whose outcome is unknown (then doubling)."
    )
    fanout_page_size: int = Field(
        default=1000, ge=1, le=10_000, description="List members stored per fan-out transaction."
    )
    fanout_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a fan-out stays with a handler that stopped renewing it (died) "
        "before another handler resumes it; a restarted handler of the same name resumes at once.",
    )

    @model_validator(mode="after")
    def _tip_bounds(self) -> Self:
        if self.tip_min_amount > self.tip_max_amount:
            raise ValueError("MESSENGER_TIP_MIN_AMOUNT is larger than MESSENGER_TIP_MAX_AMOUNT")
        return self

    def accepted_currencies(self) -> frozenset[str]:
        return frozenset(self.tip_currencies.split(","))


class HandlerSettings(ServiceClientSettings, ProductSettings):
    batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most inbound commands per transaction."
    )
    batch_wait_ms: float = Field(default=2.0, ge=0, description="How long a batch waits to fill up.")
    sync_page_size: int = Field(default=100, ge=1, le=1000)
    max_inflight: int = Field(default=1000, ge=1, le=65_000)
    handler_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="This handler's name in its client id (default handler-NODE_ID); keep it across "
        "restarts so the broker hands back its session.",
    )
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        description="How long Mosquitto keeps a stopped handler's session and queued commands (MQTT 5).",
    )
    handler_dead_after_s: float = Field(
        default=5.0,
        description="A handler that has not beaten in Redis for this long is dead, and a live one "
        "empties its session (0: off; at least 2). See docs/production.md#a-handler-that-dies.",
    )

    background_work: bool = Field(
        default=True,
        description="Also run mass-message fan-out and tip settlement in this handler; false where "
        "`messenger worker` processes do it, so that 1:1 commands never share a process with a fan-out.",
    )

    @model_validator(mode="after")
    def _dead_after(self) -> Self:
        if self.handler_dead_after_s != 0 and self.handler_dead_after_s < 2:
            raise ValueError("MESSENGER_HANDLER_DEAD_AFTER_S must be 0 (off) or at least 2 seconds")
        return self

    def handler_client_name(self, kind: str = "handler") -> str:
        return self.handler_name or f"{kind}-{self.node_id}"


class BrokerSettings(ListenerSettings):
    mqtt_port: int = constants.DEFAULT_MQTT_PORT
    ws_port: int = constants.DEFAULT_WS_PORT
    mqtt_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="The embedded broker closes a connection (TCP or WebSocket) that has not sent "
        "its whole CONNECT this long after opening.",
    )
    mqtt_max_connections: int = Field(
        default=20_000,
        ge=1,
        description="Connections the embedded broker holds at once, its own service clients "
        "included; beyond them a new socket is closed at once. Keep it under the open-file limit.",
    )


class ApiSettings(ServiceClientSettings, ProductSettings):
    """The REST API; it publishes what requests produce as the service account."""

    api_port: int = constants.DEFAULT_API_PORT
    public_url: str | None = Field(
        default=None,
        description="The API's public base URL (https://host[:port][/prefix]): a browser sent to the "
        "login page comes back to it (next=); never taken from the request's Host header. Unset: "
        "next= is the path and query only.",
    )
    history_max_limit: int = Field(default=200, ge=1)
    public_ws_url: str | None = Field(
        default=None,
        description="The broker's MQTT-over-WebSocket URL the chat app connects to (wss://host/mqtt), "
        "served by GET /v1/config. Unset: `messenger serve`'s own WebSocket port on the host the page "
        "was loaded from; elsewhere none (the app says so).",
    )
    web_dir: Path | None = Field(
        default=None,
        description="The built chat app (index.html and assets/) served at /. Unset: web/app/dist of "
        "the source checkout; when it is missing, / answers a page saying how to build it.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A request's line and headers must arrive within this (from the connection's "
        "opening, or the request's first byte on a kept-alive connection); else 408 and close.",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="A request's body must arrive within this of its headers; else 408 and close.",
    )
    http_keepalive_s: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="An idle connection between requests is closed after this; behind a load "
        "balancer, set it above the balancer's own idle timeout.",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Connections each REST listener serves at once; a request on one more is "
        "answered 503 and its connection closed.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Operator key for /v1/admin (header X-Admin-Key); unset: service tokens only.",
    )

    gateway_secret: SecretStr | None = Field(
        default=None,
        description="Secret brokers send (X-Gateway-Secret) to /mqtt/*; unset: those endpoints refuse.",
    )

    @model_validator(mode="after")
    def _public_url_is_an_origin(self) -> Self:
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if (
                not self.public_url.isprintable()
                or any(c in self.public_url for c in " \\")
                or not _has_valid_port(parts)
                or parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.username is not None
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    "MESSENGER_PUBLIC_URL must be an http(s) URL with a host and at most a path, "
                    f"e.g. https://chat.example.com/api (got {self.public_url!r})"
                )
        if self.public_ws_url is not None:
            parts = urlsplit(self.public_ws_url)
            if (
                not self.public_ws_url.isprintable()
                or any(c in self.public_ws_url for c in " \\")
                or not _has_valid_port(parts)
                or parts.scheme not in ("ws", "wss")
                or not parts.hostname
                or parts.username is not None
                or parts.fragment
            ):
                raise ValueError(
                    "MESSENGER_PUBLIC_WS_URL must be a ws(s) URL with a host, e.g. "
                    f"wss://chat.example.com/mqtt (got {self.public_ws_url!r})"
                )
        return self

    def issues_dev_tokens(self) -> bool:
        """Development only, with the published secret: the sign-in page may mint tokens."""
        return self.environment == "development" and self.hs256_secret() == constants.DEV_SECRET

    @model_validator(mode="after")
    def _keys_long_enough(self) -> Self:
        for name in ("admin_key", "gateway_secret"):
            value: SecretStr | None = getattr(self, name)
            if value is not None and len(value.get_secret_value()) < 16:
                raise ValueError(f"MESSENGER_{name.upper()} must be at least 16 characters")
        return self


class ServeSettings(HandlerSettings, BrokerSettings, ApiSettings):
    """Everything in one process on embedded defaults (``messenger serve``)."""
