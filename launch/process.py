"""Helpers for the separate production processes (``messenger api|handler|bridge``)."""

from __future__ import annotations

import signal
import threading

from messenger.exceptions import ConfigurationError


def wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM (the way containers and the topology runner stop us)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def require_redis(redis_url: str | None, process: str) -> str:
    """The processes share presence and rate limits through Redis; in-process would be wrong."""
    if not redis_url:
        raise ConfigurationError(
            f"messenger {process} runs beside other processes and needs MESSENGER_REDIS_URL "
            "(presence and rate limits are shared through Redis)"
        )
    return redis_url
