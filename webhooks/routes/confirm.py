"""Double opt-in confirmation: ``/forms/{form}/confirm/{token}`` from the confirmation email.

A GET only shows a button (mail security scanners fetch every link in an email, and must not
subscribe anybody); the button's POST subscribes the contact, records consent and the ``form``
event, and routes it: the form's campaigns start now, not at the submission. A link we did not
sign is a 400 page, one past its 7 days a 410 page; confirming twice starts nothing twice.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from campaigns.schema import FormDefinition
from campaigns.workspace import Workspace
from contacts import consent
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import utcnow
from webhooks import _optin
from webhooks._templating import message_page
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
from webhooks.middleware import client_address

__all__ = ["router"]

router = APIRouter(tags=["forms"])


def _check(
    form_id: str, token: str, secret: bytes, workspace: Workspace
) -> tuple[FormDefinition, _optin.Confirmation] | HTMLResponse:
    name = workspace.config.name
    form = workspace.forms.get(form_id)
    found = _optin.verify(secret, token, form_id) if form is not None else None
    if form is None or found is None:
        return message_page(
            "Link not valid",
            "This confirmation link is not valid. Please copy the whole link from the email.",
            status_code=400,
            workspace_name=name,
        )
    if found.expires <= utcnow():
        return message_page(
            "Link expired",
            "This confirmation link has expired. Please sign up again to get a new one.",
            status_code=410,
            workspace_name=name,
        )
    return form, found


@router.get(
    "/{form_id}/confirm/{token}",
    response_class=HTMLResponse,
    summary="Double opt-in: a page with a confirm button; confirms nothing by itself",
    responses={400: {"description": "invalid link (a page)"}, 410: {"description": "expired"}},
)
async def confirm_page(
    form_id: str, token: str, settings: SettingsDep, workspace: WorkspaceDep
) -> HTMLResponse:
    checked = _check(form_id, token, settings.secret(), workspace)
    if isinstance(checked, HTMLResponse):
        return checked
    form, _ = checked
    return message_page(
        "Confirm your subscription",
        f"Press the button to confirm your subscription to “{form.title}”.",
        workspace_name=workspace.config.name,
        action=f"/forms/{form.id}/confirm/{token}",
        button="Yes, subscribe me",
    )


@router.post(
    "/{form_id}/confirm/{token}",
    response_class=HTMLResponse,
    summary="Double opt-in: confirm; subscribes the contact and starts the form's campaigns",
    responses={
        400: {"description": "invalid link (a page)"},
        410: {"description": "expired or gone"},
    },
)
async def confirm(
    form_id: str,
    token: str,
    request: Request,
    settings: SettingsDep,
    workspace: WorkspaceDep,
    engine: EngineDep,
    gateway: GatewayDep,
) -> HTMLResponse:
    checked = _check(form_id, token, settings.secret(), workspace)
    if isinstance(checked, HTMLResponse):
        return checked
    form, found = checked
    ip = client_address(request)

    def record() -> int | None:
        with session_scope(engine) as session:
            return consent.confirm_opt_in(
                session,
                contact_id=found.contact_id,
                request_id=found.request_id,
                form_id=form.id,
                ip=ip,
            )

    try:
        event_id = await run_in_threadpool(record)
    except NotFound:
        # signed by us, but the contact or the request is gone (erased since)
        return message_page(
            "Link not valid",
            "This confirmation link is no longer valid. Please sign up again.",
            status_code=410,
            workspace_name=workspace.config.name,
        )
    if event_id is not None:
        await gateway.route(event_id)
    return message_page(
        "You are subscribed",
        f"Thank you: your subscription to “{form.title}” is confirmed.",
        workspace_name=workspace.config.name,
    )
