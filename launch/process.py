"""The separate production processes: ``messenger api | handler | worker | bridge``.

Each builds its clients from its settings, waits for the dependencies it cannot work without
(the database at the current schema, Redis), builds its role with :mod:`launch.roles`, opens its
internal listener when ``MESSENGER_INTERNAL_PORT`` is set, and runs until SIGINT or SIGTERM.

A dependency that is not up yet is waited for, with backoff and a log line that says what is
missing: under an orchestrator the processes start in any order, and a crash loop would only
add noise. The broker is not waited for here: paho retries in the background, the commands wait
in the broker's session for the handler, and ``/readyz`` says when the process is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from acl.tokens import TokenVerifier
from acl.topics import SHARED_INBOUND_FILTER
from broker.server import bind_port
from handler.takeover import HandlerRegistry
from launch import roles
from launch.health import Check, HealthServer, flag_check
from launch.http_server import server_config
from launch.roles import Store
from messenger.db import create_db_engine, schema_behind, session_factory
from messenger.exceptions import ConfigurationError
from messenger.metrics import Metrics
from messenger.presence import PresenceStore, RedisPresenceStore
from messenger.ratelimit import create_rate_limiter
from messenger.services import create_services
from messenger.settings import ApiSettings, HandlerSettings, ServiceClientSettings

logger = logging.getLogger(__name__)

#: How long a thread holds the GIL before another may take it (Python's default is 5 ms). The
#: fan-out thread is CPU-bound; with the default each hand-over of a 1:1 command between threads
#: (network, worker, acker) could wait that long.
SWITCH_INTERVAL_S = 0.0005

#: Waiting for a dependency: first retry after this, doubling up to MAX_WAIT_S.
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 15.0


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (the way containers and the topology runner stop us)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for(what: str, problem: Callable[[], str | None], stop: threading.Event) -> bool:
    """Poll ``problem`` (None: ready) with backoff until it is ready; False if stopped first."""
    delay = FIRST_WAIT_S
    while (reason := problem()) is not None:
        logger.warning("waiting for %s: %s (next try in %.1fs)", what, reason, delay)
        if stop.wait(delay):
            return False
        delay = min(delay * 2, MAX_WAIT_S)
    return True


def database_problem(engine: Engine) -> Callable[[], str | None]:
    where = engine.url.render_as_string(hide_password=True)

    def problem() -> str | None:
        try:
            behind = schema_behind(engine)
        except Exception as exc:  # unreachable, refused, unknown database: say which, retry
            return f"{where} does not answer ({type(exc).__name__}: {_first_line(exc)})"
        return f"{where}: {behind}" if behind else None

    return problem


def presence_problem(store: PresenceStore) -> Callable[[], str | None]:
    return lambda: None if store.ping() else "Redis does not answer"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""


def require_redis(redis_url: str | None, process: str) -> str:
    """The processes share presence and rate limits through Redis; in-process would be wrong."""
    if not redis_url:
        raise ConfigurationError(
            f"messenger {process} runs beside other processes and needs MESSENGER_REDIS_URL "
            "(presence and rate limits are shared through Redis)"
        )
    return redis_url


def service_token(settings: ServiceClientSettings) -> str:
    try:
        return settings.resolve_service_token()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


@contextlib.contextmanager
def _store(settings: HandlerSettings | ApiSettings, metrics: Metrics) -> Iterator[tuple[Engine, Store]]:
    engine = create_db_engine(settings.database_url)
    sessions = session_factory(engine)
    services = create_services(settings, sessions)
    try:
        yield engine, Store(sessions, services, metrics)
    finally:
        services.close()
        engine.dispose()


@contextlib.contextmanager
def _internal_listener(
    settings: ServiceClientSettings, checks: dict[str, Check], metrics: Metrics
) -> Iterator[None]:
    """Liveness, readiness and metrics from the start, also while dependencies are awaited."""
    if settings.internal_port is None:
        yield
        return
    server = HealthServer(settings.bind_host, settings.internal_port, checks=checks, metrics=metrics)
    server.start()
    try:
        yield
    finally:
        server.stop()


def problem_check(problem: Callable[[], str | None]) -> Check:
    """A readiness check from a dependency probe: "ok", or what :func:`wait_for` would say."""
    return lambda: f"error: {reason}" if (reason := problem()) else "ok"


def run_handler(settings: HandlerSettings) -> int:
    """``messenger handler``: consume until SIGINT/SIGTERM, then finish the batches in hand."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    token = service_token(settings)
    redis_url = require_redis(settings.redis_url, "handler")
    stop = stop_on_signals()
    metrics = Metrics()
    limiter = create_rate_limiter(redis_url, settings.rate_limits())
    with _store(settings, metrics) as (engine, store):
        name = settings.handler_client_name()
        work = None
        if settings.background_work:
            work = roles.background(settings, store, token, name, limiter=limiter)
        consumer = roles.handler(settings, store, token, limiter=limiter, work=work, shared=True)
        registry = HandlerRegistry.from_url(redis_url)
        takeover = roles.takeover(settings, store, token, registry=registry, limiter=limiter, work=work)
        database = database_problem(engine)
        checks = {
            "database": problem_check(database),
            "broker": flag_check(lambda: consumer.ready, "not subscribed"),
        }
        if work is not None:
            checks["background"] = flag_check(lambda: work.publisher.connected, "publisher not connected")
        with _internal_listener(settings, checks, metrics):
            if not wait_for("the database", database, stop):
                return 0
            logger.info(
                "handler %s starting: broker %s:%d, shared group %s",
                name,
                settings.mqtt_host,
                settings.mqtt_port,
                SHARED_INBOUND_FILTER,
            )
            consumer.start(settings.mqtt_host, settings.mqtt_port, wait_s=None)
            if takeover is not None:
                takeover.start()
            if work is not None:
                work.start(settings.mqtt_host, settings.mqtt_port)
            try:
                stop.wait()
            finally:
                logger.info("handler %s stopping after %d commands", name, consumer.processed)
                if takeover is not None:
                    takeover.stop_taking_over()
                # with every command in hand handled, its session is of no more use: ended
                # here, nobody has to take it over (a restart under the name starts afresh)
                ended = consumer.stop(end_session=takeover is not None)
                if takeover is not None:
                    takeover.stop(leave=ended)
                if work is not None:
                    work.stop()
                registry.close()
                limiter.close()
    return 0


