"""Issue 8's acceptance, end to end on real components: a contact opens and clicks a real email
and visits the pricing page, crosses the score threshold, becomes an MQL, is assigned
round-robin, and the owner gets the alert email (at the aiosmtpd server) and the chat webhook
and the CRM's signed webhook (at a real local HTTPS receiver) exactly once. Without an
acknowledgement a reminder follows after the configured working hours and later an escalation
to the team lead (Temporal's time-skipping server); after an acknowledgement through the signed
link, nothing follows."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import LeadAlert, StageChange
from drip.settings import Settings
from tests.engine_support import Journeys, journeys, workspace_with
from tests.receiver import Server, start_server
from tests.support import SmtpServer, api_client
from tests.workflows.recording import maybe_record
from workflows.outbound import SIGNATURE_HEADER, verify_signature
from workflows.sales_types import LeadAlertResult, lead_alert_workflow_id

HELLO = """\
id: hello
name: Hello
trigger: {form: newsletter}
steps:
  - id: welcome
    send_email: {template: welcome, subject: "Welcome, {{ contact.first_name }}"}
"""

SALES = """\
scoring:
  behaviour:
    - {id: opened, on: open, points: 5}
    - {id: clicked, on: click, points: 10}
    - {id: pricing, on: page, where: 'properties.path == "/pricing"', points: 10}
stages:
  lead: 'contact.score >= 5'
  mql: 'contact.score >= 25'
teams:
  - id: inbound
    lead: "Carol Lead <carol@acme.example>"
    reps:
      - {email: alice@acme.example, name: Alice}
      - {email: bob@acme.example, name: Bob}
follow_up:
  remind_after: 4
  escalate_after: 8
  working_hours:
    {timezone: UTC, days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "23:59"}
"""


@asynccontextmanager
async def sales_stack(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: SmtpServer, tmp_path: Path
) -> AsyncIterator[tuple[Journeys, Server, Workspace, Settings]]:
    """The demo workspace with one campaign, the sales.yaml above, and chat and CRM webhooks
    pointing at a local HTTPS receiver that the outbound guard is told to allow."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = await start_server(ca, "localhost")
    try:
        workspace = workspace_with(
            tmp_path,
            HELLO,
            sales=SALES,
            config=(
                "webhook_hosts: [localhost]\n"
                "sales:\n  email: sales@acme.example\n"
                f"  chat_webhook: https://localhost:{server.port}/chat\n"
                f"  crm_webhook: https://localhost:{server.port}/crm\n"
            ),
        )
        outbound = settings.model_copy(
            update={"outbound_allow_networks": ["127.0.0.1/32"], "outbound_ca_bundle": bundle}
        )
        async with journeys(env, outbound, engine, workspace, smtp.mailbox) as d:
            yield d, server, workspace, outbound
    finally:
        await server.stop()


async def _qualify(d: Journeys, email: str, name: str) -> int:
    """Sign up, get the welcome email, open it, click it, look at the pricing page."""
    contact = await d.form("newsletter", email, first_name=name, country="GB")
    await d.advance(timedelta(minutes=1))
    await d.track("open", contact, "welcome")
    await d.track("click", contact, "welcome")
    assert d.get(contact).stage == "lead"
    await d.record(contact, "page", "Pricing", {"path": "/pricing", "url": "https://acme/pricing"})
    await d.advance(timedelta(minutes=1))
    return contact


async def _settle(server: Server, count: int, within: float = 15) -> None:
    """Wait until the receiver has ``count`` requests (the follow-up delivers asynchronously)."""
    deadline = asyncio.get_running_loop().time() + within
    while len(server.received) < count:
        assert asyncio.get_running_loop().time() < deadline, server.received
        await asyncio.sleep(0.05)


def _alerts(engine: Engine) -> list[LeadAlert]:
    with session_scope(engine) as s:
        return list(s.exec(select(LeadAlert).order_by(col(LeadAlert.created_at))).all())


