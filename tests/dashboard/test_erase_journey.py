"""Erasing a contact from the dashboard ends the contact's running journey in Temporal: the app's
own gateway routes the ``unsubscribe`` erasure records to the real workflow (Temporal's
time-skipping server, a worker, an SMTP server), and no further email goes out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.models import EnrolmentState
from drip.settings import Settings
from tests.dashboard.support import form_csrf, make_user, sign_in
from tests.engine_support import Journeys, journeys
from tests.support import SmtpServer
from webhooks.main import create_app

MINUTE = timedelta(minutes=1)


@pytest.fixture
async def j(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> AsyncIterator[Journeys]:
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as stack:
        yield stack


async def test_erasing_a_contact_ends_the_running_journey(
    j: Journeys, settings: Settings, engine: Engine, workspace: Workspace
) -> None:
    ada = await j.form("newsletter", "ada@example.com", first_name="Ada")
    await j.advance(MINUTE)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 1)  # the welcome email
    enrolment = j.enrolment(ada, "welcome")
    assert enrolment.state == EnrolmentState.running

    make_user(engine, "root@example.com", "admin", "Root")
    app = create_app(settings, workspace, engine=engine, temporal=j.env.client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await sign_in(http, "root@example.com")
        url = f"/dashboard/contacts/{ada}"
        csrf = form_csrf((await http.get(url)).text)
        r = await http.post(
            f"{url}/erase", data={"csrf_token": csrf, "confirm_email": "ada@example.com"}
        )
        assert r.status_code == 303
        assert r.headers["location"] == f"{url}?erased=yes"  # routed now, not left to the sweep

    for _ in range(200):
        if j.enrolment(ada, "welcome").state != EnrolmentState.running:
            break
        await asyncio.sleep(0.05)
    ended = j.enrolment(ada, "welcome")
    assert (ended.state, ended.end_reason) == (EnrolmentState.exited, "unsubscribe")
    result = await j.result(ended.workflow_id)  # the workflow itself has finished
    assert "tips" not in result["visited"]
    await j.advance(timedelta(days=30))  # the rest of the campaign's waits: nothing more is sent
    assert len(j.mailbox.messages) == 1
