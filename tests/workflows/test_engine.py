"""The engine under the conditions that break naive ones: duplicate, late and racing events,
goals and exits at any point, filters, long loops across continue-as-new, and calls to the
outside. Real Temporal (time-skipping), real SMTP, real SQLite; counted at the SMTP server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.schedule import zone
from contacts import repository
from contacts.db import session_scope
from contacts.models import Event, Message
from drip.settings import Settings
from tests.engine_support import journeys, workspace_with
from tests.receiver import start_server
from tests.support import SmtpServer
from tests.workflows.recording import maybe_record
from workflows.client import control_journey, journey_state, journey_workflow_id
from workflows.journey import JourneyWorkflow
from workflows.outbound import SIGNATURE_HEADER, verify_signature
from workflows.types import SIGNAL_EVENT, JourneyInput, JourneyResult, JourneySignal

OPEN_OR_NOT = """\
id: race
name: Race
trigger: {form: newsletter}
steps:
  - id: first
    send_email: {template: welcome, subject: First}
  - id: seen
    wait_for: {open: first, timeout: 2d, on_event: thanks, on_timeout: nudge}
  - id: thanks
    send_email: {template: tips, subject: Thanks for reading}
    next: done
  - id: nudge
    send_email: {template: cart-reminder, subject: Nudge}
  - id: done
    exit:
"""


async def test_an_open_racing_the_send_and_its_duplicates_count_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    smtp.mailbox.delay = 1.0  # the send activity is still in SMTP DATA when the open lands
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, OPEN_OR_NOT), smtp.mailbox
    ) as d:
        ada = d.contact("ada@example.com")
        await d.record(ada, "form", "newsletter")
        await smtp.mailbox.wait_for(lambda m: m.data_started == 1)
        first = d.message(ada, "first")
        assert first is not None and first.state == "sending"  # really mid-send
        opened = await d.record(ada, "open", message_id=first.id, route=False)
        await d.router.route(opened)
        # the same event delivered again (a retried route), and a second open of the message
        handle = time_env.client.get_workflow_handle(first.workflow_id)
        await handle.signal(
            SIGNAL_EVENT, JourneySignal(event_id=opened, type="open", message_id=first.id)
        )
        await d.record(ada, "open", message_id=first.id)
        [enrolment] = await d.finish()
    assert smtp.mailbox.subjects() == ["First", "Thanks for reading"]
    assert enrolment.state == "completed"


async def test_a_click_without_an_open_counts_as_opened(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """Images blocked: the click's signal comes first and no open ever does."""
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, OPEN_OR_NOT), smtp.mailbox
    ) as d:
        bo = d.contact("bo@example.com")
        await d.record(bo, "form", "newsletter")
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        first = d.message(bo, "first")
        assert first is not None
        await d.record(bo, "click", message_id=first.id)
        await d.finish()
    assert smtp.mailbox.subjects() == ["First", "Thanks for reading"]


CART = """\
id: cart
name: Cart
trigger: {event: cart_abandoned}
goal:
  event: purchase
  where: 'properties.total > 10'
steps:
  - id: wait1
    wait: {duration: 1d}
  - id: one
    send_email: {template: welcome, subject: Your cart}
  - id: wait2
    wait: {duration: 2d}
  - id: two
    send_email: {template: cart-reminder, subject: Last chance}
"""


async def test_the_goal_ends_the_journey_mid_wait_and_counts_a_conversion(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, CART), smtp.mailbox
    ) as d:
        cy = d.contact("cy@example.com")
        await d.record(cy, "event", "cart_abandoned")
        await time_env.sleep(timedelta(days=1, hours=1))
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        await d.record(cy, "event", "purchase", {"total": 5})  # below the goal's filter
        await asyncio.sleep(0.5)
        [running] = d.enrolments()
        assert running.state == "running"
        await d.record(cy, "event", "purchase", {"total": 50})
        [enrolment] = await d.finish()
        await maybe_record(time_env.client.get_workflow_handle(enrolment.workflow_id), "goal")
    assert smtp.mailbox.subjects() == ["Your cart"]
    assert (enrolment.state, enrolment.end_reason) == ("converted", "goal")
    with session_scope(engine) as s:
        conversions = s.exec(select(Event).where(Event.type == "conversion")).all()
    assert [(c.name, c.contact_id) for c in conversions] == [("cart", cy)]


NURTURE = """\
id: nurture
name: Nurture
trigger: {tag_added: lead}
audience: 'not has_tag("customer")'
exit_when: ['has_tag("customer")']
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello lead}
  - id: pause
    wait: {duration: 3d}
  - id: again
    send_email: {template: tips, subject: Still there?}
"""


