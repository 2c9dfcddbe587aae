"""Bearer tokens: fetched from the application's ``get_token`` and refreshed before they expire.

The broker checks a token at CONNECT only, so a live connection outlives its token; what needs a
fresh one is the next CONNECT (a reconnect) and every REST call. :class:`TokenSource` keeps the
current token, refreshes it ahead of its ``exp`` in the background, and fetches a new one at once
when the server refused the current one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable

from .backoff import Backoff

log = logging.getLogger(__name__)

#: The shortest time a token is used before it is refreshed on a timer.
MIN_REFRESH_S = 0.5
#: The application's token provider: an async callable returning a bearer token (a JWT).
TokenProvider = Callable[[], Awaitable[str]]


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (seconds since the epoch), read without verifying anything:
    only the server can verify a token, and the client uses this to schedule a refresh. None when
    the token is not a JWT or has no numeric ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    return float(exp)


class TokenSource:
    """The current token of one user.

    A token whose lifetime (from when it was fetched to its ``exp``) is ``L`` is refreshed
    ``min(refresh_margin, L / 2)`` seconds before it expires: an hour-long token a minute ahead,
    a two-second token after one second. A token without ``exp`` is never refreshed on a timer.
    """

    def __init__(
        self,
        get_token: TokenProvider,
        *,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        self._get_token = get_token
        self._margin = refresh_margin
        self._clock = clock
        self._backoff = backoff or Backoff(base=1.0, cap=30.0)
        self._token: str | None = None
        self._refresh_at: float | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self.fetches = 0  # how many times get_token was called

    @property
    def refresh_at(self) -> float | None:
        """When (epoch seconds) the current token is due for a refresh; None: never."""
        return self._refresh_at

    async def current(self) -> str:
        """The token to use now: the cached one, unless there is none or it is due for a refresh."""
        token = self._token
        if token is not None and not self._due():
            return token
        async with self._lock:
            if self._token is None or self._due():
                await self._fetch()
            assert self._token is not None  # noqa: S101 - _fetch sets it or raises
            return self._token

    async def refresh(self, rejected: str | None = None) -> str:
        """A new token now (the server refused ``rejected``). Concurrent callers that saw the same
        rejected token share one fetch."""
        async with self._lock:
            if rejected is None or self._token == rejected or self._token is None:
                await self._fetch()
            assert self._token is not None  # noqa: S101
            return self._token

    def _due(self) -> bool:
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    async def _fetch(self) -> None:
        token = await self._get_token()
        if not isinstance(token, str) or not token:
            raise TypeError(f"get_token must return a non-empty str, got {type(token).__name__}")
        self.fetches += 1
        now = self._clock()
        expiry = token_expiry(token)
        self._token = token
        if expiry is None:
            self._refresh_at = None
        else:
            lifetime = max(expiry - now, 0.0)
            # never sooner than MIN_REFRESH_S: a provider handing out already-expiring tokens
            # must not be called in a loop
            self._refresh_at = max(expiry - min(self._margin, lifetime / 2), now + MIN_REFRESH_S)
        self._changed.set()

    async def keep_fresh(self) -> None:
        """Refresh the token whenever it is due, until cancelled. A failed refresh is retried with
        backoff; meanwhile the old token stays in use (a live connection does not need it)."""
        failures = 0
        while True:
            self._changed.clear()
            if self._refresh_at is None:
                await self._changed.wait()
                continue
            wait = self._refresh_at - self._clock()
            if wait > 0:
                # woken early if someone else refreshed (after a refusal): recompute
                try:
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
                    continue
                except TimeoutError:
                    pass
            try:
                async with self._lock:
                    if self._due():
                        await self._fetch()
                failures = 0
            except Exception as exc:  # the application's callable: any failure is retried
                delay = self._backoff.delay(failures)
                failures += 1
                log.warning("token refresh failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
