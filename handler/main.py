"""``messenger handler``: one of N handlers sharing the inbound stream on Mosquitto.

It joins the MQTT 5 shared subscription ``$share/handlers/inbound/+`` (and the presence stream
that triggers catch-up, shared the same way, so one handler answers each device) with a
persistent session: the broker splits the commands among the running handlers, keeps what a
stopped handler was sent, and redelivers what it never acked. Acks go out only after the commit.

A handler also runs the fan-out of mass messages and the settlement of tips, on threads of its
own (``MESSENGER_BACKGROUND_WORK``); ``messenger worker`` runs only those.
"""

from __future__ import annotations

import logging
import sys

from paho.mqtt.enums import MQTTProtocolVersion

from acl.topics import SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER
from handler.background import Background
from handler.consumer import HandlerConsumer
from handler.processor import CommandProcessor
from launch.process import require_redis, wait_for_stop_signal
from messenger.db import create_db_engine, session_factory
from messenger.exceptions import ConfigurationError
from messenger.metrics import Metrics
from messenger.mqtt import service_client
from messenger.ratelimit import create_rate_limiter
from messenger.services import create_services
from messenger.settings import HandlerSettings
from messenger.tipping import TipPolicy

logger = logging.getLogger(__name__)

#: How long a thread holds the GIL before another may take it (Python's default is 5 ms).
SWITCH_INTERVAL_S = 0.0005

#: The largest Receive Maximum MQTT 5 allows.
RECEIVE_MAXIMUM = 65_535


def run(settings: HandlerSettings) -> int:
    """Consume until SIGINT/SIGTERM, then finish the batches in hand and stop."""
    # The fan-out thread is CPU-bound; with the default 5 ms switch interval each hand-over of
    # a 1:1 command between threads (network, worker, acker) could wait that long for the GIL.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        token = settings.resolve_service_token()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    redis_url = require_redis(settings.redis_url, "handler")
    engine = create_db_engine(settings.database_url)
    limiter = create_rate_limiter(redis_url, settings.send_limit())
    metrics = Metrics()
    name = settings.handler_client_name()
    client = service_client(
        user=settings.service_user,
        token=token,
        name=name,
        manual_ack=True,
        max_inflight=settings.max_inflight,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    sessions = session_factory(engine)
    services = create_services(settings, sessions)
    tip_policy = TipPolicy.of(settings)
    background = None
    if settings.background_work:  # else `messenger worker` processes do it
        background = Background.create(settings, token, name, sessions, services, metrics)
    processor = CommandProcessor(
        sessions,
        sync_page_size=settings.sync_page_size,
        limiter=limiter,
        metrics=metrics,
        lists=services.lists,
        tip_policy=tip_policy,
        on_queued=background.wake if background is not None else None,
    )
    consumer = HandlerConsumer(
        client,
        processor,
        batch_size=settings.batch_size,
        batch_wait_s=settings.batch_wait_ms / 1000,
        subscriptions=(SHARED_INBOUND_FILTER, SHARED_PRESENCE_FILTER),
        metrics=metrics,
        session_expiry_s=settings.session_expiry_s or None,
        # let the broker hand over as many unacked commands as MQTT allows: they wait in this
        # process (safe: acked only after commit) instead of in Mosquitto's bounded queue
        receive_maximum=RECEIVE_MAXIMUM,
    )
    logger.info(
        "handler %s starting: broker %s:%d, shared group %s",
        name,
        settings.mqtt_host,
        settings.mqtt_port,
        SHARED_INBOUND_FILTER,
    )
    consumer.start(settings.mqtt_host, settings.mqtt_port, wait_s=None)
    if background is not None:
        background.start(settings.mqtt_host, settings.mqtt_port)
    try:
        wait_for_stop_signal()
    finally:
        logger.info("handler %s stopping after %d commands", name, consumer.processed)
        consumer.stop()
        if background is not None:
            background.stop()
        services.close()
        limiter.close()
        engine.dispose()
    return 0


def run_worker(settings: HandlerSettings) -> int:
    """``messenger worker``: fan-out and tip settlement only, until SIGINT/SIGTERM.

    Handlers started with ``MESSENGER_BACKGROUND_WORK=false`` leave that work to workers, so a
    large fan-out never shares a Python process (and its GIL) with the 1:1 command stream. The
    work is found in the database (queued mass messages, due tips), polled every half second.
    """
    try:
        token = settings.resolve_service_token()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    engine = create_db_engine(settings.database_url)
    sessions = session_factory(engine)
    services = create_services(settings, sessions)
    name = settings.handler_client_name("worker")
    background = Background.create(settings, token, name, sessions, services, Metrics())
    logger.info("worker %s starting: broker %s:%d", name, settings.mqtt_host, settings.mqtt_port)
    background.start(settings.mqtt_host, settings.mqtt_port)
    try:
        wait_for_stop_signal()
    finally:
        logger.info("worker %s stopping", name)
        background.stop()
        services.close()
        engine.dispose()
    return 0
