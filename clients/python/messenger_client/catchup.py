"""The merge of live and caught-up messages, by server id.

Messages reach a device two ways: live, as they are stored, and from catch-ups (a ``sync`` this
client sends on every connect, and the server's own push when a device of the user comes online).
The two interleave and repeat each other, and the broker may redeliver. :class:`CatchUp` makes
one ordered stream of them:

* each server id is yielded once: ids seen are remembered (the most recent ``window`` of them;
  anything at or below the oldest one forgotten counts as seen, as does anything at or below the
  ``last_id`` the application resumed from);
* during a catch-up, messages are held back and released in id order when it ends, so that a
  live message stored after the gap does not overtake the ones that fill it;
* the next catch-up starts after the highest id known to be covered: while one is under way that
  is where it started (so a connection lost in the middle loses nothing); when it ends, the highest
  id it or the live stream brought; while live, every new message moves it.

The class is pure bookkeeping (no I/O, no clock) so that it can be tested exhaustively.
"""

from __future__ import annotations

import heapq

from .events import Message


class CatchUp:
    def __init__(self, last_id: int | None = None, window: int = 10_000) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._window = window
        #: every id at or below this counts as seen
        self._floor = last_id or 0
        self._seen: set[int] = set()
        self._heap: list[int] = []  # the ids of _seen, smallest first, for eviction
        self._resume = last_id
        self._buffer: dict[int, Message] = {}
        self.active = False
        self._gap = False  # a catch-up was given up on: the resume point must not move
        #: messages dropped as already seen (repeats of the broker or of catch-ups)
        self.duplicates = 0

    @property
    def resume_after(self) -> int | None:
        """The ``after`` of the next catch-up: every message up to it has been seen. None before
        anything was (the first catch-up then asks for the unread messages)."""
        return self._resume

    def begin(self) -> int | None:
        """A catch-up starts (a connection is up); returns the ``after`` to send with ``sync``.
        Messages held from an unfinished earlier catch-up stay held."""
        self.active = True
        return self._resume

    def offer(self, message: Message) -> list[Message]:
        """A message arrived; returns what to yield now (nothing for a repeat, or while held)."""
        if message.id <= self._floor or message.id in self._seen:
            self.duplicates += 1
            return []
        self._remember(message.id)
        if self.active:
            self._buffer[message.id] = message
            return []
        if not self._gap:
            self._resume = max(self._resume or 0, message.id)
        return [message]

    def synced(self, last_id: int | None, more: bool) -> tuple[list[Message], int | None]:
        """A ``synced`` event. Returns the messages to yield now and, when the server said more
        remain, the ``after`` of the next page (None when the catch-up is complete).

        A ``synced`` outside a catch-up (another device's, or the server's push when presence
        went online) changes nothing.
        """
        if not self.active:
            return [], None
        if more and last_id is not None:
            # the next page starts after the last message pushed, if it arrived (this synced may
            # overtake it; then the same page is asked again, and its repeats dropped). Not after
            # the highest message held: live ones are held too, beyond the pages still to come.
            self._resume = max(self._resume or 0, self._covered(last_id)) or None
            return [], self._resume
        return self.finish(last_id), None

    def _covered(self, last_id: int | None) -> int:
        """``last_id`` when its message was seen here, else 0."""
        if last_id is not None and (last_id <= self._floor or last_id in self._seen):
            return last_id
        return 0

    def finish(self, last_id: int | None = None, *, complete: bool = True) -> list[Message]:
        """End the catch-up: returns the held messages, in id order. ``last_id`` is the one of the
        final ``synced``. ``complete=False`` gives up on a catch-up that never answered: the
        messages are released, but the resume point stays where it was, and live messages do
        not move it, until a later catch-up completes."""
        held = [self._buffer[i] for i in sorted(self._buffer)]
        self._buffer.clear()
        self.active = False
        self._gap = not complete
        if complete:
            top = max([self._resume or 0, self._covered(last_id), *(m.id for m in held)])
            self._resume = top or self._resume
        return held

    def _remember(self, message_id: int) -> None:
        self._seen.add(message_id)
        heapq.heappush(self._heap, message_id)
        while len(self._heap) > self._window:
            oldest = heapq.heappop(self._heap)
            self._seen.discard(oldest)
            self._floor = max(self._floor, oldest)
