"""One plain ASGI middleware for what every request shares: request id, body cap, metrics, log.

It is one layer, not four, and plain ASGI (no ``BaseHTTPMiddleware``), because the pixel path
is the hottest in the product: a ``/t/...`` request only bumps a pre-bound counter and goes
through untouched (no id, no timing, no log line; those routes read no body).

For every other request:

- **Request id**: ``X-Request-ID`` from the client or proxy if it is a sane token (up to 128
  of ``A-Za-z0-9._-``), else a fresh one; echoed in the response and put in
  ``drip.logs.request_id_var`` so every log line the request causes carries it.
- **Body cap**: a ``Content-Length`` over ``DRIP_MAX_BODY_BYTES`` is refused at once; a body
  without one (chunked) is counted as it streams, and reading past the cap raises
  ``BodyTooLarge``, an ``HTTPException`` the problem handlers turn into 413 problem JSON. Routes
  may enforce lower limits themselves.
- **Metrics** by route template and status, and one ``drip.access`` log line (INFO) with
  method, path, route, status and duration.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drip.logs import request_id_var
from webhooks.metrics import ApiMetrics
from webhooks.problems import problem

__all__ = ["BodyTooLarge", "OperationsMiddleware"]

access_log = logging.getLogger("drip.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")


class BodyTooLarge(HTTPException):
    """The request body passed the global cap while a route read it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


class OperationsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/t/"):
            if path.startswith("/t/o/"):
                self.metrics.tracking_open.inc()
            elif path.startswith("/t/c/"):
                self.metrics.tracking_click.inc()
            else:
                self.metrics.tracking_other.inc()
            await self.app(scope, receive, send)
            return
        await self._observed(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = declared_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SANE_ID.match(value):
                request_id = value.decode()
            elif name == b"content-length":
                declared_length = value
        request_id = request_id or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        status = 500  # what the client gets if the app raises before answering
        response_started = False
        limit = self.max_body_bytes
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if declared_length is not None and _over(declared_length, limit):
                await problem(
                    413, "Content Too Large", f"request bodies are limited to {limit} bytes"
                )(scope, receive, send_with_id)
            else:
                try:
                    await self.app(scope, capped_receive, send_with_id)
                except BodyTooLarge as exc:  # raised where no handler caught it
                    if response_started:
                        raise
                    await problem(413, "Content Too Large", str(exc.detail))(
                        scope, receive, send_with_id
                    )
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method: str = scope["method"]
            self.metrics.observe(method, template, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


def _over(declared: bytes, limit: int) -> bool:
    try:
        return int(declared) > limit
    except ValueError:  # a malformed length is the server's (h11/httptools) to refuse
        return False
