"""The dashboard's Jinja environment and its response headers.

Autoescaped templates under ``webhooks/templates/dashboard``. The Content-Security-Policy
allows scripts, styles and requests to drip's own origin only: the pages load nothing from
anywhere else (no CDN), and an injected ``<script>`` could not run or send data out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from contacts.models import Role
from contacts.users import SignedIn

__all__ = ["NAV", "render"]

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=select_autoescape(default=True),
    auto_reload=False,
)

#: (path, label, roles that see it); admin sees every entry
NAV: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("/dashboard/campaigns", "Campaigns", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/contacts", "Contacts", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/analytics", "Analytics", frozenset({Role.admin, Role.marketer})),
    ("/dashboard/leads", "My leads", frozenset({Role.admin, Role.sales})),
    ("/dashboard/admin/users", "Users", frozenset({Role.admin})),
)

HEADERS = {
    "Cache-Control": "private, no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def render(
    name: str, *, viewer: SignedIn | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    nav = [
        {"href": href, "label": label}
        for href, label, roles in NAV
        if viewer is not None and viewer.role in roles
    ]
    html = _env.get_template(name).render(viewer=viewer, nav=nav, **context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)
