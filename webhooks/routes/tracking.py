"""Open pixel and click redirects: the paths email clients hit, so they must never fail.

The pixel answers with the GIF whatever happens (unknown token, database trouble). A click
redirects only to the URL stored for its token; anything else gets a 404 page, never a redirect,
so a tampered link cannot be turned into an open redirect.
"""

from __future__ import annotations

import base64
import logging
import re
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from contacts import outbox, repository
from contacts.db import session_scope
from webhooks._templating import message_page
from webhooks.deps import EngineDep, GatewayDep, WorkspaceDep

__all__ = ["GIF", "router"]

router = APIRouter(prefix="/t", tags=["tracking"])
log = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,80}$")
_NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


@router.get(
    "/o/{token:path}.gif",
    summary="Open pixel: records an open, always returns the GIF",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}}},
)
async def open_pixel(
    token: str, request: Request, engine: EngineDep, gateway: GatewayDep
) -> Response:
    if _TOKEN.match(token):
        try:
            event_id = await run_in_threadpool(
                _record_open, engine, token, request.headers.get("user-agent", "")
            )
            if event_id is not None:
                await gateway.route(event_id)
        except Exception:
            log.exception("open not recorded for a pixel hit; the GIF is served anyway")
    return Response(GIF, media_type="image/gif", headers=_NO_CACHE)


def _record_open(engine: EngineDep, token: str, user_agent: str) -> int | None:
    with session_scope(engine) as session:
        message = outbox.find_message_by_open_token(session, token)
        if message is None:
            return None
        event, _ = repository.record_event(
            session,
            contact_id=message.contact_id,
            type="open",
            name=message.step_id,
            dedupe_key=f"open:{message.id}:{uuid.uuid4()}",
            source="pixel",
            message_id=message.id,
            properties={"user_agent": user_agent[:500]},
        )
        return event.id


@router.get(
    "/c/{token}",
    summary="Click link: records a click, redirects to the stored URL",
    response_class=Response,
    responses={
        302: {"description": "to the URL stored for this token"},
        404: {"description": "unknown token: a page, never a redirect"},
    },
)
async def click(
    token: str, request: Request, engine: EngineDep, gateway: GatewayDep, workspace: WorkspaceDep
) -> Response:
    found = None
    if _TOKEN.match(token):
        found = await run_in_threadpool(
            _record_click, engine, token, request.headers.get("user-agent", "")
        )
    if found is None:
        return message_page(
            "Link not found",
            "This link is not valid. It may have been copied incompletely.",
            status_code=404,
            workspace_name=workspace.config.name,
        )
    url, event_id = found
    await gateway.route(event_id)
    return RedirectResponse(
        url, status_code=302, headers={**_NO_CACHE, "Referrer-Policy": "no-referrer"}
    )


def _record_click(engine: EngineDep, token: str, user_agent: str) -> tuple[str, int] | None:
    with session_scope(engine) as session:
        link = outbox.find_link(session, token)
        if link is None:
            return None
        message = outbox.get_message(session, link.message_id)
        if message is None:  # pragma: no cover - a link row always has its message (FK)
            return None
        event, _ = repository.record_event(
            session,
            contact_id=message.contact_id,
            type="click",
            name=message.step_id,
            dedupe_key=f"click:{message.id}:{uuid.uuid4()}",
            source="link",
            message_id=message.id,
            properties={"url": link.url, "position": link.position, "user_agent": user_agent[:500]},
        )
        assert event.id is not None
        return link.url, event.id
