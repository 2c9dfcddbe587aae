"""A real HTTP server playing the two external services: the list service and billing.

Tests never patch the product's clients: they point ``MESSENGER_LISTS_URL`` and
``MESSENGER_BILLING_URL`` (or an ``HttpService``) at :class:`FakeServices`, which answers the
contract the clients assume (``messenger/services/lists.py``, ``messenger/services/billing.py``)
from in-memory state, over real sockets on ``127.0.0.1`` and an ephemeral port::

    from tests.fakes import CHARGES, FakeServices

    with FakeServices() as fake:                      # or in a fixture: yield it inside the with
        fake.lists["l1"] = ("creator-1", ["m1", "m2", "m3"])
        fake.balances[("m1", "USD")] = 1000
        fake.script(CHARGES, ["500", "slow", "ok"])   # the next three POST /charges
        settings = ProductSettings(lists_url=fake.url, billing_url=fake.url, services_timeout_s=0.2)
        ...
        assert [r.status for r in fake.requests_for(CHARGES)] == [500, 200, 200]
        assert fake.balances[("m1", "USD")] == 900   # charged once, whatever the retries

Routes (one server plays both services; give the same ``fake.url`` to both clients):

``GET /lists/{id}`` (:data:`LIST`)
    ``{"owner", "member_count"}`` for ``fake.lists[id] = (owner, [member ids])``; 404 for others.
``GET /lists/{id}/members?after=&limit=`` (:data:`MEMBERS`)
    ``{"members": [...], "next": cursor | null}``, members in the stored order, at most
    ``min(limit, fake.max_page)`` per page. Cursors are opaque (not member ids), so a client must
    hand back what it was given; an unknown cursor is a 400. ``next`` is null on the last page.
``POST /charges`` (:data:`CHARGES`)
    JSON ``{payer, payee, amount, currency, idempotency_key, description}`` and an
    ``Idempotency-Key`` header (the header wins; a missing key or one differing from the body
    is a 400). Like a real payment service it is idempotent by key: the first request decides,
    every repeat with the same key gets the very same answer and moves no money again; a repeat
    with another payer, payee, amount or currency is a 422 ``idempotency_conflict``.
    Outcomes: ``fake.declines[payer] = reason`` -> 200 ``{"status": "failed", "reason"}``;
    balance ``fake.balances[(payer, currency)]`` (missing: 0) below the amount -> 402
    ``{"status": "failed", "reason": "insufficient_funds"}``; otherwise the amount moves from
    the payer's balance to the payee's -> 200 ``{"status": "succeeded", "id": "ch_..."}``.
    ``fake.charges[key]`` holds each key's :class:`FakeCharge`; ``fake.succeeded()`` the
    charges that moved money.

Scripted behaviour, per route, consumed one per request (then ``then``, default ``"ok"``)::

    fake.script(CHARGES, ["503", "503", "ok"])      # two 503s, then the real answer
    fake.script(LIST, ["slow"], then="500")         # every later GET /lists/{id} is a 500

``"ok"``       answer from the in-memory state (above); ``fake.answer(request)`` gives the same
               answer, for a callable that waits or counts first.
``"slow"``     do the work (a charge is made!), then wait ``fake.slow_s`` (default 1 s, longer
               than the clients' timeouts in tests) before answering: the client has given up
               by then, as when a real service is slow, so its retry meets the idempotency key.
``"NNN"``      a status code (e.g. ``"500"``, ``"503"``, ``"429"``, ``"402"``, ``"404"``, ``"409"``):
               answer it with ``{"error": "scripted NNN"}`` and do nothing else. For ``"402"`` the
               body is ``{"status": "failed", "reason": "insufficient_funds"}``, as billing sends.
``"garbage"``  200 with an HTML body that is not JSON.
``"drop"``     close the connection without answering (a transport error for the client).
callable       ``fn(request) -> (status, body)``: body is sent as JSON unless it is ``bytes``.

Every request is recorded in ``fake.requests`` (a :class:`Recorded`: method, path, query,
lower-cased headers, parsed JSON body, route, behaviour used and the status answered), in
arrival order, whatever the behaviour; ``fake.requests_for(route)`` filters by route. Tests may
set ``lists``/``balances``/``declines`` directly while no request is in flight; otherwise hold
``fake.lock``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["CHARGES", "LIST", "MEMBERS", "FakeCharge", "FakeServices", "Recorded"]

LIST = "GET /lists/{id}"
MEMBERS = "GET /lists/{id}/members"
CHARGES = "POST /charges"
ROUTES = (LIST, MEMBERS, CHARGES)

Behaviour = str | Callable[["Recorded"], tuple[int, Any]]


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # without the query string, still percent-encoded
    query: dict[str, str]  # last value of each parameter
    headers: dict[str, str]  # names lower-cased
    json: Any  # the parsed body; None without one (or when it was not JSON)
    route: str | None  # LIST, MEMBERS, CHARGES or None (no such route: 404)
    behaviour: str = "ok"  # what answered: "ok", "slow", "500", ... ("callable" for a function)
    status: int | None = None  # what was (or, for "slow", will be) answered; None for "drop"
    list_id: str | None = None  # for LIST and MEMBERS, decoded


@dataclass
class FakeCharge:
    """What the fake billing did for one idempotency key (the first request's outcome)."""

    key: str
    payer: str
    payee: str
    amount: int
    currency: str
    description: str
    status: str  # "succeeded" or "failed"
    reason: str | None
    id: str
    answer: tuple[int, dict[str, Any]] = field(repr=False)  # replayed to every repeat


class FakeServices:
    """The list service and the billing service on one ``ThreadingHTTPServer``.

    Start with ``with FakeServices() as fake:`` (or :meth:`start`/:meth:`stop`); ``fake.url``
    is the base URL for both clients. See the module docstring for routes and scripting.
    """

    def __init__(self, *, slow_s: float = 1.0, max_page: int = 1000) -> None:
        self.slow_s = slow_s
        self.max_page = max_page
        self.lock = threading.RLock()
        self.lists: dict[str, tuple[str, list[str]]] = {}
        self.balances: dict[tuple[str, str], int] = {}
        self.declines: dict[str, str] = {}  # payer -> reason of a 200 {"status": "failed"}
        self.charges: dict[str, FakeCharge] = {}
        self.requests: list[Recorded] = []
        self._scripts: dict[str, list[Behaviour]] = {}
        self._then: dict[str, Behaviour] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeServices is not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeServices:
        fake = self

        class Handler(_Handler):
            services = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-services"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts every "slow" wait short
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting and inspection ---

    def script(self, route: str, behaviours: Sequence[Behaviour], *, then: Behaviour = "ok") -> None:
        """The next requests to ``route`` get ``behaviours`` in order, every later one ``then``.
        Replaces what was scripted for the route before."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; one of {ROUTES}")
        with self.lock:
            self._scripts[route] = list(behaviours)
            self._then[route] = then

    def requests_for(self, route: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.route == route]

    def succeeded(self) -> list[FakeCharge]:
        """The charges that moved money (one per idempotency key)."""
        with self.lock:
            return [c for c in self.charges.values() if c.status == "succeeded"]

    def _next_behaviour(self, route: str) -> Behaviour:
        with self.lock:
            queue = self._scripts.get(route)
            if queue:
                return queue.pop(0)
            return self._then.get(route, "ok")

    # --- the services ---

    def _list(self, list_id: str) -> tuple[int, Any]:
        with self.lock:
            found = self.lists.get(list_id)
            if found is None:
                return 404, {"error": "no such list"}
            owner, members = found
            return 200, {"owner": owner, "member_count": len(members)}

    def _members(self, list_id: str, query: dict[str, str]) -> tuple[int, Any]:
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            return 400, {"error": "limit must be an integer"}
        if limit < 1:
            return 400, {"error": "limit must be positive"}
        with self.lock:
            found = self.lists.get(list_id)
            if found is None:
                return 404, {"error": "no such list"}
            members = list(found[1])
        start: int | None = 0
        if "after" in query:
            start = _decode_cursor(query["after"], list_id)
        if start is None:
            return 400, {"error": "unknown cursor"}
        end = start + min(limit, self.max_page)
        page = members[start:end]
        return 200, {"members": page, "next": _cursor(list_id, end) if end < len(members) else None}

    def _charge(self, request: Recorded) -> tuple[int, Any]:
        body = request.json
        if not isinstance(body, dict):
            return 400, {"error": "a JSON object is required"}
        key = request.headers.get("idempotency-key")
        if not key:
            return 400, {"error": "Idempotency-Key header required"}
        if body.get("idempotency_key") not in (None, key):
            return 400, {"error": "Idempotency-Key header and body differ"}
        try:
            payer, payee, currency = (str(body[k]) for k in ("payer", "payee", "currency"))
            amount = body["amount"]
        except KeyError as exc:
            return 400, {"error": f"missing {exc.args[0]}"}
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return 400, {"error": "amount must be a positive integer"}
        with self.lock:
            done = self.charges.get(key)
            if done is not None:
                if (done.payer, done.payee, done.amount, done.currency) != (payer, payee, amount, currency):
                    return 422, {"status": "failed", "reason": "idempotency_conflict"}
                return done.answer
            charge_id = f"ch_{uuid.uuid4().hex}"
            status, reason = "succeeded", None
            if payer in self.declines:
                status, reason = "failed", self.declines[payer]
                answer: tuple[int, dict[str, Any]] = (
                    200,
                    {"status": status, "reason": reason, "id": charge_id},
                )
            elif self.balances.get((payer, currency), 0) < amount:
                status, reason = "failed", "insufficient_funds"
                answer = (402, {"status": status, "reason": reason, "id": charge_id})
            else:
                self.balances[(payer, currency)] -= amount
                self.balances[(payee, currency)] = self.balances.get((payee, currency), 0) + amount
                answer = (200, {"status": status, "id": charge_id})
            self.charges[key] = FakeCharge(
                key, payer, payee, amount, currency, str(body.get("description", "")),
                status, reason, charge_id, answer,
            )  # fmt: skip
            return answer

    def answer(self, request: Recorded) -> tuple[int, Any]:
        """What ``"ok"`` answers to ``request``, from the in-memory state: for a scripted callable
        that does something first (waits for the test, counts) and then answers normally."""
        if request.route == LIST:
            assert request.list_id is not None
            return self._list(request.list_id)
        if request.route == MEMBERS:
            assert request.list_id is not None
            return self._members(request.list_id, request.query)
        if request.route == CHARGES:
            return self._charge(request)
        return 404, {"error": "no such route"}

    _answer = answer  # its first name, still used by some tests


# --- HTTP plumbing ---


def _cursor(list_id: str, position: int) -> str:
    return f"c{position}.{uuid.uuid5(uuid.NAMESPACE_URL, f'{list_id}:{position}').hex[:8]}"


def _decode_cursor(cursor: str, list_id: str) -> int | None:
    head, _, _ = cursor.partition(".")
    if not head.startswith("c") or not head[1:].isdigit():
        return None
    position = int(head[1:])
    return position if _cursor(list_id, position) == cursor else None


def _route(method: str, path: str) -> tuple[str | None, str | None]:
    parts = path.split("/")
    if method == "GET" and len(parts) == 3 and parts[1] == "lists" and parts[2]:
        return LIST, unquote(parts[2])
    if method == "GET" and len(parts) == 4 and parts[1] == "lists" and parts[2] and parts[3] == "members":
        return MEMBERS, unquote(parts[2])
    if method == "POST" and path == "/charges":
        return CHARGES, None
    return None, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up (timeout) closes its end: not worth a traceback on stderr
        pass


class _Handler(BaseHTTPRequestHandler):
    services: FakeServices
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's pool expects of a real service

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.services
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        route, list_id = _route(self.command, split.path)
        request = Recorded(
            method=self.command,
            path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            json=body,
            route=route,
            list_id=list_id,
        )
        with fake.lock:
            fake.requests.append(request)
        behaviour: Behaviour = fake._next_behaviour(route) if route else "ok"
        request.behaviour = behaviour if isinstance(behaviour, str) else "callable"

        payload: Any
        if callable(behaviour):
            status, payload = behaviour(request)
        elif behaviour == "drop":
            self.close_connection = True
            return
        elif behaviour == "garbage":
            request.status = 200
            self._send(200, b"<html><body>502 Bad Gateway (not really)</body>", "text/html")
            return
        elif behaviour.isdigit():
            status = int(behaviour)
            payload = (
                {"status": "failed", "reason": "insufficient_funds"}
                if status == 402
                else {"error": f"scripted {status}"}
            )
        elif behaviour in ("ok", "slow"):
            status, payload = fake.answer(request)
            if behaviour == "slow":
                request.status = status  # decided now; sent (too late) after the wait
                fake._stopping.wait(fake.slow_s)
        else:
            raise ValueError(f"unknown scripted behaviour {behaviour!r}")
        request.status = status
        if isinstance(payload, bytes):
            self._send(status, payload, "application/octet-stream")
        else:
            self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client timed out and went away
            self.close_connection = True
