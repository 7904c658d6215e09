"""Open pixel and click redirects: the paths email clients hit, so they must never fail.

The pixel answers 200 with the GIF and no-cache headers whatever happens (unknown token,
database trouble). A click redirects only to the URL stored for its token; anything else gets a
404 page, never a redirect, so a tampered link cannot be turned into an open redirect.

A request only *stores* its hit (``webhooks.hits.HitWriter``: buffered, written in batches);
deciding whether it was a person or a machine, recording the open or click event and signalling
the journey all happen after the answer, off the request path. A hit with an unknown token is
counted (``drip_tracking_unknown_tokens_total``), never stored, so junk requests cannot grow the
``hits`` table: a token that is not even token-shaped is counted here, as is a click whose
token has no stored link (the redirect looks it up anyway); a well-shaped pixel token is
checked by the writer, one query per batch, off the request path.

The two paths are the hottest of the app (a mailing's pixel sees tens of thousands of hits a
second), so ``install`` serves them from a plain ASGI middleware ahead of FastAPI's routing and
dependency layer, in the same app (tests reach them the same way). The FastAPI routes below
describe them in the OpenAPI document and serve the same answers if the middleware is absent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from contacts import outbox
from contacts.db import session_scope
from contacts.hits import NewHit
from contacts.models import utcnow
from webhooks._templating import message_page
from webhooks.hits import HitWriter
from webhooks.metrics import ApiMetrics

__all__ = ["GIF", "TrackingMiddleware", "install", "router", "shutdown"]

router = APIRouter(prefix="/t", tags=["tracking"])
log = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,80}$")
_NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
_GIF_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    *((k.lower().encode(), v.encode()) for k, v in _NO_CACHE.items()),
]
_REDIRECT_HEADERS = [
    (b"content-length", b"0"),
    (b"referrer-policy", b"no-referrer"),
    *((k.lower().encode(), v.encode()) for k, v in _NO_CACHE.items()),
]
_LINK_CACHE_SIZE = 10_000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Tracker:
    """What both paths share: the hit writer and a cache of stored link URLs (a link row never
    changes once stored, so a positive answer can be kept)."""

    def __init__(
        self,
        engine: Engine,
        writer: HitWriter,
        workspace_name: str,
        on_unknown: Callable[[str, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.workspace_name = workspace_name
        self.on_unknown = on_unknown
        self._urls: OrderedDict[str, str] = OrderedDict()

    def unknown(self, kind: str) -> None:
        if self.on_unknown is not None:
            self.on_unknown(kind, 1)

    def store(
        self,
        kind: str,
        token: str,
        method: str,
        headers: Any,
        client: Any,
        received_at: datetime | None = None,
    ) -> None:
        if not _TOKEN.match(token):
            self.unknown(kind)
            return
        agent = ""
        for name, value in headers:
            if name == b"user-agent":
                agent = value.decode("latin-1")
                break
        self.writer.add(
            NewHit(
                kind=kind,
                token=token,
                received_at=received_at or utcnow(),
                method=method,
                user_agent=agent[:500],
                ip=client[0] if client else "",
            )
        )

    async def url_of(self, token: str) -> str | None:
        if not _TOKEN.match(token):
            return None
        url = self._urls.get(token)
        if url is None:
            url = await asyncio.to_thread(self._lookup, token)
            if url is None:
                return None
            self._urls[token] = url
            if len(self._urls) > _LINK_CACHE_SIZE:
                self._urls.popitem(last=False)
        return url

    def _lookup(self, token: str) -> str | None:
        with session_scope(self.engine) as session:
            link = outbox.find_link(session, token)
            return link.url if link is not None else None

    def not_found(self) -> Response:
        return message_page(
            "Link not found",
            "This link is not valid. It may have been copied incompletely.",
            status_code=404,
            workspace_name=self.workspace_name,
        )


class TrackingMiddleware:
    """``GET``/``HEAD /t/o/...`` and ``/t/c/...`` as plain ASGI; everything else passes on."""

    def __init__(self, app: ASGIApp, tracker: _Tracker) -> None:
        self.app = app
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        method = scope.get("method", "")
        if path.startswith("/t/o/") and method in ("GET", "HEAD"):
            token = path[5:].removesuffix(".gif")
            try:
                self.tracker.store("open", token, method, scope["headers"], scope.get("client"))
            finally:  # the GIF, whatever happened
                await send({"type": "http.response.start", "status": 200, "headers": _GIF_HEADERS})
                await send({"type": "http.response.body", "body": b"" if method == "HEAD" else GIF})
            return
        if path.startswith("/t/c/") and method in ("GET", "HEAD"):
            token = path[5:]
            received_at = utcnow()
            url = await self.tracker.url_of(token)
            if url is None:
                self.tracker.unknown("click")
                await self.tracker.not_found()(scope, receive, send)
                return
            self.tracker.store(
                "click", token, method, scope["headers"], scope.get("client"), received_at
            )
            headers = [(b"location", url.encode("utf-8")), *_REDIRECT_HEADERS]
            await send({"type": "http.response.start", "status": 302, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Give the app its hit writer and serve the tracking paths ahead of its routing. Events
    the consumer finds routable go to the app's ``JourneyGateway`` on the app's event loop."""
    state = app.state
    loops: list[asyncio.AbstractEventLoop] = []

    def route(event_ids: list[int]) -> None:  # called from the writer thread
        if not loops or loops[-1].is_closed():
            return  # the worker's sweep routes them

        async def send_all() -> None:
            for event_id in event_ids:
                await state.gateway.route(event_id)

        with contextlib.suppress(RuntimeError):  # the loop stopped: the sweep has them
            asyncio.run_coroutine_threadsafe(send_all(), loops[-1])

    def unknown(kind: str, n: int) -> None:  # the metrics are made after this: looked up late
        metrics: ApiMetrics | None = getattr(state, "metrics", None)
        if metrics is not None:
            metrics.unknown_tokens(kind, n)

    writer = HitWriter(
        state.engine,
        min_seconds_after_send=state.settings.tracking_min_seconds_after_send,
        on_route=route,
        on_unknown=unknown,
    )
    tracker = _Tracker(state.engine, writer, state.workspace.config.name, unknown)
    state.hits = writer
    state.tracker = tracker

    class _Remembering(TrackingMiddleware):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if not loops:
                loops.append(asyncio.get_running_loop())
            await super().__call__(scope, receive, send)

    app.add_middleware(_Remembering, tracker=tracker)


