"""``messenger api``: the REST API and the broker gateway endpoints, as their own process.

It publishes what requests produce (messages, events, revocations) through one service
connection to the broker. That connection is made in the background: with Mosquitto, the
broker asks this very process (``/mqtt/user``) whether the service may connect, so the API
must be listening first; ``/readyz`` says when the broker is connected.
"""

from __future__ import annotations

import logging

import uvicorn

from acl.tokens import TokenVerifier
from api.app import create_app
from api.deps import build_deps
from launch.process import require_redis
from messenger.db import create_db_engine, session_factory
from messenger.exceptions import ConfigurationError
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher, service_client
from messenger.presence import RedisPresenceStore
from messenger.ratelimit import create_rate_limiter
from messenger.services import create_services
from messenger.settings import ApiSettings

logger = logging.getLogger(__name__)


def run(settings: ApiSettings) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn's own signal handling)."""
    try:
        verifier = TokenVerifier(settings.token_config())
        token = settings.resolve_service_token()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    redis_url = require_redis(settings.redis_url, "api")
    if settings.gateway_secret is None:
        logger.warning("MESSENGER_GATEWAY_SECRET is unset: brokers cannot use the /mqtt gateway endpoints")
    engine = create_db_engine(settings.database_url)
    sessions = session_factory(engine)
    services = create_services(settings, sessions)
    presence = RedisPresenceStore(redis_url)
    limiter = create_rate_limiter(redis_url, settings.send_limit())
    publisher = MqttPublisher(
        service_client(user=settings.service_user, token=token, name=f"api-{settings.node_id}")
    )
    app = create_app(
        build_deps(
            settings,
            sessions=sessions,
            presence=presence,
            verifier=verifier,
            publisher=publisher,
            limiter=limiter,
            metrics=Metrics(),
            services=services,
        )
    )
    publisher.start(settings.mqtt_host, settings.mqtt_port, wait_s=None)
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="off",
    )
    try:
        uvicorn.Server(config).run()
    finally:
        publisher.stop()
        services.close()
        limiter.close()
        presence.close()
        engine.dispose()
    return 0
