"""The handler's background work: mass-message fan-out and tip settlement, one thread each.

Neither runs on the thread that consumes commands, so a 100,000-member fan-out or a billing
service that takes seconds to answer never holds up 1:1 messages. Both find their work in the
database (queued mass messages, due tips), so any handler process can take over what another
left: a fan-out resumes from its committed cursor, a tip is charged again with the same
idempotency key. The command consumer wakes them when it queues something; otherwise they look
every ``poll_s``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from messenger import actions, tipping
from messenger.actions import Outbound
from messenger.child_publisher import ChildPublisher
from messenger.exceptions import ServiceUnavailable, StoreUnavailable
from messenger.fanout import FanoutRunner
from messenger.metrics import Metrics
from messenger.mqtt import Pending
from messenger.ratelimit import RateLimiter
from messenger.services import Services
from messenger.services.billing import Billing
from messenger.settings import HandlerSettings
from messenger.tipping import TipPolicy

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0

#: Hands messages to the broker; the confirmation waits until the broker has taken them.
Publish = Callable[[list[Outbound]], Pending]

#: How long a page's publishes may take to be acknowledged by the broker.
PUBLISH_TIMEOUT_S = 30.0


class BackgroundWork:
    """Runs a :class:`FanoutRunner` and the tip settler until :meth:`stop`.

    ``publish`` hands a chunk's messages to the broker. A fan-out prepares its next page while
    the broker takes the previous one, and publishes it only once the broker has acknowledged
    that one: at most one page is in flight ahead of 1:1 traffic. Messages the broker did not
    take in time are stored anyway, and recipients get them on their next sync.
    """

    def __init__(
        self,
        runner: FanoutRunner,
        sessions: sessionmaker[Session],
        billing: Billing,
        publish: Publish,
        *,
        tip_policy: TipPolicy,
        poll_s: float = 0.5,
        metrics: Metrics | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._runner = runner
        self._sessions = sessions
        self._billing = billing
        self._publish = publish
        self._policy = tip_policy
        self._poll_s = poll_s
        self._metrics = metrics
        self._limiter = limiter  # the payers' charge_declined buckets
        self._in_flight: Pending | None = None  # the fan-out page the broker is taking
        self._stopping = threading.Event()
        self._fanout_wake = threading.Event()
        self._tips_wake = threading.Event()
        self._threads = [
            threading.Thread(target=self._run_fanout, name="fanout", daemon=True),
            threading.Thread(target=self._run_tips, name="tips", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._fanout_wake.set()
        self._tips_wake.set()

    def stop(self, join_timeout: float = 30.0) -> None:
        """Finish the chunk or charge in hand, hand a fan-out in progress back, and stop."""
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=join_timeout)

    # fan-out thread

    def _run_fanout(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                mass_message_id = self._runner.claim()
            except StoreUnavailable as exc:
                self._error("database")
                logger.warning("fan-out: database unavailable (%s); retrying in %.1fs", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except Exception:
                self._error("fanout")
                logger.exception("fan-out: could not look for work")
                self._stopping.wait(MAX_BACKOFF_S)
                continue
            backoff = 0.1
            if mass_message_id is None:
                self._fanout_wake.wait(self._poll_s)
                self._fanout_wake.clear()
                continue
            self._fan_out(mass_message_id)

    def _fan_out(self, mass_message_id: int) -> None:
        logger.info("fan-out of mass message %d: started by %s", mass_message_id, self._runner.owner)
        try:
            self._fan_out_pages(mass_message_id)
        finally:
            self._confirm()

    def _fan_out_pages(self, mass_message_id: int) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                chunk = self._runner.step(mass_message_id)
            except (StoreUnavailable, ServiceUnavailable) as exc:
                # nothing moved; if this outlasts the lease another worker may take over, and
                # the next step here then sees it is no longer ours
                self._error("database" if isinstance(exc, StoreUnavailable) else "list_service")
                logger.warning("fan-out %d paused (%s); retrying in %.1fs", mass_message_id, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except Exception as exc:
                # not an outage: retrying would fail the same way, so it ends here, as failed
                self._error("fanout")
                logger.exception("fan-out %d failed on a chunk; marking it failed", mass_message_id)
                try:
                    self._send(self._runner.fail(mass_message_id, f"{type(exc).__name__}: {exc}"))
                    return
                except Exception:
                    logger.warning("fan-out %d: could not mark it failed", mass_message_id, exc_info=True)
                break
            backoff = 0.1
            self._confirm()  # the previous page, published while this one was prepared
            self._in_flight = self._send_tracked(chunk.out)
            if chunk.done:
                return
        try:
            self._runner.release(mass_message_id)  # another handler resumes it at once
        except Exception:
            logger.warning("fan-out %d: could not release its lease; it expires by itself", mass_message_id)

    # tips thread

    def _run_tips(self) -> None:
        while not self._stopping.is_set():
            try:
                due = tipping.due_tips(self._sessions, self._runner.owner)
            except Exception:
                self._error("tips")
                logger.warning("tips: could not look for due tips", exc_info=True)
                due = []
                self._stopping.wait(MAX_BACKOFF_S)
            for tip_id in due:
                try:
                    _, out = tipping.settle(
                        self._sessions, self._billing, tip_id, self._policy, self._limiter
                    )
                except Exception:
                    # still pending: tried again, same key, once its lease has run out
                    self._error("tips")
                    logger.warning("tips: settling tip %d failed; it will be retried", tip_id, exc_info=True)
                    continue
                if out:
                    self._send(out)
            if not due:
                self._tips_wake.wait(self._poll_s)
                self._tips_wake.clear()

    def _send(self, out: list[Outbound]) -> None:
        if out:
            self._in_flight_wait(self._send_tracked(out))

    def _send_tracked(self, out: list[Outbound]) -> Pending | None:
        if not out:
            return None
        actions.count(self._metrics, out, via="mqtt")
        if self._metrics is not None:
            self._metrics.mqtt_published.labels("background").inc(len(out))
        return self._publish(out)

    def _error(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.errors.labels("background", kind).inc()

    def _confirm(self) -> None:
        confirmation, self._in_flight = self._in_flight, None
        self._in_flight_wait(confirmation)

    @staticmethod
    def _in_flight_wait(confirmation: Pending | None) -> None:
        if confirmation is not None and not confirmation.wait(PUBLISH_TIMEOUT_S):
            logger.warning(
                "the broker did not take %d publishes in time; stored, delivered on sync", len(confirmation)
            )


class Background:
    """A :class:`BackgroundWork` with the publisher it sends through, as a handler, a
    ``messenger worker`` and ``messenger serve`` each run it."""

    def __init__(self, work: BackgroundWork, publisher: ChildPublisher) -> None:
        self.work, self.publisher = work, publisher

    @classmethod
    def create(
        cls,
        settings: HandlerSettings,
        token: str,
        name: str,
        sessions: sessionmaker[Session],
        services: Services,
        metrics: Metrics,
        limiter: RateLimiter | None = None,
    ) -> Background:
        """Fan-out and tip settlement for the process ``name`` (the owner of its leases); their
        results go out on a connection of their own (``{name}-background``), beside any
        command stream, from a child process: publishing a fan-out's copies costs paho twice
        what storing them costs, and there it does not take the GIL from the fan-out."""
        publisher = ChildPublisher(user=settings.service_user, token=token, name=f"{name}-background")
        work = BackgroundWork(
            FanoutRunner(
                sessions,
                services.lists,
                owner=name,
                page_size=settings.fanout_page_size,
                lease_s=settings.fanout_lease_s,
            ),
            sessions,
            services.billing,
            publisher.publish_tracked,
            tip_policy=TipPolicy.of(settings),
            metrics=metrics,
            limiter=limiter,
        )
        return cls(work, publisher)

    def wake(self) -> None:
        self.work.wake()

    def start(self, host: str, port: int, *, wait_s: float | None = None) -> None:
        """Start the publisher (waiting ``wait_s`` for it to connect, or not at all) and the threads."""
        self.publisher.start(host, port, wait_s=wait_s)
        self.work.start()

    def stop(self) -> None:
        self.work.stop()
        self.publisher.stop()
