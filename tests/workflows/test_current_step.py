"""The step a running journey is at, on its enrolment row (``enrolments.current_step``).

The dashboard counts "journeys at this step now" from that column, so the engine writes it when
a journey comes to a step where it can dwell (a wait, a ``wait_for``, a send that an SMTP outage
holds up, a call to the outside), only when the step changes, and clears it when the journey
ends. Real Temporal (time-skipping), real SMTP, real SQLite; the writes are counted at the
database driver, so a write the engine should not make shows up here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.converter import PayloadConverter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import EnrolmentState, utcnow
from drip.settings import Settings
from emails.sender import SmtpTransport
from tests.engine_support import journeys, workspace_with
from tests.support import SmtpServer
from tests.workflows.recording import HISTORIES, maybe_record
from workflows.activities import JourneyActivities
from workflows.client import journey_workflow_id
from workflows.journey import STEP_PATCH, JourneyWorkflow
from workflows.types import (
    SIGNAL_EVENT,
    JourneyInput,
    JourneyResult,
    JourneySignal,
    RecordStepInput,
)

STEPS = """\
id: steps
name: Steps
trigger: {form: newsletter}
steps:
  - id: settle
    wait: {duration: 1d}
  - id: warm
    update_contact: {add_tags: [warm]}
  - id: hello
    send_email: {template: welcome, subject: Hello}
  - id: seen
    wait_for: {open: hello, timeout: 2d, on_event: done, on_timeout: done}
  - id: done
    exit:
"""

LOOP = """\
id: loop
name: Loop
trigger: {form: newsletter}
steps:
  - id: tick
    wait: {duration: 1d}
  - id: point
    update_contact: {add_score: 1}
  - id: again
    goto: {step: tick, max_times: 30}
  - id: bye
    send_email: {template: welcome, subject: Thirty days}
"""

FIRST_SEND = """\
id: first
name: First a send
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello}
  - id: later
    wait: {duration: 2d}
"""


@contextmanager
def step_writes(engine: Engine) -> Iterator[list[tuple[str, str]]]:
    """(workflow id, step) of every write of a step to an enrolment row, as the driver sees
    them (the clearing on the journey's end is not one of them)."""
    seen: list[tuple[str, str]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("UPDATE enrolments SET current_step="):
            step, workflow_id = params[0], params[1]
            seen.append((workflow_id, step))

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)


def current_step(engine: Engine, workflow_id: str) -> tuple[str, str | None]:
    with session_scope(engine) as s:
        [row] = [e for e in repository.list_enrolments(s) if e.workflow_id == workflow_id]
        return str(row.state), row.current_step


async def test_a_journey_shows_the_step_it_dwells_at_and_moves_on(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, STEPS)
    with step_writes(engine) as writes:
        async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
            ann = await d.form("newsletter", "ann@example.com")
            workflow_id = journey_workflow_id("steps", ann)
            await d.advance(timedelta(hours=1))
            assert current_step(engine, workflow_id) == ("running", "settle")

            await d.advance(timedelta(days=1))  # the wait is over: tagged, sent, waiting for it
            assert smtp.mailbox.subjects() == ["Hello"]
            assert current_step(engine, workflow_id) == ("running", "seen")

            await d.track("open", ann, "hello")
            await d.result(workflow_id)
            await maybe_record(time_env.client.get_workflow_handle(workflow_id), "current-step")
    assert current_step(engine, workflow_id) == ("completed", None)
    # passed-through steps (the contact update, the exit) are never written
    assert writes == [(workflow_id, "settle"), (workflow_id, "hello"), (workflow_id, "seen")]


async def test_a_loop_writes_its_step_once_even_across_continue_as_new(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """Each turn of the loop comes back to the same wait: nothing changes, nothing is written,
    also in the runs after continue-as-new (the last written step is carried)."""
    workspace = workspace_with(tmp_path, LOOP)
    plan = workspace.plans["loop"]
    with step_writes(engine) as writes:
        async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
            eve = d.contact("eve@example.com")
            started = await d.record(eve, "form", "newsletter", route=False)
            workflow_id = journey_workflow_id("loop", eve)
            with session_scope(engine) as s:
                repository.record_enrolment(
                    s,
                    campaign_id="loop",
                    campaign_version=plan.version,
                    contact_id=eve,
                    workflow_id=workflow_id,
                )
            handle = await time_env.client.start_workflow(
                JourneyWorkflow.run,
                JourneyInput(plan=plan, contact_id=eve, history_bound=60),
                id=workflow_id,
                task_queue=settings.temporal_task_queue,
                start_signal=SIGNAL_EVENT,
                start_signal_args=[JourneySignal(event_id=started, type="form", name="newsletter")],
            )
            await handle.result()
            description = await handle.describe()
    assert description.run_id != handle.first_execution_run_id  # it did continue as new
    assert writes == [(workflow_id, "tick"), (workflow_id, "bye")]
    assert current_step(engine, workflow_id) == ("completed", None)


async def test_a_send_held_up_by_an_smtp_outage_shows_its_step(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    smtp.stop()  # connections refused: the send activity retries with backoff
    workspace = workspace_with(tmp_path, FIRST_SEND)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        bo = await d.form("newsletter", "bo@example.com")
        workflow_id = journey_workflow_id("first", bo)
        await d.advance(timedelta(minutes=30))
        assert smtp.mailbox.messages == []
        assert current_step(engine, workflow_id) == ("running", "hello")
        smtp.start()
        await d.advance(timedelta(minutes=15))  # the next retry gets through
        assert smtp.mailbox.subjects() == ["Hello"]
        assert current_step(engine, workflow_id) == ("running", "later")


# --- the activity ------------------------------------------------------------------------


@pytest.fixture
def activities(settings: Settings, engine: Engine, workspace: Workspace) -> JourneyActivities:
    return JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=SmtpTransport(settings)
    )


def _enrolment(engine: Engine, email: str) -> str:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email, {}, consent_source="test")
        assert contact.id is not None
        workflow_id = journey_workflow_id("steps", contact.id)
        repository.record_enrolment(
            s,
            campaign_id="steps",
            campaign_version="v1",
            contact_id=contact.id,
            workflow_id=workflow_id,
        )
    return workflow_id


def _attempt(started_ago: timedelta) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        is_local=True,
        started_time=utcnow() - started_ago,
        start_to_close_timeout=timedelta(seconds=30),
    )
    return env