async def test_tags_trigger_and_an_exit_rule_ends_the_journey_when_it_becomes_true(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, NURTURE), smtp.mailbox
    ) as d:
        dee = d.contact("dee@example.com")
        buyer = d.contact("buyer@example.com")
        await d.change(buyer, add_tags=["customer"])
        await d.change(buyer, add_tags=["lead"])  # outside the audience: never enrolled
        await d.change(dee, add_tags=["lead"])
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        await d.change(dee, add_tags=["customer"])
        [enrolment] = await d.finish()
        await maybe_record(time_env.client.get_workflow_handle(enrolment.workflow_id), "exit")
    assert smtp.mailbox.subjects() == ["Hello lead"]
    assert [m.recipients for m in smtp.mailbox.messages] == [["dee@example.com"]]
    assert (enrolment.state, enrolment.end_reason) == ("exited", 'has_tag("customer")')


WAIT_FOR_BOOTS = """\
id: boots
name: Boots
trigger: {form: newsletter}
steps:
  - id: ask
    wait_for:
      event: purchase
      where: 'properties.category == "boots"'
      timeout: 5d
      on_event: thanks
      on_timeout: offer
  - id: thanks
    send_email: {template: tips, subject: Enjoy your boots}
    next: done
  - id: offer
    send_email: {template: cart-reminder, subject: Boots on sale}
  - id: done
    exit:
"""


async def test_wait_for_counts_only_events_that_pass_its_filter(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, WAIT_FOR_BOOTS)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        socks, boots = d.contact("socks@example.com"), d.contact("boots@example.com")
        for who in (socks, boots):
            await d.record(who, "form", "newsletter")
        await d.record(socks, "event", "purchase", {"category": "socks"})
        await d.record(boots, "event", "purchase", {"category": "boots"})
        await d.finish()
    assert sorted((m.recipients[0], m.subject) for m in smtp.mailbox.messages) == [
        ("boots@example.com", "Enjoy your boots"),
        ("socks@example.com", "Boots on sale"),
    ]


LOOP = """\
id: forever
name: Forever
trigger: {form: newsletter}
steps:
  - id: tick
    wait: {duration: 1d}
  - id: point
    update_contact: {add_score: 1}
  - id: again
    goto: {step: tick, max_times: 40}
  - id: bye
    send_email: {template: welcome, subject: Forty days}
"""


async def test_a_long_loop_continues_as_new_and_keeps_its_state(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, LOOP)
    plan = workspace.plans["forever"]
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        eve = d.contact("eve@example.com")
        started = await d.record(eve, "form", "newsletter", route=False)
        workflow_id = journey_workflow_id("forever", eve)
        with session_scope(engine) as s:
            repository.record_enrolment(
                s,
                campaign_id="forever",
                campaign_version=plan.version,
                contact_id=eve,
                workflow_id=workflow_id,
            )
        handle = await time_env.client.start_workflow(
            JourneyWorkflow.run,
            JourneyInput(plan=plan, contact_id=eve, history_bound=60),
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
            start_signal=SIGNAL_EVENT,
            start_signal_args=[JourneySignal(event_id=started, type="form", name="newsletter")],
        )
        result: JourneyResult = await handle.result()
        description = await handle.describe()
        await maybe_record(handle, "loop-continued")
    # the loop body once, then once per each of 40 jumps back; the visited list is only the tail
    assert result.visited[-4:] == ["tick", "point", "again", "bye"]
    assert smtp.mailbox.subjects() == ["Forty days"]
    assert description.run_id != handle.first_execution_run_id  # it did continue as new
    history = await time_env.client.get_workflow_handle(workflow_id).fetch_history()
    assert len(history.events) < 90  # the last run's history stays near the bound
    with session_scope(engine) as s:
        contact = repository.get_contact(s, eve)
    assert contact.score == 41  # once per visit, across runs


TELL = """\
id: tell
name: Tell sales
trigger: {form: newsletter}
steps:
  - id: alert
    notify_sales:
      message: '{{ contact.first_name }} is hot'
      via: [email, chat]
  - id: crm
    webhook:
      url: https://localhost:{port}/hooks/crm
      body: {list: hot}
"""


