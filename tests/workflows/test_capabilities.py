"""A campaign using a feature the engine cannot run yet is never started, and the log says why.

Every trigger and step kind of the language runs today, so the plan here is one an older or newer
drip deployed: a stored plan with a step kind this engine does not know."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts import deploys, repository
from contacts.db import session_scope
from contacts.models import Enrolment
from drip.settings import Settings
from tests.support import copy_workspace
from workflows.router import EventRouter

MANUAL = """\
id: demo-followup
name: Demo follow-up
trigger:
  manual: true
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
    (root / "campaigns" / "demo-followup.yaml").write_text(MANUAL)
    plan = load_workspace(root).plans["demo-followup"].to_dict()
    plan["steps"]["hot"]["kind"] = "teleport"
    with session_scope(engine) as s:
        deploys.record_deployment(
            s,
            campaign_id="demo-followup",
            version="v-from-elsewhere",
            status="active",
            trigger_kind="manual",
            trigger_value="",
            plan=plan,
        )
        contact, _ = repository.upsert_contact(s, "dee@example.com")
        assert contact.id is not None
        event, _ = repository.record_event(
            s, contact_id=contact.id, type="enrol", name="demo-followup", dedupe_key="d1"
        )
        event_id = event.id
    assert event_id is not None
    router = EventRouter(client=time_env.client, engine=engine, settings=settings)
    with caplog.at_level(logging.ERROR, logger="workflows.router"):
        await router.route(event_id)
    with session_scope(engine) as s:
        assert s.exec(select(Enrolment)).all() == []
        assert repository.get_event(s, event_id).routed_at is not None  # not retried forever
    assert "demo-followup" in caplog.text and "step hot: teleport" in caplog.text
