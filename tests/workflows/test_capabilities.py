"""A campaign using a feature the engine cannot run yet is never started, and the log says why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment
from drip.settings import Settings
from tests.support import copy_workspace
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter

BRANCHING = """\
id: demo-followup
name: Demo follow-up
trigger:
  segment_entered: 'contact.score >= 50'
steps:
  - id: hot
    notify_sales: {message: Hot lead}
"""


async def test_an_unsupported_plan_is_not_started(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = copy_workspace(tmp_path)
    (root / "campaigns" / "demo-followup.yaml").write_text(BRANCHING)
    workspace = load_workspace(root)
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, "dee@example.com")
        assert contact.id is not None
        event, _ = repository.record_event(
            s, contact_id=contact.id, type="segment_entered", name="demo-followup", dedupe_key="d1"
        )
        event_id = event.id
    assert event_id is not None
    deploy_workspace(engine, workspace)
    router = EventRouter(client=time_env.client, engine=engine, settings=settings)
    with caplog.at_level(logging.ERROR, logger="workflows.router"):
        await router.route(event_id)
    with session_scope(engine) as s:
        assert s.exec(select(Enrolment)).all() == []
        assert repository.get_event(s, event_id).routed_at is not None  # not retried forever
    assert "demo-followup" in caplog.text and "trigger segment_entered" in caplog.text
