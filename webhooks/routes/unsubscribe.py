"""Unsubscribe and the preference page: RFC 8058 one-click POST (200, never a redirect), and a
GET that only asks and offers the preference centre (topics, pause for 30 days).

Mail clients and link scanners fetch GET URLs on their own, so a GET never changes anything; the
page's buttons POST. The one-click POST from a mail client's button unsubscribes at once, and the
``unsubscribe`` event ends the contact's running journeys; suppression is also checked at send
time, so no further email goes out. Every action is authorised by the signed token in the URL,
which only the recipient has, so no other site can forge these posts (CSRF).

A broadcast's email links to ``/u/<token>?m=<message id>``: the unsubscribe event then names
that message (``message_id``), which files it under the broadcast (``properties.broadcast``,
``contacts.broadcast_events``). The token alone authorises; an ``m`` that names no message of
this contact is ignored (logged), never a reason to refuse someone's unsubscribe.

Topics are stored as the contact's tags ``topic:<id>`` (campaigns select them with
``has_tag("topic:deals")``); saving the page also tags each topic left unticked
``topic-left:<id>`` (and untags the ticked ones), so a broadcast to a topic can skip the contacts
who said no to it, while those who never saw the page still get it. A pause sets
``paused_until``, and sends wait until it has passed.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from campaigns.workspace import Workspace
from contacts import consent, outbox, repository
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import Contact, ContactStatus, utcnow
from emails.links import verify_unsubscribe_token
from webhooks._templating import message_page, page
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep

__all__ = ["PAUSE", "TOPIC_TAG", "router"]

#: every route here answers a link that is not ours with a 404 page (the forms' say so again)
router = APIRouter(
    prefix="/u", tags=["unsubscribe"], responses={404: {"description": "invalid link (a page)"}}
)

PAUSE = timedelta(days=30)
TOPIC_TAG = consent.TOPIC_TAG  # kept here too: its home is contacts.consent

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a message id in ``?m=`` looks like (our ids are UUIDs); anything else names no email.
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: The email an unsubscribe link came from (broadcast emails name it); optional.
MessageParam = Query(default=None, description="the email the link came from (optional)")


def _message_ref(m: str | None) -> str | None:
    return m if m is not None and _MESSAGE_ID.fullmatch(m) else None


def _sender_of(session: Session, contact_id: int, m: str | None) -> str | None:
    """The id of the email named by ``?m=`` if it is this contact's; else None (logged)."""
    if m is None:
        return None
    ref = _message_ref(m)
    message = outbox.get_message(session, ref) if ref is not None else None
    if message is None or message.contact_id != contact_id:
        log.info("unsubscribe of contact %s names no email of theirs (m=%r)", contact_id, m[:80])
        return None
    return message.id


def _link_contact(token: str, settings: SettingsDep) -> int | None:
    """The contact the link's token was signed for; None for a link that is not ours (every
    route here then answers the invalid-link page)."""
    return verify_unsubscribe_token(settings.secret(), token)


#: the contact of the link in the URL (``/u/<token>...``), or None
LinkContactDep = Annotated[int | None, Depends(_link_contact)]


def _invalid(workspace: Workspace) -> HTMLResponse:
    return message_page(
        "Link not valid",
        "This unsubscribe link is not valid.",
        status_code=404,
        workspace_name=workspace.config.name,
    )


async def _recorded(workspace: Workspace, record: Callable[[], T]) -> T | HTMLResponse:
    """``record()`` in the thread pool; the invalid-link page when its contact is not there
    (a link signed by us for a contact erased since)."""
    try:
        return await run_in_threadpool(record)
    except NotFound:
        return _invalid(workspace)


def _preferences(
    token: str, contact: Contact, workspace: Workspace, notice: str = "", m: str | None = None
) -> HTMLResponse:
    paused = contact.paused_until
    ref = _message_ref(m)
    return page(
        "preferences.html",
        base=f"/u/{token}",
        unsubscribe_action=f"/u/{token}" + (f"?m={quote(ref, safe='')}" if ref else ""),
        email=contact.email,
        notice=notice,
        topics=workspace.config.topics,
        chosen={t.removeprefix(TOPIC_TAG) for t in contact.tags if t.startswith(TOPIC_TAG)},
        paused_until=paused.strftime("%d %B %Y") if paused and paused > utcnow() else "",
        unsubscribed=contact.status != ContactStatus.subscribed,
        workspace_name=workspace.config.name,
    )


@router.get(
    "/{token}",
    summary="Confirmation and preference page; changes nothing by itself",
)
async def confirm_page(
    token: str,
    contact_id: LinkContactDep,
    workspace: WorkspaceDep,
    engine: EngineDep,
    m: str | None = MessageParam,
) -> Response:
    if contact_id is None:
        return _invalid(workspace)

    def load() -> Contact | None:
        with session_scope(engine) as session:
            try:
                return repository.get_contact(session, contact_id)
            except NotFound:
                return None

    contact = await run_in_threadpool(load)
    if contact is None:
        # signed by us, for a contact since erased: ask anyway, the POST finds nobody
        return message_page(
            "Unsubscribe",
            f"Stop receiving marketing emails from {workspace.config.name}?",
            workspace_name=workspace.config.name,
            action=f"/u/{token}",
            button="Unsubscribe me",
        )
    return _preferences(token, contact, workspace, m=m)


