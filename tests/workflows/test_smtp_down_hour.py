"""An hour without SMTP delays the journeys' emails; it never drops or duplicates one.

On Temporal's time-skipping server: several contacts subscribe while the relay is out, either
down (connections refused) or up but answering every recipient with ``421`` (try later). An hour
of skipped time passes: the send activity keeps retrying with the backoff of
``workflows.journey.SEND_RETRY`` (5 s, doubling, at most 10 min apart), nothing is delivered, and
every outbox row waits in ``pending`` with the last error. Then the relay recovers: each welcome
arrives exactly once, the journeys go on to their two-day wait, send the reminder, and finish.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Message, MessageState
from drip.settings import Settings
from tests.support import SmtpServer, running_stack
from workflows.client import journey_state, journey_workflow_id
from workflows.journey import SEND_RETRY

NAMES = ["ann", "bo", "cy", "dee"]
OUTAGE = timedelta(hours=1)


def _address(name: str) -> str:
    return f"{name}@example.com"


def _attempt_times(within: timedelta) -> list[float]:
    """When each attempt of a send that always fails starts, in seconds, per SEND_RETRY."""
    assert SEND_RETRY.maximum_interval is not None
    times, at, interval = [0.0], 0.0, SEND_RETRY.initial_interval.total_seconds()
    cap = SEND_RETRY.maximum_interval.total_seconds()
    while at + interval <= within.total_seconds():
        at += interval
        times.append(at)
        interval = min(interval * SEND_RETRY.backoff_coefficient, cap)
    return times


def _welcome_rows(engine: Engine) -> dict[str, Message]:
    with session_scope(engine) as s:
        rows = s.exec(select(Message).where(Message.step_id == "welcome")).all()
        by_id = {r.contact_id: r for r in rows}
        return {
            name: by_id[contact.id]
            for name in NAMES
            if (contact := repository.get_contact_by_email(s, _address(name))) is not None
            and contact.id in by_id
        }


@pytest.mark.parametrize("outage", ["down", "421"])
async def test_an_hour_without_smtp_delays_every_email_and_loses_none(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
    outage: str,
) -> None:
    if outage == "down":
        smtp.stop()  # connections to its port are refused
    else:
        for name in NAMES:
            smtp.mailbox.refuse[_address(name)] = "421 4.3.2 service not available, try later"

    async with running_stack(time_env.client, settings, engine, workspace) as http:
        for name in NAMES:
            r = await http.post(
                "/forms/newsletter",
                json={"email": _address(name), "first_name": name.capitalize(), "consent": True},
            )
            assert r.status_code == 202, r.text
        with session_scope(engine) as s:
            ids = [e.workflow_id for e in s.exec(select(Enrolment)).all()]
        assert len(ids) == len(NAMES)

        # skipped in ten-minute strides: one hour-long skip makes the test server process every
        # retry timer of the hour inside a single call, which times out on a loaded machine
        for _ in range(int(OUTAGE / timedelta(minutes=10))):
            await time_env.sleep(timedelta(minutes=10))

        # An hour on: nothing delivered, nothing given up; every send is pending and says why.
        assert smtp.mailbox.messages == []
        rows = _welcome_rows(engine)
        assert sorted(rows) == sorted(NAMES)
        # every attempt the backoff schedules in the hour, give or take the one at its edge
        expected = len(_attempt_times(OUTAGE))
        for name, row in rows.items():
            assert row.state == MessageState.pending, name
            assert row.sent_at is None
            assert expected - 1 <= row.attempts <= expected + 1, (name, row.attempts, expected)
            error = (row.error or "").lower()
            assert ("connect" in error) if outage == "down" else ("421" in error), row.error
        for workflow_id in ids:
            state = await journey_state(time_env.client, workflow_id)
            assert state.current_step == "welcome" and not state.finished
        failed_attempts = {name: row.attempts for name, row in rows.items()}

        # The relay recovers: the next retry (at most ten minutes away) delivers each welcome.
        if outage == "down":
            smtp.start()  # the same port and mailbox
        else:
            smtp.mailbox.refuse.clear()
        await time_env.sleep(SEND_RETRY.maximum_interval or timedelta(minutes=10))
        assert sorted(m.recipients[0] for m in smtp.mailbox.messages) == sorted(
            _address(n) for n in NAMES
        )
        rows = _welcome_rows(engine)
        for name, row in rows.items():
            assert row.state == MessageState.sent and row.error is None, (name, row.error)
            assert row.attempts == failed_attempts[name] + 1, name

        # Then the two-day wait for an open runs out and each journey sends its reminder.
        await time_env.sleep(timedelta(days=3))
        for workflow_id in ids:
            await time_env.client.get_workflow_handle(workflow_id).result()

    received = Counter((r, m.subject) for m in smtp.mailbox.messages for r in m.recipients)
    assert received == Counter(
        {
            pair: 1
            for name in NAMES
            for pair in [
                (_address(name), f"Welcome to Acme Outdoor, {name.capitalize()}"),
                (_address(name), f"Did you see this, {name.capitalize()}?"),
            ]
        }
    )
    with session_scope(engine) as s:
        messages = s.exec(select(Message)).all()
        enrolments = s.exec(select(Enrolment)).all()
    assert len(messages) == 2 * len(NAMES)
    assert all(m.state == MessageState.sent for m in messages)
    assert all(e.state == EnrolmentState.completed for e in enrolments)
    assert sorted(ids) == sorted(journey_workflow_id("welcome", e.contact_id) for e in enrolments)
