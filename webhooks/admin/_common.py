"""What every admin route shares: problem responses, the body size cap, keyset cursors.

Errors are raised as ``AdminProblem`` (handled by ``webhooks.admin.install``) so that headers
such as ``WWW-Authenticate`` survive, and every route documents its problem responses with the
``Problem`` schema and the ``application/problem+json`` media type, so the OpenAPI document
describes exactly what a client (or schemathesis) gets back.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ConfigDict
from starlette.types import Message

from contacts import cleaning
from webhooks.problems import PROBLEM_JSON, problem

__all__ = [
    "MAX_CSV_BYTES",
    "MAX_JSON_BYTES",
    "AdminProblem",
    "CappedRoute",
    "FreeText",
    "OneLine",
    "Problem",
    "ProblemField",
    "decode_cursor",
    "encode_cursor",
    "problems",
]

MAX_JSON_BYTES = 1024 * 1024
MAX_CSV_BYTES = 20 * 1024 * 1024
#: the OpenAPI extension a route sets to raise its own cap (documented in the schema too)
MAX_BODY_EXTENSION = "x-max-body-bytes"


def _one_line(text: str) -> str:
    """``contacts.cleaning``'s single-line text rule, as a pydantic check (422 naming it)."""
    if reason := cleaning.text_problem(text):
        raise ValueError(reason)
    return text


def _free_text(text: str) -> str:
    """The multi-line rule: line breaks and tabs allowed, other control characters not."""
    if reason := cleaning.text_problem(text, multiline=True):
        raise ValueError(reason)
    return text


#: ``Annotated[str, ..., OneLine]``: a name, a tag, a source (no line break, no control,
#: bidi override or lone surrogate); ``FreeText``: a reason or a note (line breaks allowed)
OneLine = AfterValidator(_one_line)
FreeText = AfterValidator(_free_text)


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[ProblemField] | None = None


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, unknown or revoked API key",
    403: "The API key lacks the scope this route needs",
    404: "No such resource",
    409: "The resource is not in a state that allows this",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid parameters or body",
    429: "Too many requests for this API key; retry after Retry-After seconds",
    503: "A dependency (Temporal) is unreachable; retry later",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: 401, 403 and 422 always, plus ``statuses``."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in sorted({401, 403, 422, *statuses})
    }


class AdminProblem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.headers, self.extra = headers or {}, extra

    def response(self) -> Response:
        response = problem(self.status, self.title, self.detail, **self.extra)
        response.headers.update(self.headers)
        return response


class _TooLarge(Exception):
    pass


class CappedRoute(APIRoute):
    """A route that refuses a body over its cap with 413 before reading more of it: at once by
    ``Content-Length``, else (chunked uploads) as soon as the bytes received pass the cap."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = int((self.openapi_extra or {}).get(MAX_BODY_EXTENSION, MAX_JSON_BYTES))
        # the scope dependency (auth.RequireScope), checked before the body is read
        guards = [d.call for d in self.dependant.dependencies if hasattr(d.call, "required_scope")]

        async def capped(request: Request) -> Response:
            try:
                for guard in guards:
                    request.state.admin_caller = await guard.check(request)  # type: ignore[union-attr]
            except AdminProblem as exc:
                return exc.response()
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                return _too_large(limit)
            receive, seen = request.receive, 0

            async def counted() -> Message:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
                return message

            try:
                return await handler(Request(request.scope, counted, request._send))
            except _TooLarge:
                return _too_large(limit)
            except AdminProblem as exc:
                return exc.response()

        return capped


def _too_large(limit: int) -> Response:
    return problem(413, "Content Too Large", f"request bodies are limited to {limit} bytes")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor points after; AdminProblem 422 for a cursor we did not make."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, raw = text.partition(":")
        if kind == "id" and raw.isdigit() and len(raw) < 19:
            return int(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    raise AdminProblem(
        422,
        "Invalid request",
        "the cursor is not one this API returned",
        errors=[{"field": "cursor", "message": "not a valid cursor"}],
    )
