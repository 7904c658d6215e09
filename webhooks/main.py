"""The FastAPI application factory: forms, tracking, unsubscribe, health, dev mailbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from temporalio.client import Client

from campaigns.workspace import Workspace, load_workspace
from contacts.db import create_db_engine
from drip import __version__
from drip.settings import Settings, get_settings
from emails import Renderer
from webhooks.journeys import JourneyGateway
from webhooks.problems import install_problem_handlers
from webhooks.routes import forms, tracking, unsubscribe, view

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None,
    workspace: Workspace | None = None,
    *,
    engine: Engine | None = None,
    temporal: Client | None = None,
) -> FastAPI:
    """Build the app. Tests pass their own engine and Temporal client; ``drip api`` passes none."""
    settings = settings or get_settings()
    workspace = workspace or load_workspace(settings.workspace)
    owns_engine = engine is None
    db = engine or create_db_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_engine:
            db.dispose()

    app = FastAPI(
        title="drip",
        version=__version__,
        summary="Forms, tracking, unsubscribe and events for drip campaigns.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.workspace = workspace
    app.state.engine = db
    # one renderer for the app (it reads the secret and caches compiled templates)
    app.state.renderer = Renderer(workspace, settings)
    app.state.gateway = JourneyGateway(
        settings=settings,
        engine=db,
        client=temporal,
        default_timezone=workspace.config.timezone,
    )
    install_problem_handlers(app)
    app.include_router(forms.router)
    app.include_router(tracking.router)
    app.include_router(unsubscribe.router)
    app.include_router(view.router)
    if settings.env == "dev":
        from webhooks.routes import mailbox

        app.include_router(mailbox.router)

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    return app
