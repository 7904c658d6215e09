"""``deliver_lead_alert`` against real receivers: the aiosmtpd server of the ``smtp`` fixture and
an HTTPS receiver on 127.0.0.1 (trustme CA) for the chat and CRM webhooks. No mocks.

The activity is called as a method (it uses no ``activity.`` API), as the follow-up workflow's
worker would run it; what counts is what arrived at the SMTP server and the receiver.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from campaigns.schema import SalesConfig
from campaigns.workspace import Workspace
from contacts import alerts
from contacts.db import session_scope
from contacts.models import Event, SalesTeam
from drip.settings import Settings
from emails.errors import TransientSendError
from emails.links import verify_alert_ack_token
from emails.sales_alert import alert_message_id
from emails.sender import SmtpTransport
from tests.contacts.test_alerts import make_lead
from tests.engine_support import workspace_with
from tests.receiver import Server, start_server
from tests.support import EXAMPLES, SmtpServer
from workflows.alerts import SalesActivities
from workflows.outbound import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    OutboundRetryable,
    verify_signature,
)
from workflows.positions import CAMPAIGN, STEP, ensure_search_attributes
from workflows.sales_types import AlertDeliveryInput, AlertDeliveryResult

ALL = ["email", "chat", "crm"]
LOOPBACK = ["127.0.0.1/32", "::1/128"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def receiver(ca: trustme.CA) -> AsyncIterator[Server]:
    server = await start_server(ca, "localhost")
    yield server
    await server.stop()


@pytest.fixture
def outbound(settings: Settings, ca: trustme.CA, tmp_path: Path) -> Settings:
    """Settings that trust the test CA and let allowlisted hosts resolve to loopback."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return settings.model_copy(
        update={"outbound_allow_networks": LOOPBACK, "outbound_ca_bundle": bundle}
    )


@pytest.fixture
async def transport(settings: Settings) -> AsyncIterator[SmtpTransport]:
    smtp_transport = SmtpTransport(settings)
    yield smtp_transport
    await smtp_transport.close()


def sales_workspace(
    where: Path,
    receiver: Server,
    *,
    email: str | None = "Acme Sales <sales@acme.example>",
    chat: str | None = "/chat",
    crm: str | None = "/crm",
) -> Workspace:
    """The demo workspace (its sales.yaml: team uk led by Priya, rep Tom Baker) with these
    sales channels in workspace.yaml."""
    lines = ["webhook_hosts: [localhost]", "sales:"]
    if email:
        lines.append(f'  email: "{email}"')
    if chat:
        lines.append(f"  chat_webhook: {receiver.url(chat)}")
    if crm:
        lines.append(f"  crm_webhook: {receiver.url(crm)}")
    if len(lines) == 2:  # none: replaces the demo's own sales.email
        lines[1] = "sales: {}"
    return workspace_with(
        where, config="\n".join(lines) + "\n", sales=(EXAMPLES / "sales.yaml").read_text()
    )


async def deliver(
    activities: SalesActivities, alert_id: str, kind: str = "alert", channels: list[str] = ALL
) -> AlertDeliveryResult:
    return await activities.deliver_lead_alert(
        AlertDeliveryInput(alert_id=alert_id, kind=kind, channels=channels)
    )


def received(server: Server) -> dict[str, Any]:
    return {r.path: r for r in server.received}