async def test_an_mql_is_assigned_alerted_once_reminded_and_escalated(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    async with sales_stack(time_env, settings, engine, smtp, tmp_path) as (d, server, _, out):
        ann = await _qualify(d, "ann@example.com", "Ann")
        contact = d.get(ann)
        assert (contact.stage, contact.score, contact.owner) == ("mql", 25, "alice@acme.example")
        # more interest after qualifying: a higher score, but no second alert
        await d.record(ann, "page", "Pricing", {"path": "/pricing"})
        await d.advance(timedelta(minutes=5))
        await smtp.mailbox.wait_for(lambda m: len(m.to("alice@acme.example")) >= 1)
        await _settle(server, 2)
        [alert] = _alerts(engine)
        assert alert.owner == "alice@acme.example" and alert.state == "open"
        [email] = smtp.mailbox.to("alice@acme.example")
        assert "Ann" in email.subject
        with session_scope(engine) as s:
            [change] = s.exec(select(StageChange).where(StageChange.to_stage == "mql")).all()
        assert "contact.score >= 25" in change.reason and "pricing +10" in change.reason
        received = [r.path for r in server.received]
        assert sorted(received) == ["/chat", "/crm"]
        crm = next(r for r in server.received if r.path == "/crm")
        assert verify_signature(
            out.secret(), crm.headers[SIGNATURE_HEADER.lower()], crm.body, now=datetime.now(UTC)
        )
        assert json.loads(crm.body)["contact"]["email"] == "ann@example.com"

        # nobody acknowledges: a reminder to the owner after four working hours ...
        await d.advance(timedelta(hours=4))
        await smtp.mailbox.wait_for(lambda m: len(m.to("alice@acme.example")) >= 2)
        first, reminder = smtp.mailbox.to("alice@acme.example")
        assert first.subject == email.subject and reminder.subject.startswith("Reminder")
        assert smtp.mailbox.to("carol@acme.example") == []
        # ... and the team lead hears of it after eight
        await d.advance(timedelta(hours=4))
        await smtp.mailbox.wait_for(lambda m: len(m.to("carol@acme.example")) >= 1)
        [escalation] = smtp.mailbox.to("carol@acme.example")
        assert "alice@acme.example" in escalation.recipients  # the owner in copy
        assert "Ann" in escalation.subject
        handle = time_env.client.get_workflow_handle(
            lead_alert_workflow_id(alert.id), result_type=LeadAlertResult
        )
        result = await handle.result()
        assert result.outcome == "unacknowledged" and result.reminded and result.escalated
        await maybe_record(handle, "lead-alert-escalated")

        # the next qualified contact goes to the next rep in turn
        bea = await _qualify(d, "bea@example.com", "Bea")
        assert d.get(bea).owner == "bob@acme.example"
        await smtp.mailbox.wait_for(lambda m: len(m.to("bob@acme.example")) >= 1)
        assert len(smtp.mailbox.to("bob@acme.example")) == 1


async def test_an_acknowledged_alert_is_not_reminded(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    async with sales_stack(time_env, settings, engine, smtp, tmp_path) as (d, _, workspace, out):
        await _qualify(d, "cat@example.com", "Cat")
        await smtp.mailbox.wait_for(lambda m: len(m.to("alice@acme.example")) >= 1)
        [email] = smtp.mailbox.to("alice@acme.example")
        found = re.search(r"http://testserver(/sales/ack/[A-Za-z0-9_.\-]+)", email.text())
        assert found, email.text()
        async with api_client(out, workspace, engine, time_env.client) as http:
            page = await http.get(found.group(1))
            assert page.status_code == 200 and "Cat" in page.text
            assert _alerts(engine)[0].state == "open"  # looking is not acknowledging
            done = await http.post(found.group(1))
            assert done.status_code == 200
        [alert] = _alerts(engine)
        assert alert.state == "acknowledged"
        await d.advance(timedelta(hours=10))
        handle = time_env.client.get_workflow_handle(
            lead_alert_workflow_id(alert.id), result_type=LeadAlertResult
        )
        result = await handle.result()
        assert result.outcome == "acknowledged" and not result.reminded
        await maybe_record(handle, "lead-alert-acknowledged")
        assert len(smtp.mailbox.to("alice@acme.example")) == 1
        assert smtp.mailbox.to("carol@acme.example") == []
