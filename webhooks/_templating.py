"""The API's own HTML pages (forms, thank-you, not found): Jinja with autoescape on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
    auto_reload=False,
)


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src "
            "'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        },
    )


def message_page(
    title: str,
    text: str,
    *,
    workspace_name: str,
    status_code: int = 200,
    action: str = "",
    button: str = "",
) -> HTMLResponse:
    return page(
        "message.html",
        status_code,
        title=title,
        text=text,
        action=action,
        button=button,
        workspace_name=workspace_name,
    )
