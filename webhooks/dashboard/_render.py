"""The dashboard's Jinja environment and its response headers.

Autoescaped templates under ``webhooks/templates/dashboard``. The Content-Security-Policy
allows scripts, styles and requests to drip's own origin only: the pages load nothing from
anywhere else (no CDN), and an injected ``<script>`` could not run or send data out.

Under ``DRIP_ENV=dev`` the navigation also links the dev mailbox (``/dev/mailbox``, which the
app serves only then). ``render`` has no request to ask, and its callers should not have to
pass one, so ``note_dev_mode`` (a dependency of every dashboard route) records the app's
setting in a context variable for the rest of the request.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from contacts.models import Role
from contacts.users import SignedIn

__all__ = ["DEV_NAV", "NAV", "note_dev_mode", "render"]

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=select_autoescape(default=True),
    auto_reload=False,
)


def address(text: object) -> Markup:
    """An email address that may wrap after its "@" and dots: ``<wbr>`` there, so a long one
    wraps at those points and never squeezes the rest of its table (the stylesheet breaks
    other words only when a line cannot hold them)."""
    escaped = str(escape(text))  # "&amp;" and the like hold no "@" or "."
    return Markup(escaped.replace("@", "@<wbr>").replace(".", ".<wbr>"))  # noqa: S704


def short_version(version: str) -> str:
    """A campaign version as people quote it: one "v" (versions are "v" + hash already, some
    older rows not) and the hash cut to 7 characters, like a short git commit."""
    shown = "v" + version.removeprefix("v")
    return shown if len(shown) <= 9 else shown[:8] + "…"


_env.filters["address"] = address
_env.filters["short_version"] = short_version

#: (path, label, roles that see it); admin sees every entry
NAV: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("/dashboard/campaigns", "Campaigns", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/broadcasts", "Broadcasts", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/contacts", "Contacts", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/analytics", "Analytics", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/leads", "My leads", frozenset({Role.admin, Role.sales})),
    ("/dashboard/team", "Team", frozenset({Role.admin, Role.sales})),
    ("/dashboard/admin/users", "Users", frozenset({Role.admin})),
    ("/dashboard/admin/delivery", "Delivery", frozenset({Role.admin})),
    ("/dashboard/admin/webhooks", "Webhooks", frozenset({Role.admin})),
)

#: (path, label) shown to every signed-in user when drip runs in dev (``DRIP_ENV=dev``)
DEV_NAV: tuple[tuple[str, str], ...] = (("/dev/mailbox", "Mailbox"),)
_dev_mode: ContextVar[bool] = ContextVar("drip_dashboard_dev_mode", default=False)

HEADERS = {
    "Cache-Control": "private, no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


async def note_dev_mode(request: Request) -> None:
    """Record for ``render`` whether this app runs in dev (async, so it runs in the request's
    own context rather than a thread pool's copy of it)."""
    _dev_mode.set(request.app.state.settings.env == "dev")


def render(
    name: str, *, viewer: SignedIn | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    nav = [
        {"href": href, "label": label}
        for href, label, roles in NAV
        if viewer is not None and viewer.role in roles
    ]
    if viewer is not None and _dev_mode.get():
        nav += [{"href": href, "label": label} for href, label in DEV_NAV]
    html = _env.get_template(name).render(viewer=viewer, nav=nav, **context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)
