"""Driving journeys with real events, on Temporal's time-skipping server.

Events are recorded in the contact database and routed with ``EventRouter``, as the API does
(forms, shop events, tags, manual enrolments, opens and clicks of emails really sent); the
journeys run on a real worker and send to the ``smtp`` fixture's aiosmtpd server. Only the clock
is fake: ``advance`` skips Temporal's time (journeys started through the router do not unlock
time skipping by awaiting their result, so tests sleep).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Enrolment, Event, Message
from drip.settings import Settings
from tests.support import Mailbox, copy_workspace
from workflows.client import journey_state
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter
from workflows.types import JourneyState
from workflows.worker import build_worker


def workspace_with(
    tmp_path: Path, *campaigns: str, config: str = "", sales: str | None = None
) -> Workspace:
    """The demo workspace's config, forms and templates with only these campaigns (YAML text),
    ``config`` appended to workspace.yaml, and ``sales`` as its sales.yaml (none by default:
    an engine test should not also score leads and alert sales people)."""
    root = copy_workspace(tmp_path)
    if sales is not None:
        (root / "sales.yaml").write_text(sales)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    for text in campaigns:
        campaign_id = text.split("id:", 1)[1].split()[0]
        (root / "campaigns" / f"{campaign_id}.yaml").write_text(text)
    if config:  # appended, replacing the demo's own top-level keys of the same names
        path = root / "workspace.yaml"
        ours = {line.split(":")[0] for line in config.splitlines() if line[:1].isalpha()}
        kept, skipping = [], False
        for line in path.read_text().splitlines():
            if line[:1].isalpha():
                skipping = line.split(":")[0] in ours
            if not skipping:
                kept.append(line)
        path.write_text("\n".join(kept) + "\n" + config)
    return load_workspace(root)


def shown(moment: datetime) -> str:
    """A moment as the journey's ``waiting_for`` shows it."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


