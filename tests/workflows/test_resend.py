"""Resending an interrupted email through the worker (``workflows.resend``), against a real
aiosmtpd relay and Temporal's time-skipping server: the same message (same Message-ID, same
subject) goes out exactly once more, whether asked once or twice at the same time; a relay
that says "later" delays it (the journeys' backoff), one that refuses ends it ``failed`` with
the reply and counts the bounce; a contact who unsubscribed meanwhile gets nothing.

The interrupted row is made as the send activity makes it when a retry finds the SMTP
transaction cut off (``outbox.finish_send(..., interrupted, INTERRUPTED)``) after the journey
sent it; the crash itself is played by tests/e2e/test_interrupted_resend.py with a real worker
process killed mid-DATA.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import ContactStatus, Message, MessageState
from drip.settings import Settings
from tests.engine_support import Journeys, journeys, workspace_with
from tests.support import api_client
from tests.webhooks._admin import make_key
from tests.workflows.test_smtp_faults import FaultySmtp
from workflows.activities import INTERRUPTED
from workflows.resend_activity import ResendOutcome, request_resends

ONE = """\
id: one
name: One
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: "Hello {{ contact.first_name }}"}
"""
ANN = "ann@example.com"


@pytest.fixture
def smtp() -> Iterator[FaultySmtp]:
    server = FaultySmtp().start()
    yield server
    server.stop()


async def _interrupted(d: Journeys) -> Message:
    """Ann's email, sent by her journey, then marked as a send cut off mid-SMTP."""
    ann = await d.form("newsletter", ANN, first_name="Ann")
    await d.mailbox.wait_for(lambda m: len(m.messages) == 1)
    assert [e.state for e in await d.finish()] == ["completed"]
    message = d.message(ann, "hello")
    with session_scope(d.engine) as s:
        outbox.finish_send(s, message.id, MessageState.interrupted, INTERRUPTED)
        s.execute(sa.update(Message).where(col(Message.id) == message.id).values(sent_at=None))
    return d.message(ann, "hello")


async def _resend(
    d: Journeys, settings: Settings, message_id: str, wait: float = 30
) -> ResendOutcome:
    [outcome] = await request_resends(
        d.env.client,
        d.engine,
        [message_id],
        requested_by="test (ops)",
        task_queue=settings.temporal_task_queue,
        wait=wait,
    )
    return outcome


async def test_asked_twice_at_once_the_same_email_goes_out_exactly_once_more(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, ONE), smtp.mailbox
    ) as d:
        message = await _interrupted(d)
        first, second = await asyncio.gather(
            _resend(d, settings, message.id), _resend(d, settings, message.id)
        )
        assert (first.state, second.state) == ("sent", "sent")  # the second joined the first
        later = await _resend(d, settings, message.id)
    assert later.state == "refused"
    assert later.detail.startswith("already resent by test (ops) at ")
    original, resent = smtp.mailbox.messages
    assert resent.subject == original.subject == "Hello Ann"
    assert resent.message["Message-ID"] == original.message["Message-ID"]
    assert resent.message["Message-ID"] == message.header_message_id
    assert resent.recipients == [ANN]
    row = d.message(message.contact_id, "hello")
    assert (row.state, row.error, row.resent_by) == (MessageState.sent, None, "test (ops)")
    assert row.attempts == 2  # the journey's send and the one resend


async def test_a_relay_saying_later_delays_the_resend_without_a_duplicate(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, ONE), smtp.mailbox
    ) as d:
        message = await _interrupted(d)
        smtp.mailbox.fail("DATA", "451 4.3.0 queue full, try later", times=2)
        # awaiting the result lets the test server skip the backoff (5 s, 10 s)
        outcome = await _resend(d, settings, message.id)
        assert outcome.state == "sent"
        row = d.message(message.contact_id, "hello")
        assert row.state == MessageState.sent
    assert smtp.mailbox.faults == {"DATA": 2}
    assert smtp.mailbox.subjects() == ["Hello Ann", "Hello Ann"]


async def test_a_refused_resend_ends_failed_with_the_reply_and_counts_the_bounce(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, ONE), smtp.mailbox
    ) as d:
        message = await _interrupted(d)
        smtp.mailbox.fail("RCPT", "550 5.1.1 <ann@example.com>: recipient address rejected")
        outcome = await _resend(d, settings, message.id)
        assert outcome.state == "failed"
        assert "550" in outcome.detail
        row = d.message(message.contact_id, "hello")
        assert row.state == MessageState.failed and "550" in (row.error or "")
        assert d.get(message.contact_id).status == ContactStatus.bounced
        assert [e.message_id for e in d.events(message.contact_id, "bounce")] == [message.id]
        again = await _resend(d, settings, message.id)
    assert again.state == "refused"
    assert len(smtp.mailbox.messages) == 1


async def test_a_contact_who_unsubscribed_meanwhile_gets_nothing(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, ONE), smtp.mailbox
    ) as d:
        message = await _interrupted(d)
        with session_scope(engine) as s:
            assert repository.set_status(s, message.contact_id, ContactStatus.unsubscribed)
        outcome = await _resend(d, settings, message.id)
    assert (outcome.state, outcome.detail) == ("suppressed", "")
    row = d.message(message.contact_id, "hello")
    assert (row.state, row.error) == (MessageState.suppressed, "contact is unsubscribed")
    assert len(smtp.mailbox.messages) == 1


async def test_the_admin_api_lists_and_resends_once_with_the_risk_accepted(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, ONE)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        message = await _interrupted(d)
        reader = make_key(engine, "messages:read")
        resender = make_key(engine, "messages:resend", name="ops-bot")
        async with api_client(settings, workspace, engine, time_env.client) as http:
            listed = await http.get("/api/messages/interrupted", headers=reader)
            assert listed.status_code == 200
            body = listed.json()
            assert body["count"] == 1
            [item] = body["items"]
            assert (item["id"], item["email"], item["step_id"]) == (message.id, ANN, "hello")
            url = f"/api/messages/{message.id}/resend"
            assert (await http.post(url, headers=reader, json={})).status_code == 403
            unaccepted = await http.post(url, headers=resender, json={})
            assert unaccepted.status_code == 422
            assert "may receive this email twice" in unaccepted.json()["detail"]
            assert len(smtp.mailbox.messages) == 1
            done = await http.post(url, headers=resender, json={"accept_duplicate_risk": True})
            assert done.status_code == 200
            assert done.json()["state"] == "sent"
            again = await http.post(url, headers=resender, json={"accept_duplicate_risk": True})
            assert again.status_code == 409
            assert again.json()["detail"].startswith("already resent by api:")
            missing = await http.post(
                "/api/messages/nope/resend", headers=resender, json={"accept_duplicate_risk": True}
            )
            assert missing.status_code == 404
            after = await http.get("/api/messages/interrupted", headers=reader)
            assert after.json() == {"count": 0, "items": []}
    assert len(smtp.mailbox.messages) == 2
