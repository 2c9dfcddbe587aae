"""What the client library's tests share: tokens, clients on a stack, and an event recorder.

The tests are synchronous functions that run one coroutine each (``run``); the stack under test
runs in its own thread (``tests/conftest.py``) or in its own processes (the Mosquitto topology).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from messenger_client import Backoff, CaughtUp, Client, Event, Message

from acl.principal import Role
from tests.conftest import token

T = TypeVar("T")
E = TypeVar("E")
#: How long a test waits for something that should happen (generous: CI machines are slow).
TIMEOUT = 15.0


class Target(Protocol):
    """A running stack: the embedded ``messenger serve`` or the Mosquitto topology."""

    @property
    def mqtt_port(self) -> int: ...

    @property
    def api_url(self) -> str: ...


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test scenario in a fresh event loop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


class Tokens:
    """A ``get_token`` for one user that counts its calls; ``ttl`` makes short-lived tokens."""

    def __init__(self, user: str, role: Role = Role.MEMBER, ttl: timedelta = timedelta(hours=1)) -> None:
        self.user, self.role, self.ttl = user, role, ttl
        self.issued: list[str] = []

    async def __call__(self) -> str:
        issued = token(self.user, self.role, ttl=self.ttl)
        self.issued.append(issued)
        return issued


class Recorder:
    """Everything ``client.events()`` yields, recorded by a task, with waits on it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._record())

    async def _record(self) -> None:
        async for event in self.client.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def messages(self) -> list[Message]:
        return self.of(Message)

    async def until(self, condition: Callable[[], T], what: str, within: float = TIMEOUT) -> T:
        """Wait until ``condition()`` is truthy (checked on every event); return its value."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(
                f"{self.client.user}: no {what} within {within}s; got {self.events[-15:]}"
            ) from None
        return condition()

    async def expect(self, kind: type[E], what: str = "", within: float = TIMEOUT, **fields: Any) -> E:
        """The first recorded event of ``kind`` whose attributes equal ``fields``."""

        def found() -> E | None:
            for event in self.events:
                if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                    return event
            return None

        result = await self.until(found, what or f"{kind.__name__} {fields}", within)
        assert result is not None
        return result

    async def stop(self) -> None:
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


def client_for(
    target: Target, user: str, get_token: Callable[[], Awaitable[str]] | None = None, **options: Any
) -> Client:
    """A client of ``user`` on ``target``, quick to reconnect (tests cut connections)."""
    options.setdefault("port", target.mqtt_port)
    options.setdefault("backoff", Backoff(base=0.05, cap=0.5))
    return Client(user, get_token or Tokens(user), host="127.0.0.1", api_url=target.api_url, **options)


@asynccontextmanager
async def connected(
    target: Target, user: str, get_token: Callable[[], Awaitable[str]] | None = None, **options: Any
) -> AsyncIterator[tuple[Client, Recorder]]:
    """A started client and the recorder of its events; closed on the way out."""
    async with client_for(target, user, get_token, **options) as client:
        recorder = Recorder(client)
        try:
            yield client, recorder
        finally:
            await client.close()
            await recorder.stop()


async def caught_up(recorder: Recorder, connections: int = 1) -> None:
    """Wait until the catch-up of the client's ``connections``-th connection is done."""
    await recorder.until(lambda: len(recorder.of(CaughtUp)) >= connections, f"catch-up #{connections}")


async def eventually(condition: Callable[[], T], what: str, within: float = TIMEOUT) -> T:
    """Poll ``condition`` (for state no event announces) until it is truthy; return its value."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if value := condition():
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {what} within {within}s")
        await asyncio.sleep(0.02)


async def polled(
    fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, within: float = TIMEOUT
) -> T:
    """Call ``fetch`` until its answer is ``ok`` (for state only a REST call shows); return it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if ok(answer := await fetch()):
            return answer
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {what} within {within}s: last {answer}")
        await asyncio.sleep(0.05)