@dataclass
class Journeys:
    """One test's stack: a worker, a router, the database and the SMTP mailbox."""

    env: WorkflowEnvironment
    engine: Engine
    router: EventRouter
    mailbox: Mailbox

    # --- the clock -------------------------------------------------------------------------

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def advance(self, delta: timedelta) -> None:
        """Let ``delta`` of Temporal time pass; everything due in it runs first."""
        await self.env.sleep(delta)

    async def advance_to(self, moment: datetime) -> None:
        delta = moment - await self.now()
        assert delta > timedelta(0), f"{moment} is already past"
        await self.env.sleep(delta)

    # --- what contacts do ----------------------------------------------------------------

    def contact(self, email: str, *, tags: list[str] | None = None, **fields: Any) -> int:
        """Create (or update) a contact with these fields, and tags without routing them."""
        with session_scope(self.engine) as s:
            contact, _ = repository.upsert_contact(s, email, fields, consent_source="test")
            assert contact.id is not None
            if tags:
                repository.update_contact(s, contact.id, add_tags=tags, source="test")
            return contact.id

    async def record(
        self,
        contact_id: int,
        type_: str,
        name: str = "",
        properties: dict[str, Any] | None = None,
        message_id: str | None = None,
        *,
        route: bool = True,
    ) -> int:
        """Record one event and route it, as the API does (``route=False``: only record it)."""
        with session_scope(self.engine) as s:
            event, _ = repository.record_event(
                s,
                contact_id=contact_id,
                type=type_,
                name=name,
                properties=properties,
                source="test",
                message_id=message_id,
                dedupe_key=f"{type_}:{name}:{uuid.uuid4()}",
            )
            assert event.id is not None
            event_id = event.id
        if route:
            await self.router.route(event_id)
        return event_id

    async def form(self, form_id: str, email: str, **fields: Any) -> int:
        contact_id = self.contact(email, **fields)
        await self.record(contact_id, "form", form_id)
        return contact_id

    async def event(self, contact_id: int, name: str, **properties: Any) -> int:
        return await self.record(contact_id, "event", name, properties)

    async def enrol(self, campaign_id: str, contact_id: int) -> int:
        """A manual enrolment (API, CLI, bulk import)."""
        return await self.record(contact_id, "enrol", campaign_id)

    async def change(
        self,
        contact_id: int,
        *,
        add_tags: Sequence[str] = (),
        add_score: int = 0,
        set_fields: dict[str, Any] | None = None,
    ) -> None:
        """An operator or another system changes the contact; each change is routed."""
        recorded: list[int] = []
        with session_scope(self.engine) as s:
            repository.update_contact(
                s,
                contact_id,
                add_tags=add_tags,
                add_score=add_score,
                set_fields=set_fields,
                score_key=f"test:{uuid.uuid4()}" if add_score else "",
                source="test",
                recorded=recorded,
            )
        for event_id in recorded:
            await self.router.route(event_id)

    async def unsubscribe(self, contact_id: int) -> None:
        """What the one-click unsubscribe route does."""
        with session_scope(self.engine) as s:
            assert repository.set_status(s, contact_id, ContactStatus.unsubscribed)
        await self.record(contact_id, "unsubscribe")

    async def track(self, kind: str, contact_id: int, step_id: str) -> None:
        """An open or a click of the email ``step_id`` sent to the contact (its latest)."""
        message = self.message(contact_id, step_id)
        await self.record(contact_id, kind, step_id, message_id=message.id)

    # --- what happened -------------------------------------------------------------------

    def message(self, contact_id: int, step_id: str) -> Message:
        rows = self.messages(contact_id, step_id)
        assert rows, f"no email of step {step_id} to contact {contact_id}"
        return rows[-1]

    def messages(self, contact_id: int | None = None, step_id: str | None = None) -> list[Message]:
        with session_scope(self.engine) as s:
            stmt = select(Message).order_by(col(Message.created_at))
            if contact_id is not None:
                stmt = stmt.where(Message.contact_id == contact_id)
            if step_id is not None:
                stmt = stmt.where(Message.step_id == step_id)
            return list(s.exec(stmt).all())

    def enrolments(
        self, contact_id: int | None = None, campaign_id: str | None = None
    ) -> list[Enrolment]:
        with session_scope(self.engine) as s:
            return list(
                repository.list_enrolments(s, contact_id=contact_id, campaign_id=campaign_id)
            )

    def enrolment(self, contact_id: int, campaign_id: str) -> Enrolment:
        [row] = self.enrolments(contact_id, campaign_id)
        return row

    def get(self, contact_id: int) -> Contact:
        with session_scope(self.engine) as s:
            return repository.get_contact(s, contact_id)

    def events(self, contact_id: int, type_: str) -> list[Event]:
        with session_scope(self.engine) as s:
            stmt = (
                select(Event)
                .where(Event.contact_id == contact_id, Event.type == type_)
                .order_by(col(Event.id))
            )
            return list(s.exec(stmt).all())

    async def finish(self, days: int = 60) -> list[Enrolment]:
        """Skip ``days`` of time, then wait for every journey to end."""
        await self.advance(timedelta(days=days))
        for e in self.enrolments():
            await self.result(e.workflow_id)
        return self.enrolments()

    async def state(self, workflow_id: str) -> JourneyState:
        return await journey_state(self.env.client, workflow_id)

    async def result(self, workflow_id: str) -> dict[str, Any]:
        """A finished journey's result; fails fast (instead of hanging) if it still runs."""
        handle = self.env.client.get_workflow_handle(workflow_id)
        result: dict[str, Any] = await asyncio.wait_for(handle.result(), timeout=15)
        return result

    def subjects_to(self, address: str) -> list[str]:
        return [m.subject for m in self.mailbox.to(address)]


@asynccontextmanager
async def journeys(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    mailbox: Mailbox,
) -> AsyncIterator[Journeys]:
    """The workspace deployed and a journey worker running on the test's task queue."""
    deploy_workspace(engine, workspace)
    router = EventRouter(
        client=env.client,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )
    async with build_worker(env.client, settings=settings, engine=engine, workspace=workspace):
        yield Journeys(env=env, engine=engine, router=router, mailbox=mailbox)
