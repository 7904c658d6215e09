"""A broadcast's opens and clicks in the journey engine: a click on the Black Friday broadcast
starts its follow-up campaign (``trigger: {event: click, where: 'properties.broadcast == ...'}``)
and the follow-up's email reaches the SMTP server; an open never signals the send's
``BroadcastWorkflow`` as if it were a journey; scores and stages count the broadcast's opens
and clicks, and a rule can name the broadcast.

Real Temporal (time-skipping), real SMTP, real SQLite. The hits go through the real consumer
(``contacts.hits``) and the router, as the API's hit writer hands them over.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contacts import hits
from contacts.db import session_scope
from contacts.hits import NewHit
from contacts.models import Message, utcnow
from drip.settings import Settings
from emails.links import click_token
from tests.broadcast_support import sent_email
from tests.engine_support import Journeys, journeys, workspace_with
from tests.support import MAIL_CLIENT, SmtpServer
from tests.workflows.idle_workflow import IdleWorkflow
from workflows.scoring import score_reasons

FOLLOW_UP = """\
id: black-friday-follow-up
name: Black Friday follow-up
trigger: {event: click, where: 'properties.broadcast == "black-friday"'}
steps:
  - id: offer
    send_email: {template: tips, subject: "Still thinking about Black Friday?"}
"""

WAITS_FOR_OPEN = """\
id: welcome-wait
name: Welcome that waits for an open
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello}
  - id: seen
    wait_for: {open: hello, timeout: 2d, on_event: thanks, on_timeout: done}
  - id: thanks
    send_email: {template: tips, subject: Thanks for reading}
  - id: done
    exit:
"""

SALES = """\
scoring:
  behaviour:
    - {id: opened, on: open, points: 2}
    - {id: clicked, on: click, points: 5}
    - {id: black-friday-reader, on: open, name: "broadcast:black-friday", points: 3}
    - id: black-friday-buyer
      on: click
      where: 'properties.broadcast == "black-friday"'
      points: 10
stages:
  lead: 'contact.score >= 5'
  mql: 'contact.score >= 20'
"""


async def _hit(d: Journeys, kind: str, message: Message, secret: bytes) -> list[int]:
    """A person's open (or click on the first link) of ``message``, consumed and routed as the
    API's hit writer does; the ids of the events routed."""
    token = message.open_token if kind == "open" else click_token(secret, message.id, 0)
    with session_scope(d.engine) as s:
        hits.insert_hits(s, [NewHit(kind, token, utcnow(), user_agent=MAIL_CLIENT)])
    with session_scope(d.engine) as s:
        done = hits.consume(
            s,
            now=utcnow() + timedelta(seconds=5),  # the click has settled
            classify_user_agent=lambda _: None,
            min_seconds_after_send=0,
        )
    for event_id in done.to_route:
        await d.router.route(event_id)
    return done.to_route


async def test_a_click_on_the_broadcast_starts_its_follow_up_journey(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, FOLLOW_UP)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        ann = d.contact("ann@example.com")
        bob = d.contact("bob@example.com")
        clicked = sent_email(engine, settings.secret(), ann)
        # Bob clicks another broadcast, and only opens this one: neither starts the follow-up
        other = sent_email(
            engine,
            settings.secret(),
            bob,
            campaign_id="broadcast:summer",
            step_id="email",
            workflow_id="broadcast:summer:1",
        )
        opened = sent_email(engine, settings.secret(), bob)
        assert await _hit(d, "click", clicked, settings.secret())
        assert await _hit(d, "click", other, settings.secret())
        assert await _hit(d, "open", opened, settings.secret())

        [enrolment] = d.enrolments()
        assert (enrolment.campaign_id, enrolment.contact_id) == ("black-friday-follow-up", ann)
        await d.result(enrolment.workflow_id)
    assert d.subjects_to("ann@example.com") == ["Still thinking about Black Friday?"]
    assert d.subjects_to("bob@example.com") == []
    [trigger] = d.events(ann, "click")
    assert trigger.properties["broadcast"] == "black-friday"


async def test_a_broadcast_open_never_signals_the_send_workflow(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """The send's workflow id is the message's ``workflow_id``; a running workflow under it (a
    stand-in for ``BroadcastWorkflow``) records every signal it gets in its history. A journey
    waiting for its own email's open is not disturbed by the broadcast's."""
    workspace = workspace_with(tmp_path, WAITS_FOR_OPEN)
    send_id = f"broadcast:black-friday:{uuid.uuid4().hex[:8]}"
    queue = f"idle-{uuid.uuid4()}"
    async with (
        journeys(time_env, settings, engine, workspace, smtp.mailbox) as d,
        Worker(time_env.client, task_queue=queue, workflows=[IdleWorkflow]),
    ):
        send = await time_env.client.start_workflow(IdleWorkflow.run, id=send_id, task_queue=queue)
        ann = d.contact("ann@example.com")
        await d.record(ann, "form", "newsletter")
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        broadcast = sent_email(engine, settings.secret(), ann, workflow_id=send_id)
        routed = await _hit(d, "open", broadcast, settings.secret())
        assert len(routed) == 1
        await _hit(d, "click", broadcast, settings.secret())

        history = await send.fetch_history()
        signals = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        assert signals == []
        state = await d.state(d.enrolment(ann, "welcome-wait").workflow_id)
        assert state.waiting_for and "hello" in state.waiting_for  # still waiting for its own
        await send.signal(IdleWorkflow.finish)
        await send.result()

        # its own email's open still moves it on
        await _hit(d, "open", d.message(ann, "hello"), settings.secret())
        await d.result(d.enrolment(ann, "welcome-wait").workflow_id)
    assert d.subjects_to("ann@example.com") == ["Hello", "Thanks for reading"]


async def test_scores_and_stages_count_a_broadcast_open_and_click(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, sales=SALES)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        ann = d.contact("ann@example.com")
        bob = d.contact("bob@example.com")
        mine = sent_email(engine, settings.secret(), ann)
        summer = sent_email(
            engine,
            settings.secret(),
            bob,
            campaign_id="broadcast:summer",
            step_id="email",
            workflow_id="broadcast:summer:1",
        )
        await _hit(d, "open", mine, settings.secret())
        assert d.get(ann).score == 2 + 3
        assert d.get(ann).stage == "lead"
        await _hit(d, "click", mine, settings.secret())
        await _hit(d, "open", summer, settings.secret())
        await _hit(d, "click", summer, settings.secret())
        with session_scope(engine) as s:
            reasons = sorted(r.reason for r in score_reasons(s, ann))
    assert d.get(ann).score == 2 + 3 + 5 + 10
    assert d.get(ann).stage == "mql"
    assert reasons == [
        "black-friday-buyer: click broadcast:black-friday",
        "black-friday-reader: open broadcast:black-friday",
        "clicked: click broadcast:black-friday",
        "opened: open broadcast:black-friday",
    ]
    # another broadcast earns the general points only
    assert d.get(bob).score == 2 + 5