async def shutdown(app: FastAPI) -> None:
    """Store and consume every buffered hit before the process ends."""
    writer: HitWriter | None = getattr(app.state, "hits", None)
    if writer is not None:
        await asyncio.to_thread(writer.close)


# The routes below document the paths; with ``install`` the middleware answers first.


@router.get(
    "/o/{token:path}",
    summary="Open pixel: stores the hit, always returns the GIF",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}},
)
async def open_pixel(token: str, request: Request) -> Response:
    tracker: _Tracker | None = getattr(request.app.state, "tracker", None)
    if tracker is not None:
        try:
            tracker.store(
                "open", token.removesuffix(".gif"), request.method, request.scope["headers"],
                request.scope.get("client"),
            )  # fmt: skip
        except Exception:  # pragma: no cover - the GIF is served whatever happens
            log.exception("a pixel hit could not be buffered; the GIF is served anyway")
    return Response(GIF, media_type="image/gif", headers=_NO_CACHE)


@router.get(
    "/c/{token}",
    summary="Click link: stores the hit, redirects to the stored URL",
    response_class=Response,
    responses={
        302: {"description": "to the URL stored for this token"},
        404: {"description": "unknown token: a page, never a redirect"},
    },
)
async def click(token: str, request: Request) -> Response:
    tracker: _Tracker = request.app.state.tracker
    received_at = utcnow()
    url = await tracker.url_of(token)
    if url is None:
        tracker.unknown("click")
        return tracker.not_found()
    tracker.store(
        "click", token, request.method, request.scope["headers"], request.scope.get("client"),
        received_at,
    )  # fmt: skip
    return Response(
        status_code=302,
        headers={"Location": url, **_NO_CACHE, "Referrer-Policy": "no-referrer"},
    )
