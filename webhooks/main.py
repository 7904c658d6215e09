"""The FastAPI application factory: forms, tracking, unsubscribe, health, dev mailbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from temporalio.client import Client

from campaigns.workspace import Workspace, load_workspace
from contacts.db import create_db_engine
from drip.settings import Settings, __version__, get_settings
from emails import Renderer
from webhooks import admin, dashboard
from webhooks._ratelimit import RateLimiter
from webhooks.esp import mailgun, postmark, sendgrid, ses
from webhooks.journeys import JourneyGateway
from webhooks.metrics import ApiMetrics
from webhooks.middleware import (
    TRANSACTIONAL_PATHS,
    ClientAddressMiddleware,
    OperationsMiddleware,
    TrustedProxies,
    transactional_body_limit,
)
from webhooks.openapi import document_problems
from webhooks.problems import install_problem_handlers
from webhooks.routes import ack, forms, operations, segment, tracking, unsubscribe, view

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
        await tracking.shutdown(app)  # store and consume the buffered tracking hits first
        app.state.metrics.close()  # a stopped worker leaves drip_api_processes
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
    # the form and sign-in limits, counted in the database: every API process shares them
    app.state.rate_limiter = RateLimiter(db)
    # one renderer for the app (it reads the secret and caches compiled templates)
    app.state.renderer = Renderer(workspace, settings)
    app.state.gateway = JourneyGateway(
        settings=settings,
        engine=db,
        client=temporal,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )
    install_problem_handlers(app)
    app.include_router(forms.router)
    app.include_router(tracking.router)
    tracking.install(app)  # the pixel and click paths as plain ASGI, ahead of the routing
    app.include_router(unsubscribe.router)
    app.include_router(view.router)
    # the acknowledge link of lead alerts to sales (a page; its button POSTs)
    app.include_router(ack.router)
    # the admin API under /api (API keys with scopes: `drip apikeys create`)
    app.include_router(admin.router)
    # the dashboard's pages under /dashboard (`drip users create`) and their assets under /static
    dashboard.install(app)
    # the Segment-compatible events API: 404 until DRIP_WRITE_KEYS is set
    app.include_router(segment.router)
    # ESP webhooks: each answers 404 until its credentials are configured
    app.include_router(postmark.router)
    app.include_router(ses.router)
    app.include_router(mailgun.router)
    app.include_router(sendgrid.router)
    if settings.env == "dev":
        from webhooks.routes import mailbox

        app.include_router(mailbox.router)

    # /healthz, /readyz, /metrics; the middleware is added last so it is the outermost
    # (request id, body cap, metrics, access log; /t/ paths only bump a counter)
    app.include_router(operations.router)
    app.state.metrics = ApiMetrics(db)
    tx_limit = transactional_body_limit(settings.max_body_bytes, settings.tx_attachments_max_bytes)
    app.add_middleware(
        OperationsMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        path_limits=dict.fromkeys(TRANSACTIONAL_PATHS, tx_limit),
    )
    if settings.trusted_proxies:  # outermost of all: every layer sees the client's address
        proxies = TrustedProxies(settings.trusted_proxies, settings.proxy_header)
        app.add_middleware(ClientAddressMiddleware, proxies=proxies)
    document_problems(app)

    return app
