"""Operations: liveness, readiness and Prometheus metrics (no authentication: keep them internal)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Deps
from api.schemas import Health, Readiness
from messenger.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])
#: ``/metrics`` apart, so that it can stay off the public listener (MESSENGER_INTERNAL_PORT)
metrics_router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(deps: Deps) -> JSONResponse:
    """The database, the broker and the presence store answer."""
    checks = {"database": "ok", "broker": "ok", "presence": "ok"}
    try:
        with deps.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready", and says why
        checks["database"] = f"error: {type(exc).__name__}"
    if not deps.publisher.connected:
        checks["broker"] = "error: not connected"
    if not deps.presence.ping():
        checks["presence"] = "error: no answer"
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(deps: Deps) -> Response:
    """Messages stored, delivered and refused, handler batches, connected clients, HTTP requests."""
    return Response(deps.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
