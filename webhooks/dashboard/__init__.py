"""The dashboard: server-rendered pages under ``/dashboard`` for marketers, sales and admins.

Pages are Jinja templates (``webhooks/templates/dashboard``) with htmx for small interactions;
every asset is served by drip itself from ``webhooks/static`` (``/static``), never from a CDN, so
the pages work on a closed network and leak no visitor to a third party. The routes are left out
of the OpenAPI schema: they are pages for people, not an API (``/api`` is the API).

Sign-in, sessions, roles and CSRF are in ``_auth``; users are made with ``drip users``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from webhooks.dashboard import (
    account,
    admin,
    analytics,
    broadcasts,
    campaign,
    campaigns,
    contacts,
    leads,
    signin,
    team,
)
from webhooks.dashboard._auth import LoginLimits, install_handlers
from webhooks.dashboard._render import note_dev_mode

__all__ = ["STATIC", "install", "router"]

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False, dependencies=[Depends(note_dev_mode)])
_PAGES = (signin, campaigns, campaign, broadcasts, contacts, leads, team, admin, analytics, account)
for _pages in _PAGES:
    router.include_router(_pages.router, prefix="/dashboard")


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files on ``app``."""
    app.state.dashboard_login_limits = LoginLimits(app.state.rate_limiter)
    install_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
