"""``/dashboard/contacts``: search contacts, read one contact's timeline, erase on request.

The search is the admin API's own (``webhooks.admin.contacts._search``, keyset pagination by
id): part of the address, a tag, and a name, which becomes a condition of the campaign
language on the ``first_name``, ``last_name`` and ``name`` fields (``contains`` is
case-sensitive, so the name is tried as typed, lower-case and capitalised).

A contact's page is its timeline (``_contact_timeline``). Marketers and admins see every
contact; a sales user sees a contact they own, or one of whose lead alerts is theirs, and gets
the 403 page for any other, so the page cannot be used to browse the database.

A running journey's current step is read from Temporal, where the journey records the step it
dwells at (``workflows.positions``), one ``describe`` per running journey shown, at once; if
Temporal does not answer within ``positions.TIMEOUT_SECONDS`` the step shows as unknown and
the page says why.

Erasure is the admin API's ``DELETE`` as a form: admin only, CSRF-checked, and the admin types
the contact's address to confirm. ``contacts.erasure`` removes the personal data and records an
``unsubscribe`` event, routed through the app's gateway at once so running journeys end (if
Temporal is away the worker's sweep routes it later, and the page says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine

from campaigns.conditions import Compare, Condition, Or
from contacts import erasure, repository
from contacts.db import session_scope
from contacts.errors import InvalidEmail, NotFound
from contacts.models import Role
from contacts.users import SignedIn
from webhooks.admin._common import AdminProblem, decode_cursor, encode_cursor
from webhooks.admin.contacts import _search
from webhooks.dashboard._auth import CsrfChecked, Refused, Viewer, require
from webhooks.dashboard._contact_timeline import (
    Timeline,
    display_name,
    load_timeline,
    sales_may_see,
)
from webhooks.dashboard._render import render
from webhooks.deps import EngineDep, GatewayDep
from webhooks.journeys import UNREACHABLE, JourneyGateway

__all__ = ["PAGE_SIZE", "ContactRow", "router", "search_contacts"]

router = APIRouter()
Marketer = Annotated[SignedIn, Depends(require(Role.marketer))]
ContactId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Text = Annotated[str, Query(max_length=320)]
#: bounded so the name condition (12 spellings) stays within the condition language's length
Name = Annotated[str, Query(max_length=60)]
Cursor = Annotated[str, Query(max_length=100)]
#: contacts per page of the search
PAGE_SIZE = 50
NAME_FIELDS = ("first_name", "last_name", "name")


@dataclass(frozen=True)
class ContactRow:
    id: int
    email: str
    name: str
    tags: list[str]
    score: int
    stage: str
    status: str
    owner: str | None


def _name_condition(name: str) -> Condition:
    spellings = dict.fromkeys((name, name.lower(), name.capitalize(), name.title()))
    return Or(
        tuple(
            Compare(f"contact.{field}", "contains", spelling)
            for field in NAME_FIELDS
            for spelling in spellings
        )
    )


def search_contacts(
    engine: Engine, *, email: str, name: str, tag: str, after: int | None, limit: int = PAGE_SIZE
) -> tuple[list[ContactRow], int | None]:
    """A page of contacts matching every filter given (oldest first), and the id to continue
    after (None on the last page)."""
    found = _search(
        engine,
        email=None,
        tag=tag or None,
        status=None,
        q=email or None,
        where=_name_condition(name).to_text() if name else None,
        after=after,
        limit=limit + 1,
    )
    rows = [
        ContactRow(
            id=c.id,
            email=c.email,
            name=display_name(c),
            tags=list(c.tags),
            score=c.score,
            stage=c.stage,
            status=str(c.status),
            owner=c.owner,
        )
        for c in found[:limit]
        if c.id is not None
    ]
    more = len(found) > limit and bool(rows)
    return rows, rows[-1].id if more else None


@router.get("/contacts")
async def contacts_page(
    viewer: Marketer,
    engine: EngineDep,
    email: Text = "",
    name: Name = "",
    tag: Text = "",
    cursor: Cursor = "",
) -> Response:
    email, name, tag = email.strip(), name.strip(), tag.strip()
    try:
        after = decode_cursor(cursor)
    except AdminProblem:
        after = None  # a cursor we did not make: start again from the first page
    error = None
    try:
        rows, last = await run_in_threadpool(
            lambda: search_contacts(engine, email=email, name=name, tag=tag, after=after)
        )
    except AdminProblem:  # a search the condition language refuses
        rows, last, error = [], None, "This search could not be run. Try fewer characters."
    return render(
        "dashboard/contacts.html",
        viewer=viewer,
        title="Contacts",
        rows=rows,
        q_email=email,
        q_name=name,
        q_tag=tag,
        paged=after is not None,
        error=error,
        next_cursor=encode_cursor(last) if last is not None else None,
    )


def _not_found(viewer: SignedIn) -> Refused:
    # the same answer for "no such contact" and "not yours", so ids cannot be probed
    return Refused("Not your contact", "This contact is not available to you.", viewer)


@router.get("/contacts/{contact_id}")
async def contact_page(
    contact_id: ContactId,
    viewer: Viewer,
    engine: EngineDep,
    gateway: GatewayDep,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    erased: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    def read() -> Timeline | None:
        with session_scope(engine) as session:
            if viewer.role == Role.sales and not sales_may_see(session, contact_id, viewer.email):
                return None
            try:
                return load_timeline(session, contact_id, before_event=before)
            except NotFound:
                return None

    timeline = await run_in_threadpool(read)
    if timeline is None:
        raise _not_found(viewer)
    await _locate(gateway, timeline)
    return render(
        "dashboard/contact.html",
        viewer=viewer,
        title=timeline.name or timeline.contact.email,
        t=timeline,
        may_erase=viewer.role == Role.admin,
        erased=erased,
        error=None,
    )


async def _locate(gateway: JourneyGateway, timeline: Timeline) -> None:
    """Fill in the step each running journey of the timeline is at, or why it is unknown."""
    running = timeline.running_workflows
    steps = await gateway.current_steps(running)
    if steps is None:
        timeline.steps_note = UNREACHABLE
        return
    timeline.steps = steps
    if len(steps) < len(running):
        timeline.steps_note = (
            "not recorded yet (between steps, or started before journeys recorded their step), "
            "or Temporal did not answer in time"
        )


@router.post("/contacts/{contact_id}/erase")
async def erase(
    contact_id: ContactId,
    viewer: CsrfChecked,
    engine: EngineDep,
    gateway: GatewayDep,
    confirm_email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    admin = await require()(viewer)

    def confirmed_erase() -> Timeline | erasure.ErasureResult:
        with session_scope(engine) as session:
            try:
                contact = repository.get_contact(session, contact_id)
            except NotFound:
                raise _not_found(admin) from None
            try:
                typed = repository.normalise_email(confirm_email)
            except InvalidEmail:
                typed = ""
            if erasure.is_erased(contact) or typed != contact.email:
                return load_timeline(session, contact_id, before_event=None)
            return erasure.erase_contact(
                session, contact_id, requested_by=f"dashboard:{admin.email}"
            )

    outcome = await run_in_threadpool(confirmed_erase)
    if isinstance(outcome, Timeline):
        await _locate(gateway, outcome)
        return render(
            "dashboard/contact.html",
            viewer=admin,
            status_code=422,
            title=outcome.name or outcome.contact.email,
            t=outcome,
            may_erase=True,
            erased="",
            error="The address typed does not match this contact's. Nothing was erased.",
        )
    routed = True
    if outcome.unsubscribe_event_id is not None:
        routed = await gateway.route(outcome.unsubscribe_event_id)
    done = "yes" if routed else "later"
    return RedirectResponse(f"/dashboard/contacts/{contact_id}?erased={done}", status_code=303)
