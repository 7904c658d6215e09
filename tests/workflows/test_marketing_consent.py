"""Consent for contacts from the events API, end to end: the real API, a real journey worker on
Temporal's time-skipping server, real SMTP (aiosmtpd) and SQLite.

A shop's ``Order Completed`` creates the contact without marketing consent: the transactional
receipt and a marketing campaign that says ``without_consent: allowed`` reach it, the plain
marketing offer does not (its outbox row says why). Once consent is recorded (a form, an import
naming its source, the API) the offer goes out, and the contact's page shows the record. A
workspace whose shop collects consent gets the offer out at once, with the consent implied.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from contacts.db import session_scope
from contacts.models import Contact, Enrolment, EnrolmentState, Event, Message, MessageState
from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from tests.engine_support import workspace_with
from tests.support import SmtpServer, running_stack
from tests.webhooks._admin import make_key

WRITE_KEY = "wk_consent_test"
ANN = "ann@example.com"

OFFER = """\
id: offer
name: Tent offer
trigger:
  event: purchase
reentry: always
steps:
  - id: offer
    send_email:
      template: welcome
      subject: A tent offer
"""
RECEIPT = """\
id: receipt
name: Receipt
kind: transactional
trigger:
  event: purchase
reentry: always
steps:
  - id: receipt
    send_email:
      template: welcome
      subject: Your receipt
"""
ALLOWED = """\
id: thanks
name: Thanks from the founder
# allowed on purpose: one thank-you after a purchase, which our terms announce
without_consent: allowed
trigger:
  event: purchase
reentry: always
steps:
  - id: thanks
    send_email:
      template: welcome
      subject: Thank you from the founder
