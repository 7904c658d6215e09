"""Killing the worker (SIGKILL) mid-journey and starting another never sends anything twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Message, MessageState
from drip.settings import Settings
from tests.e2e.conftest import WorkerProcess, temporal_target
from tests.support import SmtpServer, api_client, copy_workspace
from workflows.client import journey_workflow_id

pytestmark = pytest.mark.e2e

WELCOME = "Welcome to Acme Outdoor, Kim"
REMINDER = "Did you see this, Kim?"


async def _subscribe(settings: Settings, engine: Engine, env: WorkflowEnvironment) -> str:
    async with api_client(settings, load_workspace(settings.workspace), engine, env.client) as http:
        r = await http.post(
            "/forms/newsletter",
            json={"email": "kim@example.com", "first_name": "Kim", "consent": True},
        )
        assert r.status_code == 202
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, "kim@example.com")
        assert contact is not None and contact.id is not None
        return journey_workflow_id("welcome", contact.id)


def _short_waits(settings: Settings, tmp_path: Path) -> Settings:
    root = copy_workspace(tmp_path, {"timeout: 2d": "timeout: 4s"})
    return settings.model_copy(update={"workspace": root})


async def test_killed_while_waiting(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = _short_waits(settings, tmp_path)
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    try:
        worker.start()
        workflow_id = await _subscribe(settings, engine, dev_env)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1, within=60)
        worker.kill()  # the journey now waits on its 4 s timer with no worker alive
        worker.start()
        await dev_env.client.get_workflow_handle(workflow_id).result()
    finally:
        worker.stop()
    assert smtp.mailbox.subjects() == [WELCOME, REMINDER]


async def test_killed_during_the_smtp_transaction(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """The worker dies after sending DATA but before the server's reply: never sent twice."""
    settings = _short_waits(settings, tmp_path)
    smtp.mailbox.delay = 3.0
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    try:
        worker.start()
        workflow_id = await _subscribe(settings, engine, dev_env)
        # The server holds its reply for 3 s after receiving DATA: kill the worker in that gap.
        await smtp.mailbox.wait_for(lambda m: m.data_started == 1, within=60)
        worker.kill()
        smtp.mailbox.delay = 0.0
        worker.start()
        await dev_env.client.get_workflow_handle(workflow_id).result()
    finally:
        worker.stop()
    # The server accepted the welcome once; the retry refused to send it again.
    assert smtp.mailbox.subjects().count(WELCOME) == 1
    assert smtp.mailbox.subjects()[-1] == REMINDER
    with session_scope(engine) as s:
        rows = {m.step_id: m for m in s.exec(select(Message)).all()}
    # interrupted, its own state: listed and counted for an operator to decide on
    assert rows["welcome"].state == MessageState.interrupted
    assert "not resent" in (rows["welcome"].error or "")
    assert rows["reminder"].state == MessageState.sent
