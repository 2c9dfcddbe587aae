"""One factory per role. Each role's own command (:mod:`launch.process`) and ``messenger serve``
(:mod:`launch.serve`) build it here, from the clients their process created, so the wiring of a
handler, a worker, a bridge or the API exists once.

What differs between the two is a parameter, not a copy: on Mosquitto the handlers share the
inbound stream over MQTT 5 (``shared=True``); inside ``serve`` one handler talks MQTT 3.1.1 to
the embedded amqtt broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from paho.mqtt.enums import MQTTProtocolVersion
from sqlalchemy.orm import Session, sessionmaker

from acl.tokens import TokenVerifier
from acl.topics import INBOUND_FILTER, PRESENCE_FILTER, SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER
from api.app import create_app, create_internal_app
from api.deps import ApiDeps, build_deps
from bridge.bridge import PresenceBridge
from handler.background import Background
from handler.consumer import HandlerConsumer
from handler.processor import CommandProcessor
from handler.takeover import HandlerRegistry, Takeover
from messenger.admission import ConnectGate
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher, service_client
from messenger.presence import PresenceStore
from messenger.ratelimit import RateLimiter
from messenger.services import Services
from messenger.settings import ApiSettings, HandlerSettings, ServiceClientSettings
from messenger.tipping import TipPolicy

#: The largest Receive Maximum MQTT 5 allows.
RECEIVE_MAXIMUM = 65_535


@dataclass(frozen=True, slots=True)
class Store:
    """The database side every role but the bridge uses: sessions and the list/billing clients."""

    sessions: sessionmaker[Session]
    services: Services
    metrics: Metrics


def background(
    settings: HandlerSettings, store: Store, token: str, name: str, *, limiter: RateLimiter
) -> Background:
    """Fan-out and tip settlement for the process ``name`` (a handler or a worker); ``limiter``
    holds the payers' ``charge_declined`` buckets."""
    return Background.create(
        settings, token, name, store.sessions, store.services, store.metrics, limiter=limiter
    )


def handler(
    settings: HandlerSettings,
    store: Store,
    token: str,
    *,
    limiter: RateLimiter,
    work: Background | None,
    shared: bool,
    empty_session_of: str | None = None,
) -> HandlerConsumer:
    """The command consumer. ``work`` is woken when a command queues a fan-out or a tip.

    ``shared``: join the MQTT 5 shared subscriptions with a persistent session that outlives a
    restart, and let the broker hand over as many unacked commands as MQTT allows (they wait
    here, acked only after the commit, instead of in Mosquitto's bounded queue). Otherwise a
    persistent MQTT 3.1.1 session on the plain filters (the embedded broker).

    ``empty_session_of``: instead, a consumer that resumes the session of the dead handler of
    that name to handle what it holds, and leaves its subscriptions (:mod:`handler.takeover`).
    """
    client = service_client(
        user=settings.service_user,
        token=token,
        name=empty_session_of or settings.handler_client_name(),
        clean_session=False,
        manual_ack=True,
        max_inflight=settings.max_inflight,
        protocol=MQTTProtocolVersion.MQTTv5 if shared else MQTTProtocolVersion.MQTTv311,
        reconnect=empty_session_of is None,
    )
    processor = CommandProcessor(
        store.sessions,
        sync_page_size=settings.sync_page_size,
        limiter=limiter,
        metrics=store.metrics,
        lists=store.services.lists,
        tip_policy=TipPolicy.of(settings),
        on_queued=work.wake if work is not None else None,
    )
    return HandlerConsumer(
        client,
        processor,
        batch_size=settings.batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
        subscriptions=(
            (SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER) if shared else (INBOUND_FILTER, PRESENCE_FILTER)
        ),
        metrics=store.metrics,
        session_expiry_s=(settings.session_expiry_s or None) if shared else None,
        receive_maximum=RECEIVE_MAXIMUM if shared else None,
        leave=empty_session_of is not None,
    )


def takeover(
    settings: HandlerSettings,
    store: Store,
    token: str,
    *,
    registry: HandlerRegistry,
    limiter: RateLimiter,
    work: Background | None,
) -> Takeover | None:
    """The handler's heartbeat and the emptying of dead handlers' sessions (Mosquitto's shared
    subscriptions); None when turned off, or when handler sessions do not outlive a connection."""
    if not settings.handler_dead_after_s or not settings.session_expiry_s:
        return None

    def drain(name: str) -> HandlerConsumer:
        return handler(settings, store, token, limiter=limiter, work=work, shared=True, empty_session_of=name)

    return Takeover(
        registry,
        settings.handler_client_name(),
        drain,
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        dead_after_s=settings.handler_dead_after_s,
        metrics=store.metrics,
    )


def bridge(
    settings: ServiceClientSettings, presence: PresenceStore, token: str, metrics: Metrics
) -> PresenceBridge:
    """Mirrors the presence of the broker node ``MESSENGER_NODE_ID`` into ``presence``."""
    client = service_client(
        user=settings.service_user, token=token, name=f"bridge-{settings.node_id}", manual_ack=True
    )
    return PresenceBridge(client, presence, node_id=settings.node_id, metrics=metrics)


def publisher(settings: ServiceClientSettings, token: str) -> MqttPublisher:
    """The API's connection to the broker, for what requests publish."""
    return MqttPublisher(
        service_client(user=settings.service_user, token=token, name=f"api-{settings.node_id}")
    )


@dataclass(frozen=True, slots=True)
class ApiApps:
    public: FastAPI
    #: the broker gateway, health and /metrics, when MESSENGER_INTERNAL_PORT is set
    internal: FastAPI | None


def api(
    settings: ApiSettings,
    store: Store,
    *,
    presence: PresenceStore,
    verifier: TokenVerifier,
    publisher: MqttPublisher,
    limiter: RateLimiter,
    gate: ConnectGate | None = None,
    internal: Store | None = None,
) -> ApiApps:
    """The REST API. With ``internal`` (a store with a connection pool of its own), the broker
    gateway and /metrics move to an app of their own, so that public requests holding every
    database connection cannot hold up the brokers' login checks."""

    def deps(sessions: Store) -> ApiDeps:
        return build_deps(
            settings,
            sessions=sessions.sessions,
            presence=presence,
            verifier=verifier,
            publisher=publisher,
            limiter=limiter,
            metrics=store.metrics,
            gate=gate,
            services=store.services,
        )

    if internal is None:
        return ApiApps(create_app(deps(store)), None)
    return ApiApps(create_app(deps(store), internal_routes=False), create_internal_app(deps(internal)))
