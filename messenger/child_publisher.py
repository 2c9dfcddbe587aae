"""An :class:`~messenger.mqtt.MqttPublisher` in a child process, for the fan-out's volume.

paho spends about 45 us of Python per QoS 1 message (the PUBLISH, its PUBACK, the
bookkeeping of both) on its network thread and the caller's. In the fan-out's process that is
twice what storing the copy costs, under the same GIL: a 100,000-member fan-out spent most of
its time publishing. A child process has a GIL (and a core) of its own: the parent sends it a
batch of (topic, payload) over a pipe (about 1 ms per 1,000 copies) and it publishes them while
the parent stores the next page.

The child connects as ``{user}/{name}`` like the in-process publisher would, publishes each
batch at QoS 1 and reports when the broker has acknowledged all of it. It exits when the pipe
from the parent closes (the parent stopped or died); the parent starts a new one if it finds
the child gone.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from messenger.actions import Outbound

logger = logging.getLogger(__name__)

#: How long the child waits for the broker to acknowledge one batch before it reports failure.
BATCH_TIMEOUT_S = 30.0

#: How long the child waits for its broker connection before it publishes a batch anyway.
CONNECT_WAIT_S = 5.0

#: Replies from the child: (batch id, the broker took it all); batch id 0 says "connected".
_CONNECTED = 0


class BatchConfirmation:
    """A batch handed to the child; :meth:`wait` says whether the broker took it all."""

    def __init__(self, publisher: ChildPublisher, batch: int, size: int) -> None:
        self._publisher, self._batch, self._size = publisher, batch, size

    def __len__(self) -> int:
        return self._size

    def wait(self, timeout_s: float = 30.0) -> bool:
        """True once the broker acknowledged every message of the batch; False after
        ``timeout_s``, or when the child could not publish it (broker away, child gone)."""
        return self._publisher.wait_for(self._batch, timeout_s)


class ChildPublisher:
    """Publishes batches of :class:`~messenger.actions.Outbound` at QoS 1 from a child process."""

    def __init__(self, *, user: str, token: str, name: str, log_level: int | None = None) -> None:
        self._args = (user, token, name)
        self._log_level = log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        self._address: tuple[str, int] | None = None
        self._lock = threading.Lock()  # the request pipe and the child's lifecycle
        self._done = threading.Condition()
        self._results: dict[int, bool] = {}
        self._pending: set[int] = set()
        self._connected = threading.Event()
        self._next_batch = _CONNECTED + 1
        self._process: BaseProcess | None = None
        self._requests: Connection | None = None
        self._reader: threading.Thread | None = None
        self._stopped = False

    @property
    def connected(self) -> bool:
        """The child has connected to the broker (and has not been replaced since)."""
        return self._connected.is_set() and not self._stopped

    def start(self, host: str, port: int, *, wait_s: float | None = None) -> None:
        """Start the child; with ``wait_s``, wait that long for it to connect (TimeoutError)."""
        self._address = (host, port)
        with self._lock:
            self._stopped = False
            self._spawn()
        if wait_s is not None and not self._connected.wait(wait_s):
            self.stop()
            raise TimeoutError(f"background publisher could not connect to {host}:{port} within {wait_s}s")

    def publish_tracked(self, out: Sequence[Outbound]) -> BatchConfirmation:
        """Hand ``out`` to the child without waiting; the confirmation waits for the broker."""
        batch_items = [(o.topic, o.payload) for o in out]
        with self._lock:
            batch = self._next_batch
            self._next_batch += 1
            try:
                if self._stopped:
                    raise ValueError("the background publisher is stopped")
                if self._process is None or not self._process.is_alive():
                    logger.warning("background publisher process gone; starting a new one")
                    self._spawn()  # fails the batches the old child took with it, not this one
                with self._done:
                    self._pending.add(batch)
                assert self._requests is not None  # noqa: S101 - set by _spawn
                self._requests.send((batch, batch_items))
            except (OSError, EOFError, ValueError):
                logger.warning(
                    "background publisher: could not hand over %d messages", len(out), exc_info=True
                )
                self._finish(batch, ok=False)
        return BatchConfirmation(self, batch, len(out))

    def wait_for(self, batch: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._done:
            while batch not in self._results:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or batch not in self._pending:
                    self._pending.discard(batch)  # a late reply is dropped
                    return False
                self._done.wait(remaining)
            return self._results.pop(batch)

    def stop(self, join_timeout: float = 10.0) -> None:
        """Let the child finish the batches it has, then stop it."""
        with self._lock:
            self._stopped = True  # no publish after this starts a new child
            process, requests = self._process, self._requests
            self._process = self._requests = None
        if requests is not None:
            with contextlib.suppress(OSError, ValueError):
                requests.send(None)
            requests.close()
        if process is not None:
            process.join(join_timeout)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        if self._reader is not None:
            self._reader.join(join_timeout)

    def _spawn(self) -> None:
        """Start a child and the thread reading its replies (called with ``_lock`` held)."""
        assert self._address is not None  # noqa: S101 - set by start
        # spawn, not fork: the parent runs threads (paho, SQLAlchemy pools) a fork would copy mid-use
        context = multiprocessing.get_context("spawn")
        requests_in, requests_out = context.Pipe(duplex=False)
        replies_in, replies_out = context.Pipe(duplex=False)
        user, token, name = self._args
        process = context.Process(
            target=_child_main,
            args=(requests_in, replies_out, self._address, user, token, name, self._log_level),
            name=f"{name}-publisher",
            daemon=True,
        )
        process.start()
        requests_in.close()
        replies_out.close()
        self._fail_pending()  # batches the previous child took with it
        self._connected.clear()
        self._process, self._requests = process, requests_out
        self._reader = threading.Thread(
            target=self._read_replies, args=(replies_in, process), name="publisher-replies", daemon=True
        )
        self._reader.start()

    def _read_replies(self, replies: Connection, process: BaseProcess) -> None:
        try:
            while True:
                batch, ok = replies.recv()
                if batch == _CONNECTED:
                    self._connected.set()
                else:
                    self._finish(batch, ok=ok)
        except (EOFError, OSError):
            pass  # the child stopped
        finally:
            replies.close()
            # what the child took with it will never be confirmed: say so now rather than let
            # each waiter sit out its timeout (unless a newer child has taken over meanwhile)
            with self._lock:
                if self._process is process or self._process is None:
                    self._fail_pending()

    def _finish(self, batch: int, *, ok: bool) -> None:
        with self._done:
            if batch in self._pending:
                self._pending.discard(batch)
                self._results[batch] = ok
            self._done.notify_all()

    def _fail_pending(self) -> None:
        with self._done:
            for batch in self._pending:
                self._results[batch] = False
            self._pending.clear()
            self._done.notify_all()


def _child_main(
    requests: Connection,
    replies: Connection,
    address: tuple[str, int],
    user: str,
    token: str,
    name: str,
    log_level: int,
) -> None:
    """The child: publish each batch from ``requests``, report on ``replies``, until None or EOF."""
    from messenger.actions import Kind, Outbound
    from messenger.mqtt import Confirmation, MqttPublisher, service_client

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (None, or EOF)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # no in-flight limit in paho: with one, every PUBACK rescans all the unacknowledged messages
    # (quadratic in a fan-out page); the parent bounds what is in flight itself
    publisher = MqttPublisher(service_client(user=user, token=token, name=name, max_inflight=0))
    replies_lock = threading.Lock()

    def reply(message: tuple[int, bool]) -> None:
        with replies_lock, contextlib.suppress(OSError):
            replies.send(message)

    publisher.start(*address, wait_s=None)

    def report_connected() -> None:
        while not publisher.connected:
            time.sleep(0.02)
        reply((_CONNECTED, True))

    threading.Thread(target=report_connected, name="connected", daemon=True).start()
    waiting: list[tuple[int, Confirmation]] = []
    ready = threading.Condition()

    def confirm() -> None:
        while True:
            with ready:
                while not waiting:
                    ready.wait()
                batch, confirmation = waiting.pop(0)
            reply((batch, confirmation.wait(BATCH_TIMEOUT_S)))

    # a daemon: at stop the parent has already waited for (or given up on) every batch
    threading.Thread(target=confirm, name="confirm", daemon=True).start()
    try:
        while True:
            try:
                request: Any = requests.recv()
            except (EOFError, OSError):
                break
            if request is None:
                break
            batch, items = request
            # a child started for this batch (the last one died) may not be connected yet:
            # give it a moment rather than fail the batch
            deadline = time.monotonic() + CONNECT_WAIT_S
            while not publisher.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            confirmation = publisher.publish_tracked([Outbound(t, p, Kind.MESSAGE) for t, p in items])
            with ready:
                waiting.append((batch, confirmation))
                ready.notify()
    finally:
        publisher.stop()
