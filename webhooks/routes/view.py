"""The "view in your browser" page of a sent email: ``GET /m/{token}``.

Every email's footer links here. The token is the message id and an HMAC over it
(``emails.links.view_token``), so the page needs no token table, and the URL is a capability:
whoever has it sees the email, so the page is never cached by shared caches, never indexed, and
never leaks its URL in a ``Referer`` when the reader follows a link in it.

The page is rendered again from the outbox row (template, campaign version and step, with the
subject as it was sent) for the contact as stored now, from the template files that version
deployed (the workspace's, for a version deployed before those were recorded), with the same
Renderer the worker uses, in its
``for_browser`` mode: no open pixel and no click tracking (looking at the page is not an open or a
click), and no link to itself. Only messages that were actually sent are shown. Viewing records
nothing and changes nothing, so HEAD is GET without the body.

Anything that is not a sent message of a contact we still have answers the same 404 page as the
other links in emails (click, unsubscribe), never a 500: a browser follows these links, so the
answer is HTML, not problem JSON. A template that no longer renders (renamed, broken since) gets a
410 page and a log line, since the email itself exists but cannot be shown any more.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from contacts import deploys, outbox, repository
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import Contact, Message, MessageState
from emails import TemplateError
from emails.links import verify_view_token
from webhooks._templating import message_page
from webhooks.deps import (
    DeployedTemplatesDep,
    EngineDep,
    RendererDep,
    SettingsDep,
    WorkspaceDep,
)

__all__ = ["PAGE_HEADERS", "router"]

router = APIRouter(prefix="/m", tags=["emails"])
log = logging.getLogger(__name__)

#: Headers of every answer under ``/m/``: the URL is a capability, so no shared cache, no search
#: index and no ``Referer`` carrying it off-site.
_PRIVATE_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
#: The email's own HTML: images from anywhere and inline styles, as a mail client shows them; no
#: scripts, frames, forms or plugins. ``sandbox`` gives it an opaque origin as defence in depth;
#: a link the email opens in a new tab leaves the sandbox, so the site it opens works normally.
PAGE_HEADERS = {
    **_PRIVATE_HEADERS,
    "Content-Security-Policy": "sandbox allow-popups allow-popups-to-escape-sandbox; "
    "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
    "font-src https: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


# HEAD is the same handler (it has no side effects); it stays out of the OpenAPI document, where
# a second operation of the same function would only duplicate GET.
@router.head("/{token:path}", include_in_schema=False)
@router.get(
    "/{token:path}",
    response_class=HTMLResponse,
    summary='"View in your browser": a sent email as a web page, without tracking',
    responses={
        404: {"description": "not a sent message we know: a page, the same for every cause"},
        410: {"description": "the message exists but its template no longer renders"},
    },
)
async def view_in_browser(
    token: str,
    settings: SettingsDep,
    engine: EngineDep,
    workspace: WorkspaceDep,
    renderer: RendererDep,
    deployed: DeployedTemplatesDep,
) -> Response:
    message_id = verify_view_token(settings.secret(), token)
    found = None if message_id is None else await run_in_threadpool(_load, engine, message_id)
    if found is None:
        return _page(
            "Email not found",
            "This link is not valid. It may have been copied incompletely.",
            404,
            workspace,
        )
    message, contact, legacy_subject = found
    # the campaign's UTM parameters, so the page's links are credited like the email's
    plan = workspace.plans.get(message.campaign_id)
    try:
        files = await run_in_threadpool(
            deployed.get, message.campaign_id, message.campaign_version, message.template
        )
        rendered = await run_in_threadpool(
            renderer.render,
            template=message.template,
            # the outbox keeps the subject as sent, never evaluated again as a template
            subject=message.subject,
            literal_subject=not legacy_subject,
            deployed=files,
            preheader="",
            contact=contact,
            message_id=message.id,
            campaign_id=message.campaign_id,
            step_id=message.step_id,
            track=False,
            for_browser=True,
            utm=plan.utm_for(message.step_id) if plan is not None else None,
        )
    except TemplateError as exc:
        log.warning("view in browser: message %s cannot be rendered any more: %s", message.id, exc)
        return _page(
            "Email no longer available",
            "This email can no longer be shown in a browser. The copy in your inbox is unchanged.",
            410,
            workspace,
        )
    return HTMLResponse(rendered.html, headers=PAGE_HEADERS)


def _load(engine: EngineDep, message_id: str) -> tuple[Message, Contact, bool] | None:
    """The message, its contact and whether its subject is still the step's template; None
    unless the message was sent and the contact exists."""
    with session_scope(engine) as session:
        message = outbox.get_message(session, message_id)
        if message is None or message.state != MessageState.sent:
            return None
        try:
            contact = repository.get_contact(session, message.contact_id)
        except NotFound:
            return None
        return message, contact, _subject_is_template(session, message)


def _subject_is_template(session: Session, message: Message) -> bool:
    """True for a row sent before the outbox kept rendered subjects: it holds its step's
    subject template, which then renders as it did at send. A rendered subject equals its
    template only when nothing was put in it, so contact data is never evaluated."""
    if "{" not in message.subject:
        return False
    row = deploys.find_version(session, message.campaign_id, message.campaign_version)
    step = row.plan.get("steps", {}).get(message.step_id) if row is not None else None
    return isinstance(step, dict) and step.get("subject") == message.subject


def _page(title: str, text: str, status_code: int, workspace: WorkspaceDep) -> Response:
    response = message_page(
        title, text, status_code=status_code, workspace_name=workspace.config.name
    )
    response.headers.update(_PRIVATE_HEADERS)
    return response