@router.head("/{token}", include_in_schema=False)
async def confirm_page_head(
    token: str,
    contact_id: LinkContactDep,
    workspace: WorkspaceDep,
    engine: EngineDep,
    m: str | None = MessageParam,
) -> Response:
    """Mail clients and link checkers ask with HEAD before they show or follow the link: the
    GET's status and headers, without its body (and, like the GET, changing nothing)."""
    answer = await confirm_page(token, contact_id, workspace, engine, m)
    return Response(status_code=answer.status_code, headers=dict(answer.headers))


@router.post(
    "/{token}",
    summary="One-click unsubscribe (RFC 8058); answers 200, no redirect",
)
async def unsubscribe(
    contact_id: LinkContactDep,
    engine: EngineDep,
    gateway: GatewayDep,
    workspace: WorkspaceDep,
    m: str | None = MessageParam,
) -> Response:
    if contact_id is None:
        return _invalid(workspace)

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
                message_id=_sender_of(session, contact_id, m),
            )
            return event.id

    event_id = await _recorded(workspace, record)
    if isinstance(event_id, HTMLResponse):
        return event_id
    if event_id is not None:
        await gateway.route(event_id)
    return message_page(
        "You are unsubscribed",
        f"You will not receive marketing emails from {workspace.config.name} any more.",
        workspace_name=workspace.config.name,
    )


async def _posted(request: Request, name: str) -> list[str] | None:
    """The posted values of ``name`` (urlencoded or multipart), or None if unreadable."""
    try:
        form = await request.form()
    except (ValueError, UnicodeDecodeError, AssertionError):
        return None
    return [v for v in form.getlist(name) if isinstance(v, str)]


async def _preference_form(
    contact_id: int | None,
    request: Request,
    workspace: Workspace,
    name: str,
    *,
    valid: Callable[[list[str]], bool],
    problem: str,
) -> tuple[int, list[str]] | HTMLResponse:
    """Whose preference page posted and the values of ``name``; or the page to answer instead:
    404 for a link that is not ours, 400 with ``problem`` for a form that cannot be read or
    that ``valid`` refuses."""
    values = await _posted(request, name)
    if contact_id is None:
        return _invalid(workspace)
    if values is None or not valid(values):
        return message_page(
            "Bad request", problem, status_code=400, workspace_name=workspace.config.name
        )
    return contact_id, values


def _form_responses(bad_request: str) -> dict[int | str, dict[str, Any]]:
    """What a preference page's form answers besides 200, for the OpenAPI document."""
    return {400: {"description": bad_request}, 404: {"description": "invalid link"}}


@router.post(
    "/{token}/topics",
    summary="Preference page: choose topics",
    responses=_form_responses("unreadable form (a page)"),
)
async def save_topics(
    token: str,
    request: Request,
    contact_id: LinkContactDep,
    engine: EngineDep,
    gateway: GatewayDep,
    workspace: WorkspaceDep,
) -> Response:
    form = await _preference_form(
        contact_id,
        request,
        workspace,
        "topic",
        valid=lambda _: True,
        problem="The form could not be read.",
    )
    if isinstance(form, HTMLResponse):
        return form
    contact_id, chosen = form
    known = [t.id for t in workspace.config.topics]
    # a topic unticked here is one the contact left (not merely never chose): say so in a tag
    wanted = {f"{TOPIC_TAG}{t}" for t in known if t in chosen}
    wanted |= {f"{consent.TOPIC_LEFT_TAG}{t}" for t in known if t not in chosen}
    unwanted = {f"{TOPIC_TAG}{t}" for t in known if t not in chosen}
    unwanted |= {f"{consent.TOPIC_LEFT_TAG}{t}" for t in known if t in chosen}

    def record() -> tuple[Contact, list[int]]:
        recorded: list[int] = []
        with session_scope(engine) as session:
            contact = repository.update_contact(
                session,
                contact_id,
                add_tags=sorted(wanted),
                remove_tags=sorted(unwanted),
                source="preferences",
                recorded=recorded,
            )
            return contact, recorded

    saved = await _recorded(workspace, record)
    if isinstance(saved, HTMLResponse):
        return saved
    contact, events = saved
    for event_id in events:
        await gateway.route(event_id)
    return _preferences(token, contact, workspace, "Your topics are saved.")


@router.post(
    "/{token}/pause",
    summary="Preference page: pause emails for 30 days, or resume",
    responses=_form_responses("no valid action (a page)"),
)
async def pause(
    token: str,
    request: Request,
    contact_id: LinkContactDep,
    engine: EngineDep,
    workspace: WorkspaceDep,
) -> Response:
    form = await _preference_form(
        contact_id,
        request,
        workspace,
        "action",
        valid=lambda action: action[-1:] in (["pause"], ["resume"]),
        problem="Choose to pause or to resume your emails.",
    )
    if isinstance(form, HTMLResponse):
        return form
    contact_id, action = form
    until = utcnow() + PAUSE if action[-1] == "pause" else None

    def record() -> Contact:
        with session_scope(engine) as session:
            return consent.set_paused_until(session, contact_id, until)

    contact = await _recorded(workspace, record)
    if isinstance(contact, HTMLResponse):
        return contact
    notice = (
        f"Your emails are paused for {PAUSE.days} days." if until else "Your emails are resumed."
    )
    return _preferences(token, contact, workspace, notice)
