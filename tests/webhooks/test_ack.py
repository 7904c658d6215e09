"""The acknowledge link of a lead alert, through the real app: a GET only shows the lead (link
scanners fetch it), the button's POST acknowledges once, forged links find nothing, and the
alert's follow-up workflow on a real Temporal server hears of it."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from campaigns.workspace import Workspace
from contacts import alerts
from contacts.db import session_scope
from drip.settings import Settings
from emails.links import alert_ack_token, verify_alert_ack_token, view_token
from emails.sender import SmtpTransport
from tests.contacts.test_alerts import make_lead
from tests.support import SmtpServer, api_client, free_port
from workflows.alerts import SalesActivities
from workflows.followup import LeadAlertWorkflow
from workflows.sales_types import SIGNAL_ACK, AlertAck, LeadAlertInput, lead_alert_workflow_id

SECRET = b"a secret for the token tests"


@workflow.defn(name="AckProbe")
class AckProbe:
    """Stands in for the follow-up workflow: ends with whoever acknowledged."""

    def __init__(self) -> None:
        self.by: str | None = None

    @workflow.signal(name=SIGNAL_ACK)
    def acknowledge(self, ack: AlertAck) -> None:
        self.by = self.by or ack.by

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.by is not None, timeout=timedelta(days=1))
        return self.by or ""


@pytest.fixture
def offline(settings: Settings) -> Settings:
    """Temporal on a closed port: an outage, which must not fail an acknowledgement."""
    return settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})


def link(settings: Settings, alert_id: str) -> str:
    return f"/sales/ack/{alert_ack_token(settings.secret(), alert_id)}"


def state(engine: Engine, alert_id: str) -> tuple[str, str | None]:
    with session_scope(engine) as s:
        alert = alerts.get_alert(s, alert_id)
        return alert.state, alert.acknowledged_by


def test_tokens_name_the_alert_and_nothing_else() -> None:
    token = alert_ack_token(SECRET, "0123abcd")
    assert verify_alert_ack_token(SECRET, token) == "0123abcd"
    alert_id, _, mac = token.partition(".")
    assert verify_alert_ack_token(b"another secret", token) is None
    assert verify_alert_ack_token(SECRET, f"0123abce.{mac}") is None  # another alert, same MAC
    assert verify_alert_ack_token(SECRET, token + "\n") is None
    assert verify_alert_ack_token(SECRET, view_token(SECRET, alert_id)) is None  # other purpose
    with pytest.raises(ValueError):
        alert_ack_token(SECRET, "not/an id")


def assert_private(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-robots-tag"] == "noindex, nofollow"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_a_get_shows_the_lead_and_acknowledges_nothing(
    offline: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(engine)
    async with api_client(offline, workspace, engine) as http:
        for _ in range(3):  # a link scanner, a preview, the person
            page = await http.get(link(offline, alert_id))
            assert page.status_code == 200
            assert_private(page)
    assert state(engine, alert_id) == ("open", None)
    html = page.text
    assert "Jane Doe" in html and "Acme Ltd" in html and "Tom Baker" in html
    assert "rule-2: page /pricing-2" in html and "path /pricing" in html
    assert f'<form method="post" action="{link(offline, alert_id)}">' in html


async def test_the_button_acknowledges_once_even_while_temporal_is_away(
    offline: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(engine)
    async with api_client(offline, workspace, engine) as http:
        done = await http.post(link(offline, alert_id))
        assert done.status_code == 200
        assert_private(done)
        assert "Lead acknowledged" in done.text
        assert state(engine, alert_id) == ("acknowledged", "link")
        with session_scope(engine) as s:
            first_at = alerts.get_alert(s, alert_id).acknowledged_at

        again = await http.post(link(offline, alert_id))
        assert again.status_code == 200 and "already acknowledged" in again.text
        assert "Acknowledged by link on" in again.text
        page = await http.get(link(offline, alert_id))
        assert "already acknowledged" in page.text and "<form" not in page.text
    with session_scope(engine) as s:
        assert alerts.get_alert(s, alert_id).acknowledged_at == first_at


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_forged_links_answer_the_same_404_page(
    method: str, offline: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(engine)
    good = alert_ack_token(offline.secret(), alert_id)
    forged = [
        f"{alert_id}.{'A' * 24}",
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        view_token(offline.secret(), alert_id),
        "nonsense",
        alert_ack_token(offline.secret(), "no-such-alert"),  # signed, but no such alert
        alert_ack_token(b"another secret", alert_id),
    ]
    async with api_client(offline, workspace, engine) as http:
        for token in forged:
            answer = await http.request(method, f"/sales/ack/{token}")
            assert answer.status_code == 404, token
            assert_private(answer)
            assert "Link not valid" in answer.text
    assert state(engine, alert_id) == ("open", None)


async def test_contact_data_on_the_page_is_escaped(
    offline: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(
        engine, fields={"first_name": "<script>alert(1)</script>"}, reason="<b>hot</b>"
    )
    async with api_client(offline, workspace, engine) as http:
        page = await http.get(link(offline, alert_id))
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert "<b>hot</b>" not in page.text and "&lt;b&gt;hot&lt;/b&gt;" in page.text


async def test_acknowledging_tells_the_alerts_follow_up_workflow(
    time_env: WorkflowEnvironment, settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(engine)
    async with Worker(
        time_env.client,
        task_queue=settings.temporal_task_queue,
        workflows=[AckProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await time_env.client.start_workflow(
            AckProbe.run,
            id=lead_alert_workflow_id(alert_id),
            task_queue=settings.temporal_task_queue,
        )
        async with api_client(settings, workspace, engine, time_env.client) as http:
            assert (await http.post(link(settings, alert_id))).status_code == 200
        assert await handle.result() == "link"


async def test_the_link_stops_the_reminders_of_the_real_follow_up(
    time_env: WorkflowEnvironment,
    settings: Settings,
    workspace: Workspace,
    engine: Engine,
    smtp: SmtpServer,
) -> None:
    """The whole loop: the follow-up workflow delivers the alert through ``deliver_lead_alert``,
    the owner presses the link's button, and no reminder or escalation follows."""
    _, alert_id = make_lead(engine)
    transport = SmtpTransport(settings)
    activities = SalesActivities(settings, engine, workspace, transport)
    try:
        async with Worker(
            time_env.client,
            task_queue=settings.temporal_task_queue,
            workflows=[LeadAlertWorkflow],
            activities=activities.all(),
        ):
            handle = await time_env.client.start_workflow(
                LeadAlertWorkflow.run,
                LeadAlertInput(alert_id=alert_id, channels=["email"]),
                id=lead_alert_workflow_id(alert_id),
                task_queue=settings.temporal_task_queue,
            )
            await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
            [alert] = smtp.mailbox.messages
            url = next(w for w in alert.text().split() if "/sales/ack/" in w).strip("()")
            async with api_client(settings, workspace, engine, time_env.client) as http:
                page = await http.get(url)
                assert page.status_code == 200 and state(engine, alert_id) == ("open", None)
                assert (await http.post(url)).status_code == 200
            result = await handle.result()
    finally:
        await transport.close()
    assert (result.outcome, result.reminded, result.escalated) == ("acknowledged", False, False)
    assert smtp.mailbox.subjects() == ["New lead: Jane Doe (Acme Ltd), score 42"]