async def test_sales_hear_by_email_and_chat_and_the_crm_gets_a_signed_webhook(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = await start_server(ca, "localhost")
    try:
        workspace = workspace_with(
            tmp_path,
            TELL.replace("{port}", str(server.port)),
            config=(
                "webhook_hosts: [localhost]\n"
                "sales:\n  email: sales@acme.example\n"
                f"  chat_webhook: https://localhost:{server.port}/chat\n"
            ),
        )
        outbound = settings.model_copy(
            update={"outbound_allow_networks": ["127.0.0.1/32"], "outbound_ca_bundle": bundle}
        )
        async with journeys(time_env, outbound, engine, workspace, smtp.mailbox) as d:
            fay = d.contact("fay@example.com", first_name="Fay")
            await d.record(fay, "form", "newsletter")
            [enrolment] = await d.finish(days=1)
    finally:
        await server.stop()
    assert enrolment.state == "completed"
    # the step raised a lead alert; its follow-up delivered it (no sales.yaml: the team inbox)
    # (a reminder and an escalation may follow within the day, by the working hours at the
    # time the test runs)
    [alert] = [m for m in smtp.mailbox.to("sales@acme.example") if m.subject.startswith("New")]
    assert alert.subject == "New lead: Fay, score 0"
    assert "tell/alert: Fay is hot" in " ".join(alert.text().split())
    by_path = {r.path: r for r in server.received}
    assert set(by_path) == {"/chat", "/hooks/crm"}
    assert "Fay is hot" in json.loads(by_path["/chat"].body)["text"]
    crm = by_path["/hooks/crm"]
    payload = json.loads(crm.body)
    assert payload["contact"]["email"] == "fay@example.com"
    assert payload["data"] == {"list": "hot"}
    assert verify_signature(
        settings.secret(),
        crm.headers[SIGNATURE_HEADER.lower()],
        crm.body,
        now=datetime.now(UTC),
    )
    with session_scope(engine) as s:
        timeline = {(e.type, e.name) for e in s.exec(select(Event)).all()}
    assert {("sales_alert", "email"), ("sales_alert", "chat"), ("webhook", "crm")} <= timeline


async def test_a_journey_waits_out_a_paused_operator_and_can_be_cancelled(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, NURTURE), smtp.mailbox
    ) as d:
        gus, hal = d.contact("gus@example.com"), d.contact("hal@example.com")
        for who in (gus, hal):
            await d.change(who, add_tags=["lead"])
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)
        gus_id, hal_id = (journey_workflow_id("nurture", who) for who in (gus, hal))
        assert await control_journey(time_env.client, gus_id, "pause")
        assert await control_journey(time_env.client, hal_id, "cancel", "asked by sales")
        await time_env.sleep(timedelta(days=10))
        state = await journey_state(time_env.client, gus_id)
        assert state.paused and state.waiting_for == "paused by an operator"
        assert len(smtp.mailbox.messages) == 2  # the 3-day wait is long over; nothing sent
        assert await control_journey(time_env.client, gus_id, "resume")
        enrolments = {e.contact_id: e for e in await d.finish()}
    assert [m.subject for m in smtp.mailbox.to("gus@example.com")] == [
        "Hello lead",
        "Still there?",
    ]
    assert [m.subject for m in smtp.mailbox.to("hal@example.com")] == ["Hello lead"]
    assert enrolments[gus].state == "completed"
    assert (enrolments[hal].state, enrolments[hal].end_reason) == ("cancelled", "asked by sales")


WINDOWED = """\
id: polite
name: Polite
trigger: {form: newsletter}
send_window: {days: [sat], start: "10:00", end: "11:00"}
steps:
  - id: hello
    send_email: {template: welcome, subject: Saturday morning}
  - id: soon
    wait: {until_time: "07:15"}
  - id: early
    send_email: {template: tips, subject: Not before the window}
"""


async def test_sends_wait_for_the_window_in_the_contacts_own_zone(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, WINDOWED)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        tokyo = d.contact("tokyo@example.com", timezone="Asia/Tokyo")
        typo = d.contact("typo@example.com", timezone="Mars/Base")  # falls back to UTC
        for who in (tokyo, typo):
            await d.record(who, "form", "newsletter")
        enrolments = await d.finish(days=20)
        await maybe_record(
            time_env.client.get_workflow_handle(enrolments[0].workflow_id), "send-window"
        )
    assert sorted(smtp.mailbox.subjects()) == sorted(
        ["Saturday morning", "Not before the window"] * 2
    )
    with session_scope(engine) as s:
        rows = s.exec(select(Message)).all()
    for row in rows:
        tz = zone("Asia/Tokyo" if row.contact_id == tokyo else "UTC")
        local = row.created_at.astimezone(tz)
        # reserved (sent) inside the window; the 07:15 wait then ends before the next window,
        # which holds the second email until the next Saturday 10:00
        assert local.strftime("%a") == "Sat" and "10:00" <= f"{local:%H:%M}" < "11:00", local
    by_contact = {
        who: sorted(r.created_at for r in rows if r.contact_id == who) for who in (tokyo, typo)
    }
    for first, second in by_contact.values():
        assert timedelta(days=6) < second - first < timedelta(days=8)
