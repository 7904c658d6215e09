"""List-Id and Feedback-ID as a receiver gets them: on a journey's and a broadcast's emails sent
by a real worker (Temporal's time-skipping server, SQLite, an aiosmtpd server), DKIM-signed
and verified by dkimpy against the key's DNS record; on a transactional journey email only the
Feedback-ID; on a sales alert (internal mail) neither."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from drip.settings import Settings
from emails.dkim import DkimSigner
from emails.sender import SmtpTransport
from tests.contacts.test_alerts import make_lead
from tests.engine_support import workspace_with
from tests.support import EXAMPLES, Received, SmtpServer, copy_workspace, running_stack
from workflows.activities import JourneyActivities
from workflows.alerts import SalesActivities
from workflows.broadcasts import start_broadcast
from workflows.deploy import deploy_workspace
from workflows.sales_types import AlertDeliveryInput
from workflows.types import SendEmailInput

SIMPLE = """\
id: simple
name: Simple
email: {template: welcome, subject: "News for {{ contact.first_name }}"}
"""


@pytest.fixture
def signing(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with DKIM on, as ``drip worker`` would have them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return settings.model_copy(
        update={
            "dkim_domain": "acme.example",
            "dkim_selector": "drip",
            "dkim_private_key": path,
        }
    )


def _verified(settings: Settings, received: Received) -> list[bytes]:
    """The headers the message's DKIM signature covers; fails unless dkimpy verifies it."""
    signer = DkimSigner.from_settings(settings)
    assert signer is not None

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        wanted = f"{signer.dns_name}.".encode()
        return signer.dns_record().encode() if name == wanted else None

    assert dkim.verify(received.raw, dnsfunc=lookup), "the DKIM signature does not verify"
    signature = str(received.message["DKIM-Signature"]).replace("\r\n", "")
    listed = re.search(r"\bh=([^;]+);", signature)
    assert listed is not None
    return [name.strip().lower().encode() for name in listed.group(1).split(":")]


async def test_journey_and_broadcast_emails_carry_signed_list_headers(
    time_env: WorkflowEnvironment,
    signing: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    root = copy_workspace(tmp_path)
    (root / "broadcasts").mkdir(exist_ok=True)
    (root / "broadcasts" / "simple.yaml").write_text(SIMPLE)
    workspace = load_workspace(root)
    mailbox = smtp.mailbox
    async with running_stack(time_env.client, signing, engine, workspace) as http:
        posted = await http.post(
            "/forms/newsletter",
            json={"email": "ann@example.com", "first_name": "Ann", "consent": True},
        )
        assert posted.status_code == 202, posted.text
        await mailbox.wait_for(lambda m: any(s.startswith("Welcome") for s in m.subjects()))
        await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=signing, started_by="test"
        )
        await mailbox.wait_for(lambda m: "News for Ann" in m.subjects())

    [journey] = [m for m in mailbox.messages if m.subject.startswith("Welcome")]
    assert journey.message["List-Id"] == '"Acme Outdoor" <welcome.campaigns.acme.example>'
    assert journey.message["Feedback-ID"] == (
        "welcome:welcome/welcome:marketing.journey:acme.example"
    )
    [broadcast] = [m for m in mailbox.messages if m.subject == "News for Ann"]
    assert broadcast.message["List-Id"] == '"Acme Outdoor" <simple.broadcasts.acme.example>'
    assert broadcast.message["Feedback-ID"] == (
        "broadcast.simple:broadcast.simple/email:marketing.broadcast:acme.example"
    )
    for received in (journey, broadcast):
        assert len(received.message.get_all("List-Id") or []) == 1
        assert len(received.message.get_all("Feedback-ID") or []) == 1
        covered = _verified(signing, received)
        assert b"list-id" in covered and b"feedback-id" in covered


async def test_a_transactional_journey_email_has_a_feedback_id_but_no_list_id(
    signing: Settings, engine: Engine, workspace: Workspace, smtp: SmtpServer
) -> None:
    deploy_workspace(engine, workspace)
    plan = workspace.plans["welcome"]
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(
            s, "bo@example.com", {"first_name": "Bo"}, consent_source="test"
        )
        assert contact.id is not None
        contact_id = contact.id
    base = SendEmailInput(
        message_id="m-receipt",
        key=f"journey/welcome/{contact_id}/1/welcome/1",
        workflow_id=f"journey/welcome/{contact_id}/1",
        contact_id=contact_id,
        campaign_id="welcome",
        campaign_version=plan.version,
        step_id="welcome",
        template="welcome",
        subject="Your order",
        marketing=False,
    )
    transport = SmtpTransport(signing)
    activities = JourneyActivities(
        settings=signing, engine=engine, workspace=workspace, transport=transport
    )
    try:
        result = await ActivityEnvironment().run(activities.send_email, base)
        assert result.state == "sent", result
        marketing = dataclasses.replace(
            base, message_id="m-news", key=base.key + "-news", subject="News", marketing=True
        )
        assert (await ActivityEnvironment().run(activities.send_email, marketing)).state == "sent"
    finally:
        await transport.close()
    [receipt] = [m for m in smtp.mailbox.messages if m.subject == "Your order"]
    assert receipt.message["List-Id"] is None
    assert receipt.message["Feedback-ID"] == (
        "welcome:welcome/welcome:transactional.journey:acme.example"
    )
    [news] = [m for m in smtp.mailbox.messages if m.subject == "News"]
    assert news.message["List-Id"] == '"Acme Outdoor" <welcome.campaigns.acme.example>'
    # signed as absent: nobody can add a List-Id to a copy of the receipt
    assert b"list-id" in _verified(signing, receipt)


async def test_a_sales_alert_is_internal_mail_with_neither(
    signing: Settings, engine: Engine, smtp: SmtpServer, tmp_path: Path
) -> None:
    workspace = workspace_with(
        tmp_path,
        config='sales:\n  email: "Acme Sales <sales@acme.example>"\n',
        sales=(EXAMPLES / "sales.yaml").read_text(),
    )
    _, alert_id = make_lead(engine)
    transport = SmtpTransport(signing)
    try:
        activities = SalesActivities(signing, engine, workspace, transport)
        result = await activities.deliver_lead_alert(
            AlertDeliveryInput(alert_id=alert_id, kind="alert", channels=["email"])
        )
    finally:
        await transport.close()
    assert result.delivered == ["email"]
    [alert] = smtp.mailbox.messages
    assert alert.message["Auto-Submitted"] == "auto-generated"
    assert alert.message["List-Id"] is None and alert.message["Feedback-ID"] is None
    assert b"feedback-id" in _verified(signing, alert)
