"""Merging two contacts who each run a journey of the same campaign, on Temporal's time-skipping
server: every event is kept, and one running journey per campaign remains (the kept contact's)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from contacts.db import session_scope
from contacts.hygiene import merge_contacts
from contacts.models import EnrolmentState, Event
from drip.settings import Settings
from tests.engine_support import journeys, workspace_with
from tests.support import SmtpServer
from workflows.operations import control_many

SLOW = """\
id: slow-hello
name: Slow hello
trigger:
  manual: true
steps:
  - id: later
    wait: {duration: 1d}
  - id: hello
    send_email: {template: welcome, subject: "A day later"}
"""

OTHER = SLOW.replace("slow-hello", "other-hello").replace("Slow hello", "Other hello")


async def test_merge_keeps_every_event_and_one_running_journey_per_campaign(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = workspace_with(tmp_path, SLOW, OTHER)
    async with journeys(time_env, settings, engine, ws, smtp.mailbox) as j:
        keep = j.contact("ann@example.com", first_name="Ann")
        gone = j.contact("ann.lee@gmail.com", last_name="Lee")
        await j.enrol("slow-hello", keep)
        await j.enrol("slow-hello", gone)
        await j.enrol("other-hello", gone)
        await j.event(gone, "viewed_tents")
        ours = j.enrolment(keep, "slow-hello").workflow_id
        theirs = j.enrolment(gone, "slow-hello").workflow_id
        other = j.enrolment(gone, "other-hello").workflow_id
        for workflow_id in (ours, theirs, other):
            assert (await j.state(workflow_id)).current_step == "later"
        with session_scope(engine) as s:
            before = {e.id for e in s.exec(select(Event))}
        with session_scope(engine) as s:
            result = merge_contacts(s, keep, gone, actor="test")
        assert sorted(result.journeys_to_end) == sorted([theirs, other])
        assert result.duplicate_journeys == [theirs]
        outcome = await control_many(time_env.client, result.journeys_to_end, "cancel", "merged")
        assert outcome == {theirs: True, other: True}
        for workflow_id in (theirs, other):
            await j.result(workflow_id)

        rows = {e.workflow_id: e for e in j.enrolments(contact_id=keep)}
        assert set(rows) == {ours, theirs, other}
        assert rows[theirs].state == rows[other].state == EnrolmentState.cancelled
        running = [e.campaign_id for e in rows.values() if e.state == EnrolmentState.running]
        assert running == ["slow-hello"] and rows[ours].state == EnrolmentState.running
        with session_scope(engine) as s:
            events = s.exec(select(Event)).all()
        assert before <= {e.id for e in events}
        assert {e.contact_id for e in events} == {keep}
        assert [e.name for e in events if e.type == "merged"] == [str(gone)]

        # the kept contact's journey goes on and sends its email a day later
        await j.finish(days=2)
        await asyncio.sleep(0)
        assert j.subjects_to("ann@example.com") == ["A day later"]
        assert j.subjects_to("ann.lee@gmail.com") == []
