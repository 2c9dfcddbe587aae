"""JSON errors with a stable ``code``: the only place HTTP error answers are built."""

from __future__ import annotations

import math
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from messenger.exceptions import Rejected, StoreUnavailable

#: HTTP status of each refusal code of the core (:class:`messenger.exceptions.Rejected`).
STATUS_BY_CODE: Final = {
    "invalid_recipient": 400,
    "invalid_block": 400,
    "unknown_sender": 403,
    "forbidden": 403,
    "unknown_recipient": 404,
    "unknown_user": 404,
    "idempotency_conflict": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "not_a_creator": 403,
    "list_not_owned": 403,
    "invalid_tip": 400,
    "tip_refused": 403,
    "tip_failed": 402,
    "service_unavailable": 503,
}


class ApiError(Exception):
    """An error answer: HTTP status, stable code, human detail, optional extra fields."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra


#: What stays as it is in a path or query put into ``next=`` (RFC 3986 sub-delims, ``:``, ``@``).
_PATH_SAFE: Final = "/:@!$&'()*+,;="
_QUERY_SAFE: Final = _PATH_SAFE + "?%"


def next_url(public_url: str | None, path: str, query: str) -> str:
    """Where the login page sends a browser back to: the requested path and query on the
    configured ``public_url``, or the path and query alone when there is none.

    Never built from the request's Host or X-Forwarded-Host header, which a client chooses. The
    path (decoded, as ASGI gives it) is percent-encoded again, backslashes included, and starts
    with exactly one ``/``, so that neither ``//host`` nor ``/\\host`` can name another origin.
    """
    back = "/" + quote(path, safe=_PATH_SAFE).lstrip("/")
    if query:
        back += "?" + quote(query, safe=_QUERY_SAFE)
    return public_url.rstrip("/") + back if public_url else back


class LoginRedirect(Exception):
    """A browser without a token asked for a page: send it to the login page, then back."""

    def __init__(self, login_url: str, back_to: str) -> None:
        super().__init__(login_url)
        parts = urlsplit(login_url)
        query = "&".join(q for q in (parts.query, urlencode({"next": back_to})) if q)
        self.location = urlunsplit(parts._replace(query=query))


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail, **extra}


def rejected(exc: Rejected) -> ApiError:
    """The HTTP answer to a refusal of the core."""
    headers = None
    retry_after = exc.extra.get("retry_after")
    if isinstance(retry_after, int | float):
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return ApiError(STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.detail, headers=headers, **exc.extra)


def _printable(value: object) -> object:
    """``value`` as it can go into a UTF-8 answer: a string naming a member of the request (a key
    a client made up) with a lone surrogate in it gets a ``\\udxxx`` escape instead."""
    if isinstance(value, int):
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.detail, **exc.extra), exc.status, headers=exc.headers)

    @app.exception_handler(Rejected)
    async def refused(request: Request, exc: Rejected) -> JSONResponse:
        return await api_error(request, rejected(exc))

    @app.exception_handler(LoginRedirect)
    async def login(_request: Request, exc: LoginRedirect) -> RedirectResponse:
        return RedirectResponse(exc.location, status_code=303)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [_printable(p) for p in e.get("loc", ())], "msg": _printable(e.get("msg", ""))}
            for e in exc.errors()[:10]
        ]
        return JSONResponse(error_body("invalid_request", "the request is not valid", errors=problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (e.g. not UTF-8): like bad JSON
            problems = [{"loc": ["body"], "msg": str(exc.detail)}]
            return JSONResponse(
                error_body("invalid_request", "the request is not valid", errors=problems), 422
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(error_body("unavailable", exc.detail), 503, headers={"Retry-After": "5"})