async def test_an_attempt_temporal_gave_up_on_never_commits_its_step(
    activities: JourneyActivities, engine: Engine
) -> None:
    """Its retry may have written the step already and the journey moved on: committing now
    would put an older step over a newer one."""
    workflow_id = _enrolment(engine, "cy@example.com")
    await _attempt(timedelta(0)).run(activities.record_step, RecordStepInput(workflow_id, "seen"))
    assert current_step(engine, workflow_id) == ("running", "seen")
    with pytest.raises(ApplicationError, match="too late"):
        await _attempt(timedelta(seconds=20)).run(
            activities.record_step, RecordStepInput(workflow_id, "settle")
        )
    assert current_step(engine, workflow_id) == ("running", "seen")


async def test_an_ended_journey_keeps_no_step(
    activities: JourneyActivities, engine: Engine
) -> None:
    workflow_id = _enrolment(engine, "dee@example.com")
    await _attempt(timedelta(0)).run(activities.record_step, RecordStepInput(workflow_id, "seen"))
    with session_scope(engine) as s:
        assert repository.end_enrolment(s, workflow_id, EnrolmentState.completed)
    # a write arriving after the end (a late retry) does not bring a step back
    await _attempt(timedelta(0)).run(activities.record_step, RecordStepInput(workflow_id, "seen"))
    assert current_step(engine, workflow_id) == ("completed", None)


# --- replay ------------------------------------------------------------------------------


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


def _has_patch(path: Path) -> bool:
    """Whether the journey of this history ran with ``STEP_PATCH`` (Temporal's patch marker)."""
    for event in _history(path).events:
        marker = event.marker_recorded_event_attributes
        if event.HasField("marker_recorded_event_attributes") and "patch-data" in marker.details:
            payloads = marker.details["patch-data"].payloads
            if any(
                p.get("id") == STEP_PATCH for p in PayloadConverter.default.from_payloads(payloads)
            ):
                return True
    return False


RECORDED = sorted(HISTORIES.glob("*.json"))
WITH_STEPS = [p for p in RECORDED if _has_patch(p)]


def test_histories_of_both_shapes_are_recorded() -> None:
    """Journeys started before the patch (no step writes) and after it both replay in
    ``test_replay``; both kinds must be there for that to mean anything."""
    assert WITH_STEPS, "no recorded history writes the current step"
    assert HISTORIES / "welcome-opened.json" in RECORDED
    assert HISTORIES / "welcome-opened.json" not in WITH_STEPS  # recorded before the patch


@workflow.defn(name="Journey")
class _JourneyThatForgetsTheStep(JourneyWorkflow):
    """The same journey, checking the patch as before but no longer writing the step."""

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        return await super().run(inp)

    async def _record_step(self, step_id: str) -> None:
        workflow.patched(STEP_PATCH)


@pytest.mark.parametrize("path", WITH_STEPS, ids=[p.stem for p in WITH_STEPS])
async def test_dropping_the_step_write_breaks_replay_of_new_histories(path: Path) -> None:
    """The new histories really hold the writes: code without them cannot replay them."""
    history = _history(path)
    # outside the sandbox: it would re-import this module, database and all
    replayer = Replayer(
        workflows=[_JourneyThatForgetsTheStep], workflow_runner=UnsandboxedWorkflowRunner()
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(history)
