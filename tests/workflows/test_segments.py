"""``segment_entered`` campaigns: the sweep enters contacts once per entry, routes them through the
router's rules, and runs on a Temporal Schedule that the worker creates at start-up.

The sweep's logic runs on the time-skipping server (the ``SegmentSweep`` workflow started by hand,
exactly what the schedule starts); that server has no schedules, so the schedule itself is tested
on the real dev server, end to end through ``run_worker``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import ContactStatus, Enrolment, Event, SegmentMember
from drip.settings import Settings
from tests.support import SmtpServer, copy_workspace
from workflows.deploy import deploy_workspace
from workflows.segments import (
    SCHEDULE_ID,
    SOURCE,
    SegmentSweep,
    SweepInput,
    SweepResult,
    ensure_segment_schedule,
)
from workflows.worker import build_worker, run_worker

HOT = """\
id: hot-leads
name: Hot leads
trigger:
  segment_entered: 'contact.score >= 50'
reentry: {reentry}
steps:
  - id: hello
    send_email: {{template: welcome, subject: "You're on fire"}}
"""


def _workspace(tmp_path: Path, reentry: str = "never") -> Workspace:
    """The demo workspace with one campaign: hot-leads."""
    root = copy_workspace(tmp_path)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    (root / "campaigns" / "hot-leads.yaml").write_text(HOT.format(reentry=reentry))
    return load_workspace(root)


def _contact(engine: Engine, email: str, score: int = 0) -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email)
        assert contact.id is not None
        if score:
            repository.update_contact(s, contact.id, add_score=score, score_key=uuid.uuid4().hex)
        return contact.id


def _score(engine: Engine, contact_id: int, points: int) -> None:
    with session_scope(engine) as s:
        repository.update_contact(s, contact_id, add_score=points, score_key=uuid.uuid4().hex)


async def _sweep(env: WorkflowEnvironment, settings: Settings, batch: int = 1000) -> SweepResult:
    return await env.client.execute_workflow(
        SegmentSweep.run,
        SweepInput(batch=batch),
        id=f"sweep-{uuid.uuid4()}",
        task_queue=settings.temporal_task_queue,
    )


def _counts(result: SweepResult) -> tuple[int, int, bool]:
    [count] = result.campaigns
    assert count.campaign_id == "hot-leads" and not count.error
    return count.entered, count.left, count.more


async def _all_finished(env: WorkflowEnvironment, engine: Engine) -> list[Enrolment]:
    with session_scope(engine) as s:
        enrolments = list(s.exec(select(Enrolment).order_by(col(Enrolment.id))).all())
    for e in enrolments:
        await env.client.get_workflow_handle(e.workflow_id).result()
    with session_scope(engine) as s:
        return list(s.exec(select(Enrolment).order_by(col(Enrolment.id))).all())


def _entered_events(engine: Engine) -> list[Event]:
    with session_scope(engine) as s:
        return list(s.exec(select(Event).where(Event.type == "segment_entered")).all())


@pytest.mark.parametrize(("reentry", "journeys"), [("never", 1), ("always", 2)])
async def test_a_contact_enters_once_per_crossing_and_reentry_decides(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
    reentry: str,
    journeys: int,
) -> None:
    workspace = _workspace(tmp_path, reentry)
    deploy_workspace(any_engine, workspace)
    ann = _contact(any_engine, "ann@example.com", score=10)
    gone = _contact(any_engine, "gone@example.com", score=90)
    with session_scope(any_engine) as s:
        repository.set_status(s, gone, ContactStatus.unsubscribed)
    async with build_worker(
        time_env.client, settings=settings, engine=any_engine, workspace=workspace
    ):
        assert _counts(await _sweep(time_env, settings)) == (0, 0, False)

        _score(any_engine, ann, 50)  # 60: crosses the line
        assert _counts(await _sweep(time_env, settings)) == (1, 0, False)
        [first] = await _all_finished(time_env, any_engine)
        assert (first.contact_id, first.state) == (ann, "completed")
        assert len(smtp.mailbox.to("ann@example.com")) == 1

        # still inside: nothing new, however often the sweep runs
        assert _counts(await _sweep(time_env, settings)) == (0, 0, False)
        assert len(_entered_events(any_engine)) == 1

        _score(any_engine, ann, -30)  # 30: leaves
        assert _counts(await _sweep(time_env, settings)) == (0, 1, False)
        with session_scope(any_engine) as s:
            assert s.exec(select(SegmentMember)).all() == []

        _score(any_engine, ann, 30)  # 60 again: a new entry; the campaign's reentry rule decides
        assert _counts(await _sweep(time_env, settings)) == (1, 0, False)
        enrolments = await _all_finished(time_env, any_engine)
    assert len(_entered_events(any_engine)) == 2
    assert [e.number for e in enrolments] == list(range(1, journeys + 1))
    assert smtp.mailbox.subjects() == ["You're on fire"] * journeys
    assert smtp.mailbox.to("gone@example.com") == []


async def test_entries_are_batched_and_an_unrouted_entry_is_routed_by_the_next_run(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = _workspace(tmp_path)
    deploy_workspace(any_engine, workspace)
    ids = [_contact(any_engine, f"p{i}@example.com", score=70) for i in range(5)]
    # what an attempt that died between its commit and the routing leaves behind
    with session_scope(any_engine) as s:
        s.add(SegmentMember(campaign_id="hot-leads", contact_id=ids[0]))
        repository.record_event(
            s,
            contact_id=ids[0],
            type="segment_entered",
            name="hot-leads",
            dedupe_key="segment_entered:hot-leads:crashed",
            source=SOURCE,
        )
    async with build_worker(
        time_env.client, settings=settings, engine=any_engine, workspace=workspace
    ):
        runs = [await _sweep(time_env, settings, batch=2) for _ in range(3)]
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 5)
        await _all_finished(time_env, any_engine)
    assert [_counts(r) for r in runs] == [(2, 0, True), (2, 0, False), (0, 0, False)]
    assert [r.routed for r in runs] == [3, 2, 0]  # the first run also routed the leftover
    assert sorted(r for m in smtp.mailbox.messages for r in m.recipients) == sorted(
        f"p{i}@example.com" for i in range(5)
    )


async def _schedule_every(client: Client) -> tuple[timedelta, bool]:
    described = await client.get_schedule_handle(SCHEDULE_ID).describe()
    schedule = described.schedule
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    [interval] = schedule.spec.intervals
    return interval.every, schedule.state.paused


async def test_the_worker_starts_the_schedule_and_the_schedule_enrols(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = _workspace(tmp_path)
    deploy_workspace(engine, workspace)
    address = dev_env.client.service_client.config.target_host
    live = settings.model_copy(update={"temporal_address": address, "segment_sweep_seconds": 1})
    worker = asyncio.create_task(run_worker(live, workspace))
    try:
        _contact(engine, "hot@example.com", score=75)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1, within=60)
        assert await _schedule_every(dev_env.client) == (timedelta(seconds=1), False)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert smtp.mailbox.to("hot@example.com")[0].subject == "You're on fire"

    # a later start updates the interval (DRIP_SEGMENT_SWEEP_SECONDS) and keeps an operator's pause
    await dev_env.client.get_schedule_handle(SCHEDULE_ID).pause(note="maintenance")
    await ensure_segment_schedule(dev_env.client, settings)
    assert await _schedule_every(dev_env.client) == (timedelta(minutes=5), True)
    await ensure_segment_schedule(dev_env.client, settings, every=timedelta(seconds=90))
    assert await _schedule_every(dev_env.client) == (timedelta(seconds=90), True)