def run_worker(settings: HandlerSettings) -> int:
    """``messenger worker``: fan-out and tip settlement only, until SIGINT/SIGTERM.

    Handlers started with ``MESSENGER_BACKGROUND_WORK=false`` leave that work to workers, so a
    large fan-out never shares a Python process (and its GIL) with the 1:1 command stream. The
    work is found in the database (queued mass messages, due tips), polled every half second.
    """
    token = service_token(settings)
    stop = stop_on_signals()
    metrics = Metrics()
    # the payers' charge_declined buckets: shared with the API and the handlers through Redis
    limiter = create_rate_limiter(settings.redis_url, settings.rate_limits())
    with _store(settings, metrics) as (engine, store), contextlib.closing(limiter):
        name = settings.handler_client_name("worker")
        work = roles.background(settings, store, token, name, limiter=limiter)
        database = database_problem(engine)
        checks = {
            "database": problem_check(database),
            "broker": flag_check(lambda: work.publisher.connected, "not connected"),
        }
        with _internal_listener(settings, checks, metrics):
            if not wait_for("the database", database, stop):
                return 0
            logger.info("worker %s starting: broker %s:%d", name, settings.mqtt_host, settings.mqtt_port)
            work.start(settings.mqtt_host, settings.mqtt_port)
            try:
                stop.wait()
            finally:
                logger.info("worker %s stopping", name)
                work.stop()
    return 0


