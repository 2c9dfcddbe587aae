"""Prometheus metrics, in a registry of their own built at start-up and passed to each part."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE_LATEST",
    "HTTP_METHODS",
    "HTTP_METHOD_LABELS",
    "HTTP_STATUS_LABELS",
    "OTHER_METHOD",
    "UNMATCHED_ROUTE",
    "Metrics",
]

#: Label values come only from fixed sets and the code's own literals, never from what a client
#: sends: each distinct value is a new time series, kept for the life of the process and sent in
#: every scrape. A method outside these is counted as ``other``.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
HTTP_METHOD_LABELS = HTTP_METHODS | {OTHER_METHOD}
#: The route label of a request that matched no route (its path is the client's to invent).
UNMATCHED_ROUTE = "unmatched"
#: Statuses are counted by class: a scan with any method on any route then adds at most five
#: series per route, and the refusals' reasons are in ``messenger_messages_rejected`` by code.
HTTP_STATUS_LABELS = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx"})

_BATCH_SIZES = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Everything the processes measure. One instance per process (``messenger serve`` shares one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_stored = Counter(
            "messenger_messages_stored",
            "Messages stored (a redelivered duplicate is not counted).",
            ["via"],
            registry=r,
        )
        self.messages_delivered = Counter(
            "messenger_messages_delivered",
            "Messages published to a recipient's topic (live delivery and catch-up).",
            registry=r,
        )
        self.messages_rejected = Counter(
            "messenger_messages_rejected",
            "Commands and sends refused, by error code.",
            ["code", "via"],
            registry=r,
        )
        self.handler_batch_size = Histogram(
            "messenger_handler_batch_size",
            "Inbound commands per handler transaction.",
            buckets=_BATCH_SIZES,
            registry=r,
        )
        self.handler_batch_seconds = Histogram(
            "messenger_handler_batch_seconds",
            "Time to process one batch: parse, transaction and commit.",
            buckets=_SECONDS,
            registry=r,
        )
        self.commands_received = Counter(
            "messenger_handler_commands_received",
            "Inbound commands and presence changes a handler took from the broker.",
            registry=r,
        )
        self.commands_acked = Counter(
            "messenger_handler_commands_acked",
            "Inbound commands acknowledged to the broker after their batch committed and published.",
            registry=r,
        )
        self.mqtt_published = Counter(
            "messenger_mqtt_published",
            "Messages and events a process handed to the broker, by process role.",
            ["role"],
            registry=r,
        )
        self.handler_queue = Gauge(
            "messenger_handler_queue_depth",
            "Commands received by this handler and not yet in a batch (its lag behind the broker).",
            registry=r,
        )
        self.handler_unconfirmed = Gauge(
            "messenger_handler_unconfirmed_publishes",
            "Publishes handed to the broker and not yet confirmed; their commands are not acked yet.",
            registry=r,
        )
        self.handler_takeovers = Counter(
            "messenger_handler_takeovers",
            "Sessions of dead handlers this handler resumed and emptied, by outcome: ended (every "
            "command handled, the session closed) or abandoned (left for a later try).",
            ["outcome"],
            registry=r,
        )
        self.presence_applied = Counter(
            "messenger_presence_changes_applied",
            "Presence changes the bridge wrote to the presence store.",
            registry=r,
        )
        self.errors = Counter(
            "messenger_errors",
            "Failures a process recovered from by retrying or redelivery, by component and kind.",
            ["component", "kind"],
            registry=r,
        )
        self.connected_clients = Gauge(
            "messenger_connected_clients", "MQTT clients connected to the embedded broker.", registry=r
        )
        self.http_requests = Histogram(
            "messenger_http_request_seconds",
            "REST requests by method, route template and status class.",
            ["method", "route", "status"],
            buckets=_SECONDS,
            registry=r,
        )

    def observe_http(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """Count one REST request; ``route`` is the matched route's template (None: no match)."""
        self.http_requests.labels(
            method if method in HTTP_METHODS else OTHER_METHOD,
            route or UNMATCHED_ROUTE,
            f"{status // 100}xx" if 100 <= status <= 599 else "5xx",
        ).observe(seconds)

    def count_connected(self, source: Callable[[], int]) -> None:
        """Read the connected-clients gauge from ``source`` at each scrape."""
        self.connected_clients.set_function(lambda: float(source()))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
