"""``drip_worker_sends_total{outcome}``: each ``send_email`` attempt counted once, by how it
ended, and a failed or deferred one logged with its ids and reason but never an address.

The activity runs in the SDK's activity harness (``ActivityEnvironment``) against real SQLite
and a real SMTP server; the e2e test (``tests/e2e/test_worker_metrics.py``) scrapes the same
counts from a running ``drip worker``.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from campaigns.workspace import Workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import ContactStatus, utcnow
from drip.settings import Settings
from emails.sender import SmtpTransport
from tests.support import SmtpServer
from workflows.activities import JourneyActivities
from workflows.deploy import deploy_workspace
from workflows.metrics import OUTCOMES, WorkerMetrics
from workflows.types import SendEmailInput
from workflows.worker import domain_pacer

NAMES = ("ok", "gone", "later", "away", "resting")


def _counts(metrics: WorkerMetrics) -> dict[str, float]:
    registry = metrics.registry
    counts = {
        o: registry.get_sample_value("drip_worker_sends_total", {"outcome": o}) for o in OUTCOMES
    }
    return {o: n for o, n in counts.items() if n}


async def test_each_attempt_is_counted_once_by_outcome(
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deploy_workspace(engine, workspace)
    plan = workspace.plans["welcome"]
    ids: dict[str, int] = {}
    with session_scope(engine) as s:
        for name in NAMES:
            contact, _ = repository.upsert_contact(s, f"{name}@example.com", {"first_name": "A"})
            assert contact.id is not None
            ids[name] = contact.id
        repository.set_status(s, ids["away"], ContactStatus.unsubscribed)
        repository.get_contact(s, ids["resting"]).paused_until = utcnow() + timedelta(days=7)
    smtp.mailbox.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    smtp.mailbox.refuse["later@example.com"] = "451 4.7.1 <later@example.com>: try later"

    def send(name: str) -> SendEmailInput:
        workflow_id = f"journey/welcome/{ids[name]}/1"
        return SendEmailInput(
            message_id=f"message-{name}",
            key=f"{workflow_id}/welcome/1",
            workflow_id=workflow_id,
            contact_id=ids[name],
            campaign_id="welcome",
            campaign_version=plan.version,
            step_id="welcome",
            template="welcome",
            subject="Welcome",
        )

    metrics = WorkerMetrics()
    transport = SmtpTransport(settings)
    activities = JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=transport, metrics=metrics
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="send_email")
    try:
        with caplog.at_level(logging.WARNING, logger="workflows.metrics"):
            assert (await env.run(activities.send_email, send("ok"))).state == "sent"
            # the same send again (a retry after a lost completion): reported, not recounted
            assert (await env.run(activities.send_email, send("ok"))).state == "sent"
            assert (await env.run(activities.send_email, send("gone"))).state == "failed"
            assert (await env.run(activities.send_email, send("away"))).state == "suppressed"
            assert (await env.run(activities.send_email, send("resting"))).state == "deferred"
            with pytest.raises(ApplicationError) as deferral:
                await env.run(activities.send_email, send("later"))
            # retried by Temporal, but benign: the SDK logs no traceback of its own for it
            assert deferral.value.category == ApplicationErrorCategory.BENIGN
            assert not deferral.value.non_retryable
            assert deferral.value.type == "TransientSendError"
            del smtp.mailbox.refuse["later@example.com"]
            env.info = dataclasses.replace(env.info, attempt=2)  # Temporal's retry
            assert (await env.run(activities.send_email, send("later"))).state == "sent"
    finally:
        await transport.close()

    assert _counts(metrics) == {
        "sent": 2,
        "already_done": 1,
        "failed": 1,
        "suppressed": 1,
        "postponed": 1,
        "deferred": 1,
    }
    assert smtp.mailbox.subjects() == ["Welcome", "Welcome"]
    assert metrics.registry.get_sample_value("drip_worker_send_retries_total") == 1
    timed = metrics.registry.get_sample_value(
        "drip_worker_send_duration_seconds_count", {"outcome": "sent"}
    )
    assert timed == 2

    warned = {getattr(r, "outcome"): r for r in caplog.records if hasattr(r, "outcome")}
    assert set(warned) == {"failed", "deferred"}
    failed, deferred = warned["failed"].getMessage(), warned["deferred"].getMessage()
    assert warned["failed"].levelno == warned["deferred"].levelno == logging.WARNING
    assert failed.startswith(
        f"send failed: message message-gone, contact {ids['gone']}, campaign welcome step "
        "welcome (attempt 1): 550"
    )
    assert failed.endswith(": <address>: 550 5.1.1 <address>: no such user")
    assert deferred.startswith(
        f"send deferred, retried later: message message-later, contact {ids['later']}"
    )
    assert "451" in deferred and "<address>: try later" in deferred
    assert "@" not in failed + deferred


async def test_a_domain_deferral_is_counted_as_deferred_and_its_wait_as_postponed(
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    """With pacing by receiving domain, a ``451 4.7.1`` makes the recipient's group back off:
    the send is the relay's deferral (counted ``deferred``) but the journey waits for the
    group's backoff instead of Temporal retrying it at once; the next send to the group does
    not reach the relay and is ``postponed`` until the same time."""
    deploy_workspace(engine, workspace)
    plan = workspace.plans["welcome"]
    with session_scope(engine) as s:
        ids = []
        for name in ("later", "next"):
            contact, _ = repository.upsert_contact(s, f"{name}@example.com", {"first_name": "A"})
            assert contact.id is not None
            ids.append(contact.id)
    smtp.mailbox.refuse["later@example.com"] = "451 4.7.1 <later@example.com>: try later"

    def send(contact_id: int) -> SendEmailInput:
        workflow_id = f"journey/welcome/{contact_id}/1"
        return SendEmailInput(
            message_id=f"message-{contact_id}",
            key=f"{workflow_id}/welcome/1",
            workflow_id=workflow_id,
            contact_id=contact_id,
            campaign_id="welcome",
            campaign_version=plan.version,
            step_id="welcome",
            template="welcome",
            subject="Welcome",
            now=utcnow().isoformat(),
        )

    metrics = WorkerMetrics()
    transport = SmtpTransport(settings, pacer=domain_pacer(engine, workspace, settings))
    activities = JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=transport, metrics=metrics
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="send_email")
    try:
        first = await env.run(activities.send_email, send(ids[0]))
        second = await env.run(activities.send_email, send(ids[1]))
    finally:
        await transport.close()
    assert first.state == second.state == "deferred"
    assert first.retry_at == second.retry_at  # the group's backoff: 1 min by default
    assert "default deferred our mail" in (first.error or "")
    assert smtp.mailbox.messages == []  # the second never reached the relay
    assert _counts(metrics) == {"deferred": 1, "postponed": 1}
    with session_scope(engine) as s:
        rows = [outbox.get_message(s, f"message-{i}") for i in ids]
    assert [r.state if r else None for r in rows] == [
        "pending",
        "pending",
    ]  # sent when the journey wakes
