"""``messenger serve``: broker, handler, presence bridge and REST API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from acl.tokens import TokenVerifier
from bridge.bridge import PresenceBridge
from broker.server import EmbeddedBroker, Listeners
from handler.background import Background
from handler.consumer import HandlerConsumer
from launch import roles
from launch.http_server import server_config
from launch.process import QuietServer, listen
from launch.roles import Store
from messenger.admission import ConnectGate
from messenger.db import create_db_engine, migrate, session_factory
from messenger.exceptions import ConfigurationError
from messenger.metrics import Metrics
from messenger.mqtt import MqttPublisher
from messenger.presence import create_presence_store
from messenger.ratelimit import create_rate_limiter
from messenger.services import create_services
from messenger.settings import ServeSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    mqtt: tuple[str, int]
    ws: tuple[str, int] | None
    api: tuple[str, int]


class Messenger:
    """All components wired together, started and stopped in order."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.engine = create_db_engine(settings.database_url)
        self.sessions = session_factory(self.engine)
        self.presence = create_presence_store(settings.redis_url)
        try:  # configuration mistakes surface here, before any port opens
            self.verifier = TokenVerifier(settings.token_config())
            self.service_token = settings.resolve_service_token()
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        self.metrics = Metrics()
        self.limiter = create_rate_limiter(settings.redis_url, settings.rate_limits())
        self.gate = ConnectGate(self.sessions)
        self.services = create_services(settings, self.sessions)
        self.store = Store(self.sessions, self.services, self.metrics)
        self.broker = EmbeddedBroker(
            self.verifier,
            host=settings.bind_host,
            mqtt_port=settings.mqtt_port,
            ws_port=settings.ws_port,
            on_authenticated=self.gate.admit,
            connect_timeout_s=settings.mqtt_connect_timeout_s,
            max_connections=settings.mqtt_max_connections,
        )
        self.handler: HandlerConsumer | None = None
        self.bridge: PresenceBridge | None = None
        self.publisher: MqttPublisher | None = None
        self.background: Background | None = None
        self._api: QuietServer | None = None
        self._api_task: asyncio.Task[None] | None = None

    async def start(self) -> Endpoints:
        s = self.settings
        self.broker.check_ports()  # a taken port fails before anything starts
        api_sock = listen(s.bind_host, s.api_port, "--api-port", "MESSENGER_API_PORT")
        try:
            await asyncio.to_thread(migrate, self.engine)
            listeners = await self.broker.start()
            self.metrics.count_connected(self.broker.broker.connected_count)
            await self._start_workers(listeners)
            assert self.publisher is not None  # noqa: S101 - started by _start_workers
            app = roles.api(
                s,
                self.store,
                presence=self.presence,
                verifier=self.verifier,
                publisher=self.publisher,
                limiter=self.limiter,
                gate=self.gate,
            ).public
            self._api = QuietServer(server_config(app, s))
            self._api_task = asyncio.create_task(self._api.serve(sockets=[api_sock]))
            while not self._api.started:
                if self._api_task.done():
                    await self._api_task
                    raise RuntimeError("the REST API stopped during start-up")
                await asyncio.sleep(0.02)
            host, port = api_sock.getsockname()[:2]
        except BaseException:
            api_sock.close()
            await self.stop()
            raise
        return Endpoints(listeners.mqtt, listeners.ws, (str(host), int(port)))

    async def _start_workers(self, listeners: Listeners) -> None:
        s = self.settings
        host, port = listeners.mqtt
        token = self.service_token
        self.background = roles.background(
            s, self.store, token, s.handler_client_name(), limiter=self.limiter
        )
        await asyncio.to_thread(self.background.start, host, port, wait_s=10.0)
        self.handler = roles.handler(
            s, self.store, token, limiter=self.limiter, work=self.background, shared=False
        )
        await asyncio.to_thread(self.handler.start, host, port)
        self.bridge = roles.bridge(s, self.presence, token, self.metrics)
        await asyncio.to_thread(self.bridge.start, host, port)
        self.publisher = roles.publisher(s, token)
        await asyncio.to_thread(self.publisher.start, host, port)

    async def stop(self) -> None:
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            with contextlib.suppress(Exception):
                await self._api_task
        for worker in (
            self.publisher,
            self.handler,
            self.background,
            self.bridge,
        ):
            if worker is not None:
                await asyncio.to_thread(worker.stop)
        self.services.close()
        await self.broker.stop()
        self.presence.close()
        self.limiter.close()
        self.engine.dispose()


def _hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True) if "@" in url else url


async def run(settings: ServeSettings) -> None:
    """Run until SIGINT or SIGTERM, printing where each listener is."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = Messenger(settings)
    endpoints = await app.start()
    database = app.engine.url.render_as_string(hide_password=True)
    presence = "Redis " + _hide_password(settings.redis_url) if settings.redis_url else "in-process"
    ws = f"ws://{endpoints.ws[0]}:{endpoints.ws[1]}/mqtt" if endpoints.ws else "off"
    print(
        "Messenger is running\n"
        f"  MQTT      mqtt://{endpoints.mqtt[0]}:{endpoints.mqtt[1]}\n"
        f"  WebSocket {ws}\n"
        f"  REST API  http://{endpoints.api[0]}:{endpoints.api[1]}  (OpenAPI at /docs)\n"
        f"  database  {database}\n"
        f"  presence  {presence}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )
    await stop.wait()
    print("Stopping...", flush=True)
    await app.stop()
    print("Stopped.", flush=True)