def run_bridge(settings: ServiceClientSettings) -> int:
    """``messenger bridge``: mirror this broker node's presence into Redis until SIGINT/SIGTERM."""
    token = service_token(settings)
    store = RedisPresenceStore(require_redis(settings.redis_url, "bridge"))
    stop = stop_on_signals()
    metrics = Metrics()
    bridge = roles.bridge(settings, store, token, metrics)
    redis = presence_problem(store)
    checks = {
        "presence": problem_check(redis),
        "broker": flag_check(lambda: bridge.ready, "not subscribed"),
    }
    try:
        with _internal_listener(settings, checks, metrics):
            if not wait_for("Redis", redis, stop):
                return 0
            logger.info(
                "presence bridge of node %s starting: broker %s:%d",
                settings.node_id,
                settings.mqtt_host,
                settings.mqtt_port,
            )
            bridge.start(settings.mqtt_host, settings.mqtt_port, wait_s=None)
            try:
                stop.wait()
            finally:
                bridge.stop()
    finally:
        store.close()
    return 0


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int, flag: str | None, env: str) -> socket.socket:
    """A listening, non-blocking socket for uvicorn; a taken port names ``flag``/``env``."""
    sock = bind_port(host, port, flag, env)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_api(settings: ApiSettings) -> int:
    """``messenger api``: serve until SIGINT/SIGTERM.

    It publishes what requests produce (messages, events, revocations) through one service
    connection to the broker. That connection is made in the background: with Mosquitto, the
    broker asks this very process (``/mqtt/user``) whether the service may connect, so the API
    must be listening first; ``/readyz`` says when the broker is connected.
    """
    try:
        verifier = TokenVerifier(settings.token_config())
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    token = service_token(settings)
    redis_url = require_redis(settings.redis_url, "api")
    if settings.gateway_secret is None:
        logger.warning("MESSENGER_GATEWAY_SECRET is unset: brokers cannot use the /mqtt gateway endpoints")
    stop = stop_on_signals()
    sockets = [listen(settings.bind_host, settings.api_port, None, "MESSENGER_API_PORT")]
    if settings.internal_port is not None:
        port = settings.internal_port
        sockets.append(listen(settings.bind_host, port, None, "MESSENGER_INTERNAL_PORT"))
    presence = RedisPresenceStore(redis_url)
    limiter = create_rate_limiter(redis_url, settings.rate_limits())
    metrics = Metrics()
    gateway_engine = create_db_engine(settings.database_url) if settings.internal_port is not None else None
    try:
        with _store(settings, metrics) as (engine, store):
            gateway_store = None
            if gateway_engine is not None:  # its own connection pool: see roles.api
                gateway_store = Store(session_factory(gateway_engine), store.services, metrics)
            # served at once (the broker asks this process about every CONNECT, and liveness must
            # answer); meanwhile say what is missing, and /readyz says it too
            threading.Thread(
                target=lambda: (
                    wait_for("the database", database_problem(engine), stop)
                    and wait_for("Redis", presence_problem(presence), stop)
                ),
                name="dependencies",
                daemon=True,
            ).start()
            publisher = roles.publisher(settings, token)
            apps = roles.api(
                settings,
                store,
                presence=presence,
                verifier=verifier,
                publisher=publisher,
                limiter=limiter,
                internal=gateway_store,
            )
            publisher.start(settings.mqtt_host, settings.mqtt_port, wait_s=None)
            internal = None
            if apps.internal is not None:
                internal = _serve_apart(apps.internal, sockets[1], settings, stop)
            try:
                asyncio.run(_serve([(apps.public, sockets[0])], settings, stop))
            finally:
                stop.set()
                if internal is not None:
                    internal.join(timeout=10)
                publisher.stop()
    finally:
        for sock in sockets:
            sock.close()
        if gateway_engine is not None:
            gateway_engine.dispose()
        limiter.close()
        presence.close()
    return 0


def _serve_apart(
    app: FastAPI, sock: socket.socket, settings: ApiSettings, stop: threading.Event
) -> threading.Thread:
    """Serve ``app`` on an event loop, and so a thread pool, of its own (until ``stop``).

    The internal app answers the brokers' gateway: every new MQTT login waits for it. Apart from
    the public app's loop, its synchronous routes never queue behind the public ones for a worker
    thread (Starlette's pool is per event loop), so a flood of slow public requests cannot hold
    up admission.
    """

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = QuietServer(server_config(app, settings))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        waiting: list[asyncio.Future[Any]] = [serving, loop.run_in_executor(None, stop.wait)]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stop.set()  # one listener ending ends the process
        await serving

    host, port = sock.getsockname()[:2]
    thread = threading.Thread(target=asyncio.run, args=(run(),), name="internal-listener", daemon=True)
    thread.start()
    logger.info("listening on %s:%d (internal: the gateway, health, /metrics)", host, port)
    return thread


async def _serve(
    apps: list[tuple[FastAPI, socket.socket]], settings: ApiSettings, stop: threading.Event
) -> None:
    """Run one uvicorn server per (app, socket) until SIGINT/SIGTERM or until one of them ends."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if stop.is_set():  # a signal came before the loop took them over
        return
    servers: list[QuietServer] = []
    tasks: list[asyncio.Task[None]] = []
    for n, (app, sock) in enumerate(apps):
        servers.append(QuietServer(server_config(app, settings)))
        tasks.append(asyncio.create_task(servers[-1].serve(sockets=[sock])))
        host, port = sock.getsockname()[:2]
        logger.info("listening on %s:%d%s", host, port, " (internal)" if n else "")
    waiting: list[asyncio.Future[Any]] = [
        asyncio.create_task(stopping.wait()),
        loop.run_in_executor(None, stop.wait),  # the other listener ended
        *tasks,
    ]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)
