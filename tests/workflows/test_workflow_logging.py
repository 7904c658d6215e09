"""Workflow code logs through ``workflow.logger``; in ``drip dev`` the handler is rich's, which
imports modules lazily. An import inside Temporal's sandbox fails the workflow task (and then
fails it again on every retry), so the worker passes rich through the sandbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.logging import RichHandler
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from contacts import repository
from contacts.db import session_scope
from drip.settings import Settings
from tests.engine_support import journeys, workspace_with
from tests.support import SmtpServer
from workflows.followup import LeadAlertWorkflow
from workflows.lifecycle import SalesPipeline
from workflows.sales_types import LeadAlertResult, lead_alert_workflow_id


@pytest.fixture
def rich_logging() -> Iterator[None]:
    logger = logging.getLogger("temporalio.workflow")
    handler = RichHandler()
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


@pytest.mark.usefixtures("rich_logging")
async def test_a_workflow_that_logs_a_warning_under_rich_completes(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    # chat is asked for but not configured: each delivery logs a warning from the workflow
    workspace = workspace_with(tmp_path, config="sales:\n  email: sales@acme.example\n")
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox):
        with session_scope(engine) as s:
            contact, _ = repository.upsert_contact(s, "ann@example.com", {})
            follow_up = SalesPipeline(workspace.sales).raise_alert(
                s,
                contact,
                key="test",
                reason="hot",
                channels=["email", "chat"],
                now=contact.created_at,
            )
        assert follow_up is not None
        follow_up.escalate_after_hours = None
        run = time_env.client.execute_workflow(
            LeadAlertWorkflow.run,
            follow_up,
            id=lead_alert_workflow_id(follow_up.alert_id),
            task_queue=settings.temporal_task_queue,
            result_type=LeadAlertResult,
        )
        # a failing workflow task is retried forever: fail fast instead of hanging
        result = await asyncio.wait_for(run, timeout=30)
    assert result.outcome == "unacknowledged" and result.reminded
    assert len(smtp.mailbox.to("sales@acme.example")) == 2