def sales_events(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as s:
        rows = s.exec(select(Event).where(Event.type == "sales_alert")).all()
        return sorted((e.name, e.dedupe_key) for e in rows)


async def test_an_alert_reaches_the_owner_by_email_chat_and_the_crm(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    workspace = sales_workspace(tmp_path, receiver)
    contact_id, alert_id = make_lead(engine)
    activities = SalesActivities(outbound, engine, workspace, transport)

    result = await deliver(activities, alert_id)

    assert result == AlertDeliveryResult(delivered=ALL, problems=[], skipped=False)
    # the email: to the owner by name, an internal email with the lead and the way to acknowledge
    [mail] = smtp.mailbox.messages
    assert mail.recipients == ["tom@acme.example"]
    assert mail.message["To"] == "Tom Baker <tom@acme.example>"
    assert mail.subject == "New lead: Jane Doe (Acme Ltd), score 42"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert mail.message["Message-ID"] == f"<{alert_message_id(alert_id, 'alert')}@acme.example>"
    assert mail.message["List-Unsubscribe"] is None and mail.message["Cc"] is None
    assert mail.message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    html, text = mail.html(), mail.text()
    token = next(part for part in text.split() if "/sales/ack/" in part).strip("()")
    assert token.startswith("http://testserver/sales/ack/")
    assert verify_alert_ack_token(outbound.secret(), token.rsplit("/", 1)[1]) == alert_id
    for body in (html, text):
        assert token in body
        assert "rule-2: page /pricing-2" in body and "+10" in body  # score reasons with points
        assert "+15 decision-maker" in body  # the sales.yaml fit rule that holds (a "Head of")
        assert "mql: contact.score &gt;= 25 held" in body or "mql: contact.score >= 25" in body
        assert "Acme Ltd" in body and "+44 20 7946 0000" in body and "Head of Outdoor" in body
        assert "path /pricing" in body and "welcome" in body  # recent activity, campaigns
        assert "UK and Ireland (uk)" in body

    # the chat: Slack-compatible, with the same acknowledge link on a button
    by_path = received(receiver)
    assert set(by_path) == {"/chat", "/crm"}
    chat = json.loads(by_path["/chat"].body)
    assert chat["text"].startswith("New lead: Jane Doe (Acme Ltd), score 42")
    [section] = chat["blocks"]
    assert section["type"] == "section" and "Tom Baker" in section["text"]["text"]
    assert section["accessory"]["url"] == token

    # the CRM: the lead as signed JSON, keyed by the alert
    crm = by_path["/crm"]
    payload = json.loads(crm.body)
    assert payload["type"] == "lead.qualified"
    assert payload["alert"]["id"] == alert_id and payload["alert"]["team"] == "uk"
    assert payload["alert"]["owner"] == "tom@acme.example"
    assert payload["contact"] == {
        "id": contact_id,
        "email": "jane@example.com",
        "fields": payload["contact"]["fields"],
        "tags": [],
        "score": 42,
        "stage": "mql",
        "owner": "tom@acme.example",
    }
    assert payload["contact"]["fields"]["company"] == "Acme Ltd"
    assert crm.headers[IDEMPOTENCY_HEADER.lower()] == alert_id
    assert verify_signature(
        outbound.secret(), crm.headers[SIGNATURE_HEADER.lower()], crm.body, now=datetime.now(UTC)
    )
    assert sales_events(engine) == sorted(
        (channel, f"sales-alert:{alert_id}:alert:{channel}") for channel in ALL
    )


async def test_delivering_twice_sends_once_per_channel(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    activities = SalesActivities(outbound, engine, sales_workspace(tmp_path, receiver), transport)
    _, alert_id = make_lead(engine)
    first = await deliver(activities, alert_id)
    again = await deliver(activities, alert_id, channels=[*ALL, "email"])
    assert first.delivered == again.delivered == ALL
    assert len(smtp.mailbox.messages) == 1
    assert len(receiver.received) == 2


async def test_a_retry_after_a_chat_outage_does_not_repeat_the_email(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    down = sales_workspace(tmp_path / "down", receiver, chat="/status/503", crm=None)
    _, alert_id = make_lead(engine)
    with pytest.raises(OutboundRetryable):  # Temporal retries the activity
        await deliver(SalesActivities(outbound, engine, down, transport), alert_id)
    assert len(smtp.mailbox.messages) == 1
    back = sales_workspace(tmp_path / "back", receiver, crm=None)
    result = await deliver(
        SalesActivities(outbound, engine, back, transport), alert_id, channels=["email", "chat"]
    )
    assert result.delivered == ["email", "chat"]
    assert len(smtp.mailbox.messages) == 1
    assert [r.path for r in receiver.received] == ["/status/503", "/chat"]


async def test_smtp_trouble_is_retried_and_a_refusal_is_a_problem(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    activities = SalesActivities(outbound, engine, sales_workspace(tmp_path, receiver), transport)
    _, alert_id = make_lead(engine)
    smtp.stop()
    with pytest.raises(TransientSendError):
        await deliver(activities, alert_id, channels=["email"])
    smtp.start()
    smtp.mailbox.refuse["tom@acme.example"] = "550 5.1.1 no such user"
    result = await deliver(activities, alert_id, channels=["email", "chat"])
    assert result.delivered == ["chat"]
    [problem] = result.problems
    assert "tom@acme.example refused" in problem and "550" in problem
    assert sales_events(engine) == [("chat", f"sales-alert:{alert_id}:alert:chat")]


async def test_a_reminder_goes_to_the_owner_until_the_alert_is_acknowledged(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    activities = SalesActivities(outbound, engine, sales_workspace(tmp_path, receiver), transport)
    _, alert_id = make_lead(engine)
    reminded = await deliver(activities, alert_id, "reminder")
    assert reminded.delivered == ["email", "chat"]  # the CRM heard of the lead once, not again
    [mail] = smtp.mailbox.messages
    assert mail.subject == "Reminder: Jane Doe (Acme Ltd), score 42, waiting for you"
    assert mail.recipients == ["tom@acme.example"]
    original = f"<{alert_message_id(alert_id, 'alert')}@acme.example>"
    assert mail.message["In-Reply-To"] == original == mail.message["References"]
    assert [r.path for r in receiver.received] == ["/chat"]
    with session_scope(engine) as s:
        assert alerts.get_alert(s, alert_id).reminded_at is not None
        alerts.acknowledge_alert(s, alert_id, "tom@acme.example")

    for kind in ("reminder", "escalation"):
        skipped = await deliver(activities, alert_id, kind)
        assert skipped == AlertDeliveryResult(skipped=True)
    assert len(smtp.mailbox.messages) == 1 and len(receiver.received) == 1
    with session_scope(engine) as s:
        assert alerts.get_alert(s, alert_id).escalated_at is None


async def test_an_escalation_goes_to_the_team_lead_with_the_owner_in_cc(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    activities = SalesActivities(outbound, engine, sales_workspace(tmp_path, receiver), transport)
    _, alert_id = make_lead(engine)
    result = await deliver(activities, alert_id, "escalation", ["email"])
    assert result.delivered == ["email"]
    [mail] = smtp.mailbox.messages
    assert mail.message["To"] == "Priya Shah <priya@acme.example>"  # sales.yaml's team lead
    assert mail.message["Cc"] == "Tom Baker <tom@acme.example>"
    assert sorted(mail.recipients) == ["priya@acme.example", "tom@acme.example"]
    assert mail.subject == "Escalation: Jane Doe (Acme Ltd), score 42, not acknowledged"
    assert "has not been acknowledged" in mail.text()
    with session_scope(engine) as s:
        assert alerts.get_alert(s, alert_id).escalated_at is not None
        # a team in the database (changed through the API) wins over sales.yaml
        s.add(SalesTeam(id="uk", name="UK", lead="Boss, The <boss@acme.example>"))
    _, other = make_lead(engine, "ian@example.com")
    await deliver(activities, other, "escalation", ["email"])
    assert smtp.mailbox.messages[-1].message["To"] == '"Boss, The" <boss@acme.example>'


async def test_unowned_alerts_go_to_the_team_inbox_and_missing_channels_are_named(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    bare = sales_workspace(tmp_path / "bare", receiver, chat=None, crm=None)
    _, alert_id = make_lead(engine, owner=None, team_id=None)
    result = await deliver(SalesActivities(outbound, engine, bare, transport), alert_id)
    assert result.delivered == ["email"]
    assert [m.message["To"] for m in smtp.mailbox.messages] == ["Acme Sales <sales@acme.example>"]
    assert result.problems == [
        "no sales chat is configured (workspace.yaml: sales.chat_webhook)",
        "no sales crm is configured (workspace.yaml: sales.crm_webhook)",
    ]
    nothing = sales_workspace(tmp_path / "nothing", receiver, email=None, chat=None, crm=None)
    _, lonely = make_lead(engine, "ian@example.com", owner=None, team_id=None)
    result = await deliver(
        SalesActivities(outbound, engine, nothing, transport), lonely, "escalation"
    )
    assert result.delivered == [] and "workspace.yaml: sales.email" in result.problems[0]
    assert len(smtp.mailbox.messages) == 1


async def test_contact_data_cannot_inject_html_headers_or_chat_markup(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    activities = SalesActivities(outbound, engine, sales_workspace(tmp_path, receiver), transport)
    fields = {
        "first_name": "<script>alert(1)</script>",
        "last_name": "Doe\r\nBcc: victim@example.com",
        "company": '<a href="https://evil.example">Acme</a> <!channel>',
    }
    _, alert_id = make_lead(engine, fields=fields, reason="<img src=x onerror=alert(1)>")
    result = await deliver(activities, alert_id, channels=["email", "chat"])
    assert result.delivered == ["email", "chat"]
    [mail] = smtp.mailbox.messages
    assert mail.message["Bcc"] is None and mail.recipients == ["tom@acme.example"]
    assert mail.subject.startswith("New lead: <script>alert(1)</script> Doe Bcc: victim@")
    html = mail.html()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="https://evil.example"' not in html
    chat = json.loads(received(receiver)["/chat"].body)
    shown = chat["text"] + chat["blocks"][0]["text"]["text"]
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown
    assert "<script>" not in shown


async def test_webhook_urls_off_the_allowlist_or_into_our_network_are_refused(
    settings: Settings,
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
) -> None:
    _, alert_id = make_lead(engine)
    # localhost is allowlisted, but without outbound_allow_networks it is a private address
    workspace = sales_workspace(tmp_path / "private", receiver)
    result = await deliver(
        SalesActivities(settings, engine, workspace, transport), alert_id, channels=["chat", "crm"]
    )
    assert result.delivered == []
    assert all("refused" in p and "127.0.0.1" in p for p in result.problems), result.problems
    # a host the workspace never allowlisted (the loader refuses it; here it is forced in)
    workspace.config = workspace.config.model_copy(
        update={
            "sales": SalesConfig.model_validate(
                {"chat_webhook": f"https://127.0.0.1:{receiver.port}/chat"}
            )
        }
    )
    result = await deliver(
        SalesActivities(outbound, engine, workspace, transport), alert_id, channels=["chat"]
    )
    assert result.delivered == [] and "not in allowed_hosts" in result.problems[0]
    assert receiver.received == [] and sales_events(engine) == []
    # a 4xx is a verdict about the request: recorded as a problem, not retried
    answered = sales_workspace(tmp_path / "4xx", receiver, chat="/status/404", crm=None)
    result = await deliver(
        SalesActivities(outbound, engine, answered, transport), alert_id, channels=["chat"]
    )
    [problem] = result.problems
    assert problem.startswith("sales chat answered 404: localhost answered 404 Not Found")


async def test_the_email_shows_the_step_the_leads_running_journey_is_at(
    outbound: Settings,
    engine: Engine,
    smtp: SmtpServer,
    receiver: Server,
    transport: SmtpTransport,
    tmp_path: Path,
    time_env: WorkflowEnvironment,
) -> None:
    """The step comes from Temporal (``workflows.positions``): the lead's journey is a
    workflow carrying the search attributes a journey records (parked on a task queue no
    worker polls; test_positions has a real journey recording them)."""
    workspace = sales_workspace(tmp_path, receiver, chat=None, crm=None)
    contact_id, alert_id = make_lead(engine)
    client = time_env.client
    await ensure_search_attributes(client)
    await client.start_workflow(
        "Journey",
        id=f"journey/welcome/{contact_id}/1",
        task_queue="parked",
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(CAMPAIGN, "welcome"), SearchAttributePair(STEP, "tips")]
        ),
    )
    without = SalesActivities(outbound, engine, workspace, transport)
    await deliver(without, alert_id, channels=["email"])
    with session_scope(engine) as s:  # let the same alert be delivered again
        for event in s.exec(select(Event).where(Event.type == "sales_alert")).all():
            s.delete(event)
    with_client = SalesActivities(outbound, engine, workspace, transport, client=client)
    await deliver(with_client, alert_id, channels=["email"])
    first, second = smtp.mailbox.messages
    assert "at step" not in first.text()
    assert "welcome: running, at step tips" in " ".join(second.text().split())
