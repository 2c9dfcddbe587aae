"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.deps import ApiDeps
from api.routes import blocks, messages, presence
from api.schemas import ErrorOut
from messenger import __version__


def create_app(deps: ApiDeps) -> FastAPI:
    """Build the app around clients created at start-up (no module-level state)."""
    app = FastAPI(
        title="Messenger",
        version=__version__,
        description="REST API of Messenger: history, blocks and presence. MQTT carries the real-time side.",
        responses={
            401: {"model": ErrorOut, "description": "Missing or invalid bearer token"},
            422: {"model": ErrorOut, "description": "Invalid request"},
        },
    )
    app.state.deps = deps
    errors.install(app)
    app.include_router(messages.router)
    app.include_router(blocks.router)
    app.include_router(presence.router)
    return app
