"""An SMTP outage delays mail; it never drops or double-sends it.

The relay is down when the contact subscribes: the send fails, goes back to ``pending`` with the
reason, and Temporal retries it with backoff. Once the relay is back the email arrives, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import Message, MessageState
from drip.settings import Settings
from tests.support import SmtpServer, running_stack
from workflows.client import journey_state

pytestmark = pytest.mark.e2e


def _welcome_row(engine: Engine) -> Message | None:
    with session_scope(engine) as s:
        return s.exec(select(Message).where(Message.step_id == "welcome")).first()


async def _until(check: Callable[[], bool], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_an_outage_delays_the_email_and_it_is_sent_once(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    smtp.stop()  # the relay is down: connections to its port are refused
    async with running_stack(dev_env.client, settings, engine, workspace) as http:
        r = await http.post(
            "/forms/newsletter",
            json={"email": "ola@example.com", "first_name": "Ola", "consent": True},
        )
        assert r.status_code == 202

        def failed_once() -> bool:
            row = _welcome_row(engine)
            # attempts counts when an attempt starts; its reason is written when it fails
            return (
                row is not None
                and row.attempts >= 1
                and row.state == MessageState.pending
                and row.error is not None
            )

        await _until(failed_once)
        row = _welcome_row(engine)
        assert row is not None and row.error and "connect" in row.error.lower()
        assert smtp.mailbox.messages == []

        smtp.start()  # the relay is back; the next retry delivers
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1, within=90)

        workflow_id = row.workflow_id

        async def waiting_for_open() -> bool:
            state = await journey_state(dev_env.client, workflow_id)
            return state.current_step == "wait_for_open"

        deadline = time.monotonic() + 30
        while not await waiting_for_open():
            assert time.monotonic() < deadline, "the journey never moved on to its wait"
            await asyncio.sleep(0.1)

    assert smtp.mailbox.subjects() == ["Welcome to Acme Outdoor, Ola"]
    sent = _welcome_row(engine)
    assert sent is not None and sent.state == MessageState.sent and sent.attempts >= 2
