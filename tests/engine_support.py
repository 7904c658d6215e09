"""Driving journeys the way production does, without the HTTP layer: contacts and events are
recorded in the database and routed by the real EventRouter to a real worker on Temporal."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment, Message
from drip.settings import Settings
from tests.support import copy_workspace
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter
from workflows.worker import build_worker


def workspace_with(tmp_path: Path, *campaigns: str, config: str = "") -> Workspace:
    """The demo workspace's config, forms and templates with only these campaigns (YAML text),
    and ``config`` appended to workspace.yaml."""
    root = copy_workspace(tmp_path)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    for text in campaigns:
        campaign_id = text.split("id:", 1)[1].split()[0]
        (root / "campaigns" / f"{campaign_id}.yaml").write_text(text)
    if config:
        path = root / "workspace.yaml"
        path.write_text(path.read_text() + config)
    return load_workspace(root)


@dataclass
class Driver:
    env: WorkflowEnvironment
    engine: Engine
    router: EventRouter

    def contact(self, email: str, **fields: Any) -> int:
        with session_scope(self.engine) as s:
            contact, _ = repository.upsert_contact(s, email, fields)
            assert contact.id is not None
            return contact.id

    def record(
        self,
        contact_id: int,
        type: str,
        name: str = "",
        properties: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> int:
        with session_scope(self.engine) as s:
            event, _ = repository.record_event(
                s,
                contact_id=contact_id,
                type=type,
                name=name,
                properties=properties,
                message_id=message_id,
                dedupe_key=uuid.uuid4().hex,
                source="test",
            )
            assert event.id is not None
            return event.id

    async def event(
        self,
        contact_id: int,
        type: str,
        name: str = "",
        properties: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> int:
        """Record and route one event, as the API does."""
        event_id = self.record(contact_id, type, name, properties, message_id)
        await self.router.route(event_id)
        return event_id

    async def update(self, contact_id: int, **changes: Any) -> None:
        """Change a contact as the admin API would, routing the change events it records."""
        recorded: list[int] = []
        with session_scope(self.engine) as s:
            repository.update_contact(s, contact_id, source="test", recorded=recorded, **changes)
        for event_id in recorded:
            await self.router.route(event_id)

    def message(self, step_id: str, contact_id: int | None = None) -> Message | None:
        with session_scope(self.engine) as s:
            query = select(Message).where(Message.step_id == step_id)
            if contact_id is not None:
                query = query.where(Message.contact_id == contact_id)
            return s.exec(query.order_by(col(Message.created_at))).first()

    def enrolments(self) -> list[Enrolment]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(Enrolment).order_by(col(Enrolment.id))).all())

    async def finish(self, days: int = 60) -> list[Enrolment]:
        """Skip ``days`` of time, then wait for every journey to end."""
        await self.env.sleep(timedelta(days=days))
        for e in self.enrolments():
            await self.env.client.get_workflow_handle(e.workflow_id).result()
        return self.enrolments()


@asynccontextmanager
async def driving(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, workspace: Workspace
) -> AsyncIterator[Driver]:
    """The workspace deployed and a worker running: record and route events through the
    returned driver."""
    deploy_workspace(engine, workspace)
    router = EventRouter(
        client=env.client,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
    )
    async with build_worker(env.client, settings=settings, engine=engine, workspace=workspace):
        yield Driver(env=env, engine=engine, router=router)
