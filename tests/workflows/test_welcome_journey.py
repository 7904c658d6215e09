"""The welcome journey on Temporal's time-skipping server: two days pass in milliseconds.

Everything is real except the clock: the form is posted to the API, the email is rendered and sent
to an aiosmtpd server, the open is a GET of the pixel found in the received email. Emails are
counted from what the SMTP server received, not from our tables.
"""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import (
    ContactStatus,
    Enrolment,
    EnrolmentState,
    Event,
    Message,
    MessageState,
)
from drip.settings import Settings
from tests.support import SmtpServer, running_stack, tracked_and_routed
from tests.workflows.recording import maybe_record
from workflows.client import journey_workflow_id

WELCOME = "Welcome to Acme Outdoor, Ann"
TIPS = "Three trail tips our guides swear by"
REMINDER = "Did you see this, Ann?"


async def _let_a_month_pass(env: WorkflowEnvironment) -> None:
    """Skip past every wait in the campaign.

    The journey was started by the API, not through ``env.client.start_workflow``, so awaiting
    its result does not unlock time skipping; sleeping does. The test server only skips while no
    workflow or activity task is outstanding, so a signal already sent is handled first.
    """
    await env.sleep(timedelta(days=31))


async def _journey(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
    *,
    open_it: bool,
) -> int:
    async with running_stack(env.client, settings, engine, workspace) as http:
        response = await http.post(
            "/forms/newsletter",
            json={"email": "Ann@Example.com", "first_name": "Ann", "consent": True},
        )
        assert response.status_code == 202, response.text
        with session_scope(engine) as s:
            contact = repository.get_contact_by_email(s, "ann@example.com")
            assert contact is not None and contact.id is not None
            contact_id = contact.id
        handle = env.client.get_workflow_handle(journey_workflow_id("welcome", contact_id))
        if open_it:
            await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
            html = smtp.mailbox.messages[0].html()
            pixel = re.search(r'src="http://testserver(/t/o/[A-Za-z0-9_-]+\.gif)"', html)
            assert pixel is not None, "no open pixel in the welcome email"
            hit = await http.get(pixel.group(1))
            assert hit.status_code == 200 and hit.headers["content-type"] == "image/gif"
            await tracked_and_routed(engine)  # the open reaches the journey a moment later
        await _let_a_month_pass(env)
        await handle.result()
        await maybe_record(handle, "welcome-opened" if open_it else "welcome-not-opened")
    return contact_id


async def test_no_open_sends_the_reminder_after_two_days(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    contact_id = await _journey(time_env, settings, engine, workspace, smtp, open_it=False)
    assert smtp.mailbox.subjects() == [WELCOME, REMINDER]
    with session_scope(engine) as s:
        sent = s.exec(select(Message).order_by(Message.created_at)).all()  # type: ignore[arg-type]
        enrolment = s.exec(select(Enrolment)).one()
        contact = repository.get_contact(s, contact_id)
    assert [m.step_id for m in sent] == ["welcome", "reminder"]
    assert all(m.state == MessageState.sent for m in sent)
    assert sent[1].sent_at is not None and sent[0].sent_at is not None
    # the reminder came from the two-day timer firing, not from anything else
    history = await time_env.client.get_workflow_handle(
        journey_workflow_id("welcome", contact_id)
    ).fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    fired = [e for e in history.events if e.HasField("timer_fired_event_attributes")]
    assert timers == [2 * 86400] and len(fired) == 1
    assert enrolment.state == EnrolmentState.completed
    assert "engaged" not in contact.tags


async def test_an_open_sends_tips_and_never_the_reminder(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    await _journey(time_env, settings, engine, workspace, smtp, open_it=True)
    assert smtp.mailbox.subjects() == [WELCOME, TIPS]
    assert all(m.recipients == ["ann@example.com"] for m in smtp.mailbox.messages)


async def test_posting_twice_gives_one_contact_and_one_journey(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        for _ in range(2):
            r = await http.post(
                "/forms/newsletter", data={"email": "bo@example.com", "consent": "yes"}
            )
            assert r.status_code == 200 and "Thanks!" in r.text
        await smtp.mailbox.wait_for(lambda m: len(m.messages) >= 1)
        with session_scope(engine) as s:
            enrolments = s.exec(select(Enrolment)).all()
            events = s.exec(select(Event)).all()
        assert len(enrolments) == 1
        # consent is recorded by the first post, and kept (not recorded again) by the second
        assert [e.type for e in events] == ["consent", "form", "form"]
        handle = time_env.client.get_workflow_handle(enrolments[0].workflow_id)
        await _let_a_month_pass(time_env)
        await handle.result()
    assert smtp.mailbox.subjects() == [
        "Welcome to Acme Outdoor, friend",
        "Did you see this, friend?",
    ]


async def test_a_refused_address_is_a_hard_bounce_and_gets_nothing_more(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    smtp.mailbox.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        r = await http.post(
            "/forms/newsletter", json={"email": "gone@example.com", "consent": True}
        )
        assert r.status_code == 202
        await _let_a_month_pass(time_env)
        with session_scope(engine) as s:
            workflow_id = s.exec(select(Enrolment)).one().workflow_id
        result = await time_env.client.get_workflow_handle(workflow_id).result()
    assert smtp.mailbox.messages == []
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, "gone@example.com")
        rows = {m.step_id: m for m in s.exec(select(Message)).all()}
        bounces = s.exec(select(Event).where(Event.type == "bounce")).all()
        enrolment = s.exec(select(Enrolment)).one()
    assert contact is not None and contact.status == ContactStatus.bounced
    assert rows["welcome"].state == MessageState.failed and "550" in (rows["welcome"].error or "")
    # the bounce is routed like an unsubscribe: the journey ends there, no reminder is even tried
    assert set(rows) == {"welcome"}
    assert result["outcome"] == "exited"
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.exited, "bounce")
    assert [
        (b.name, b.properties["code"], b.properties["status"], b.message_id) for b in bounces
    ] == [("hard", 550, "5.1.1", rows["welcome"].id)]
