"""RFC 9457 problem details for every error the API returns: JSON, never a bare 500 page.

One title per status (RFC 9110's names: 413 is "Content Too Large" wherever it comes from), and
one exception: a browser's form post (form-encoded or multipart, or ``Accept: text/html``
without JSON) that is refused for its body (413, 415, 422) gets a short HTML page saying the
same, since a person reads it, not a program.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles

__all__ = [
    "FORM_TYPES",
    "PROBLEM_JSON",
    "allowed_methods",
    "install_problem_handlers",
    "negotiated_problem",
    "problem",
    "title",
    "wants_html",
]

PROBLEM_JSON = "application/problem+json"
#: the bodies a browser's <form> sends
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
#: statuses a browser's form post may get as a page (the body was refused)
_PAGE_STATUSES = frozenset({413, 415, 422})
#: RFC 9110's names where Python's ``HTTPStatus`` still has RFC 7231's
_TITLES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str = "", **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def wants_html(headers: Headers) -> bool:
    """Whether a person's browser posted this (a <form>, or a page asking for HTML)."""
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type in FORM_TYPES:
        return True
    accept = headers.get("accept", "").lower()
    return "json" not in media_type and "text/html" in accept and "json" not in accept


def negotiated_problem(
    request: Request, status: int, detail: str, *, heading: str = "", **extra: Any
) -> Response:
    """Problem JSON, or for a browser's form post refused for its body, the same as a page.
    ``heading`` is the title when the status's own name says too little (a 422)."""
    heading = heading or title(status)
    if status in _PAGE_STATUSES and wants_html(request.headers):
        from webhooks._templating import message_page  # pages are the exception: load late

        workspace = getattr(request.app.state, "workspace", None)
        name = workspace.config.name if workspace is not None else "drip"
        return message_page(heading, detail, status_code=status, workspace_name=name)
    return problem(status, heading, detail, **extra)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, asked of the routes themselves. Starlette's
    405 names only the methods of the first route that matched the path (``GET`` and ``POST``
    on one path are two routes), and the static files' 405 names none."""
    # the app's own view of the path, also when a mount (``/static``) raised the 405
    scope = {**request.scope, "root_path": request.scope.get("app_root_path", "")}
    allowed: set[str] = set()
    routes = request.app.router.routes
    for route in routes:
        static = isinstance(route, Mount) and isinstance(route.app, StaticFiles)
        if static and route.matches(scope)[0] is not Match.NONE:
            allowed |= {"GET", "HEAD"}
    for method in _METHODS:
        asked = {**scope, "method": method}
        if any(
            not isinstance(route, Mount) and route.matches(asked)[0] is Match.FULL
            for route in routes
        ):
            allowed.add(method)
    return [method for method in _METHODS if method in allowed]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        answer = negotiated_problem(request, exc.status_code, str(exc.detail or ""))
        if exc.headers:  # a 405's Allow, a 401's WWW-Authenticate
            answer.headers.update(exc.headers)
        if exc.status_code == 405:
            answer.headers["Allow"] = ", ".join(allowed_methods(request))
        return answer

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "message": e.get("msg", ""),
            }
            for e in exc.errors()
        ]
        detail = "the request has invalid fields"
        if wants_html(request.headers):  # a page has no ``errors`` member: say them
            detail += ": " + "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return negotiated_problem(request, 422, detail, heading="Invalid request", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", "something went wrong on our side; it is logged")


def title(status: int) -> str:
    """The one title of ``status``, wherever in the app it is answered."""
    from http import HTTPStatus

    try:
        return _TITLES.get(status) or HTTPStatus(status).phrase
    except ValueError:
        return "Error"