"""


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"write_keys": [SecretStr(WRITE_KEY)]})


def _write_key() -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


async def _purchase(http: httpx.AsyncClient, **context: Any) -> None:
    r = await http.post(
        "/v1/track",
        json={
            "anonymousId": "anon-ann",
            "event": "Order Completed",
            "messageId": str(uuid.uuid4()),
            "properties": {"total": 120},
            "context": {"traits": {"email": ANN}, **context},
        },
        headers=_write_key(),
    )
    assert r.status_code == 200, r.text


def _contact(engine: Engine) -> Contact:
    with session_scope(engine) as s:
        found = s.exec(select(Contact).where(Contact.email == ANN)).first()
    assert found is not None
    return found


async def _journeys_done(engine: Engine, count: int, within: float = 30) -> None:
    """Wait until ``count`` journeys exist and none is running (each sends once and ends)."""
    deadline = time.monotonic() + within
    while True:
        with session_scope(engine) as s:
            rows = list(s.exec(select(Enrolment)))
        if len(rows) >= count and all(r.state != EnrolmentState.running for r in rows):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"journeys: {[(r.campaign_id, r.state) for r in rows]}")
        await asyncio.sleep(0.05)


def _outbox(engine: Engine, campaign_id: str) -> list[Message]:
    with session_scope(engine) as s:
        return list(
            s.exec(
                select(Message)
                .where(Message.campaign_id == campaign_id)
                .order_by(col(Message.created_at))
            )
        )


async def _record_consent(
    http: httpx.AsyncClient, engine: Engine, door: str, contact_id: int
) -> tuple[str, str | None]:
    """Record Ann's consent through ``door``; the source and IP the record should show."""
    if door == "form":
        r = await http.post("/forms/newsletter", json={"email": ANN, "consent": "yes"})
        assert r.status_code == 202, r.text
        return "form:newsletter", "127.0.0.1"  # the test client's address
    admin = make_key(engine, "contacts:write", "contacts:read")
    if door == "import":
        r = await http.post(
            "/api/contacts/import",
            params={"consent_source": "import:trade-fair-2026"},
            content=f"email,first_name\n{ANN},Ann\n".encode(),
            headers={**admin, "content-type": "text/csv"},
        )
        assert r.status_code == 200 and r.json()["updated"] == 1, r.text
        return "import:trade-fair-2026", None
    r = await http.post(
        f"/api/contacts/{contact_id}/consent",
        json={"source": "checkout:newsletter-box", "ip": "203.0.113.9"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["marketing_consent"] == "given"
    return "checkout:newsletter-box", "203.0.113.9"


@pytest.mark.parametrize("door", ["form", "import", "api"])
async def test_events_api_contact_gets_marketing_mail_only_after_consent(
    time_env: WorkflowEnvironment,
    keyed: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
    door: str,
) -> None:
    workspace = workspace_with(tmp_path, OFFER, RECEIPT, ALLOWED)
    mailbox = smtp.mailbox
    async with running_stack(time_env.client, keyed, engine, workspace) as http:
        await _purchase(http)
        await _journeys_done(engine, 3)
        await mailbox.wait_for(lambda m: len(m.to(ANN)) >= 2)
        contact = _contact(engine)
        assert contact.marketing_consent == "none" and contact.consent_at is None
        assert sorted(m.subject for m in mailbox.to(ANN)) == [
            "Thank you from the founder",
            "Your receipt",
        ]
        [refused] = _outbox(engine, "offer")
        assert (refused.state, refused.error) == (MessageState.suppressed, "no marketing consent")

        assert contact.id is not None
        source, ip = await _record_consent(http, engine, door, contact.id)
        await _purchase(http)
        await _journeys_done(engine, 6)
        await mailbox.wait_for(lambda m: "A tent offer" in m.subjects())

        after = _contact(engine)
        assert after.marketing_consent == "given" and after.consent_source == source
        assert [m.state for m in _outbox(engine, "offer")] == [
            MessageState.suppressed,
            MessageState.sent,
        ]
        assert sorted(m.subject for m in mailbox.to(ANN)) == [
            "A tent offer",
            "Thank you from the founder",
            "Thank you from the founder",
            "Your receipt",
            "Your receipt",
        ]
        if door == "api":  # the timeline shows the record: when, how, from where
            make_user(engine, "admin@example.com", "admin")
            assert (await sign_in(http, "admin@example.com")).status_code == 303
            page = (await http.get(f"/dashboard/contacts/{contact.id}")).text
            fact = re.search(r'data-fact="consent">([^<]*)<', page)
            assert fact is not None
            assert fact.group(1).startswith("given: checkout:newsletter-box, 20")
            assert fact.group(1).endswith("UTC, from 203.0.113.9")
            row = re.search(r"<strong>consent</strong> given(.*?)</tr>", page, re.S)
            assert row is not None
            assert "from 203.0.113.9" in row.group(1) and "checkout:newsletter-box" in row.group(1)
    with session_scope(engine) as s:
        [event] = s.exec(select(Event).where(Event.type == "consent")).all()
    assert (event.name, event.source, event.properties["ip"]) == ("given", source, ip)


async def test_a_shop_that_collects_consent_gets_marketing_mail_at_once(
    time_env: WorkflowEnvironment,
    keyed: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(
        tmp_path, OFFER, config="consent:\n  events_api: shop_collects_consent\n"
    )
    async with running_stack(time_env.client, keyed, engine, workspace) as http:
        await _purchase(http, ip="198.51.100.7")
        await _journeys_done(engine, 1)
        await smtp.mailbox.wait_for(lambda m: "A tent offer" in m.subjects())
    contact = _contact(engine)
    assert (contact.marketing_consent, contact.consent_ip) == ("implied", "198.51.100.7")
    assert contact.consent_source == "events API (workspace: shop collects consent)"
    assert [m.state for m in _outbox(engine, "offer")] == [MessageState.sent]
    with session_scope(engine) as s:
        [event] = s.exec(select(Event).where(Event.type == "consent")).all()
    assert (event.name, event.properties["ip"]) == ("implied", "198.51.100.7")
