"""Unsubscribe: RFC 8058 one-click POST (200, never a redirect) and a GET that only asks.

Mail clients and link scanners fetch GET URLs on their own, so a GET never unsubscribes anyone;
it shows a confirmation button that POSTs. The one-click POST from a mail client's button
unsubscribes at once. Suppression is checked at send time, so no further email goes out.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from contacts import repository
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import ContactStatus
from emails.links import verify_unsubscribe_token
from webhooks._templating import message_page
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep

__all__ = ["router"]

router = APIRouter(prefix="/u", tags=["unsubscribe"])


@router.get("/{token}", summary="Confirmation page; unsubscribes nobody by itself")
async def confirm_page(token: str, settings: SettingsDep, workspace: WorkspaceDep) -> Response:
    if verify_unsubscribe_token(settings.secret(), token) is None:
        return message_page(
            "Link not valid",
            "This unsubscribe link is not valid.",
            status_code=404,
            workspace_name=workspace.config.name,
        )
    return message_page(
        "Unsubscribe",
        f"Stop receiving marketing emails from {workspace.config.name}?",
        workspace_name=workspace.config.name,
        action=f"/u/{token}",
        button="Unsubscribe me",
    )


@router.post("/{token}", summary="One-click unsubscribe (RFC 8058); answers 200, no redirect")
async def unsubscribe(
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    gateway: GatewayDep,
    workspace: WorkspaceDep,
) -> Response:
    contact_id = verify_unsubscribe_token(settings.secret(), token)
    if contact_id is None:
        return message_page(
            "Link not valid",
            "This unsubscribe link is not valid.",
            status_code=404,
            workspace_name=workspace.config.name,
        )

    def record() -> int | None:
        with session_scope(engine) as session:
            if not repository.set_status(session, contact_id, ContactStatus.unsubscribed):
                return None
            event, _ = repository.record_event(
                session,
                contact_id=contact_id,
                type="unsubscribe",
                source="one-click",
                dedupe_key=f"unsubscribe:{contact_id}:{uuid.uuid4()}",
            )
            return event.id

    try:
        event_id = await run_in_threadpool(record)
    except NotFound:
        return message_page(
            "Link not valid",
            "This unsubscribe link is not valid.",
            status_code=404,
            workspace_name=workspace.config.name,
        )
    if event_id is not None:
        await gateway.route(event_id)
    return message_page(
        "You are unsubscribed",
        f"You will not receive marketing emails from {workspace.config.name} any more.",
        workspace_name=workspace.config.name,
    )
