"""``drip journeys enrol|pause|resume|cancel|show`` and ``drip campaigns pause|resume|cancel`` as an
operator runs them: the real ``drip`` executable against Temporal's time-skipping server, with a
journey worker in this process and emails counted at a real SMTP server."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import deploys, repository
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Message, MessageState
from drip.settings import Settings
from tests.support import SmtpServer, copy_workspace, venv_binary
from workflows.client import journey_state
from workflows.deploy import deploy_workspace
from workflows.worker import build_worker

BULK = """\
id: bulk-hello
name: Bulk hello
trigger:
  manual: true
steps:
  - id: hello
    send_email: {template: welcome, subject: "Hello from the import"}
"""

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


def _workspace(tmp_path: Path) -> Workspace:
    root = copy_workspace(tmp_path)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    (root / "campaigns" / "bulk-hello.yaml").write_text(BULK)
    (root / "campaigns" / "slow-hello.yaml").write_text(SLOW)
    return load_workspace(root)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _env(settings: Settings, workspace: Workspace, temporal: str = "") -> dict[str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(settings.home),
        "DRIP_WORKSPACE": str(workspace.root),
        "DRIP_DATABASE_URL": settings.database_url,
        "DRIP_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "COLUMNS": "200",
    }
    if temporal:
        env["DRIP_TEMPORAL_ADDRESS"] = temporal
    return env


async def _drip(env: WorkflowEnvironment, settings: Settings, ws: Workspace, *args: str) -> Run:
    """The ``drip`` command, run without blocking the loop the worker shares with this test."""
    process = await asyncio.create_subprocess_exec(
        venv_binary("drip"),
        *args,
        env=_env(settings, ws, env.client.service_client.config.target_host),
        cwd=settings.home.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def _enrolments(engine: Engine, campaign_id: str) -> list[Enrolment]:
    with session_scope(engine) as s:
        return list(
            s.exec(
                select(Enrolment)
                .where(Enrolment.campaign_id == campaign_id)
                .order_by(col(Enrolment.id))
            ).all()
        )


def _journey(engine: Engine, email: str) -> Enrolment:
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, email)
        assert contact is not None
        [enrolment] = repository.list_enrolments(s, contact_id=contact.id)
        return enrolment


async def _held_after_its_timer(env: WorkflowEnvironment, workflow_id: str) -> None:
    """The journey's timer fired and the workflow task that saw it completed without scheduling
    the send: a paused journey, proven from its history rather than by waiting a while."""
    handle = env.client.get_workflow_handle(workflow_id)
    for _ in range(200):
        events = (await handle.fetch_history()).events
        fired = [
            i for i, e in enumerate(events) if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED
        ]
        if fired and any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events[fired[0] :]
        ):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"{workflow_id}: the timer never fired")
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert "send_email" not in scheduled


async def test_bulk_enrol_from_csv_reports_bad_rows_and_is_idempotent_per_import(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    deploy_workspace(engine, ws)
    lines = ["email,first_name,plan"]
    lines += [f"person{i}@example.com,Person {i},pro" for i in range(50)]
    lines.insert(12, "not-an-email,Broken,pro")  # line 13 of the file
    lines.insert(31, "extra@example.com,Too,many,values")  # line 32
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("\n".join(lines) + "\n")
    args = ("journeys", "enrol", "bulk-hello", "--csv", str(csv_file), "--import-id", "spring")
    async with build_worker(time_env.client, settings=settings, engine=engine, workspace=ws):
        first = await _drip(time_env, settings, ws, *args, "--concurrency", "10")
        assert first.returncode == 1, first.stderr  # done, with failures listed
        assert "enrolled 50, skipped 0, failed 2" in first.stdout
        assert "line 13: not-an-email: " in first.stderr
        assert "line 32: 4 values but 3 columns" in first.stderr
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 50)

        again = await _drip(time_env, settings, ws, *args)
        assert "enrolled 0, skipped 50, failed 2" in again.stdout, again.stdout + again.stderr
        assert "skipped 50: already processed by import spring" in again.stdout
        for e in _enrolments(engine, "bulk-hello"):
            await time_env.client.get_workflow_handle(e.workflow_id).result()
    assert len(_enrolments(engine, "bulk-hello")) == 50
    assert len(smtp.mailbox.messages) == 50
    assert {m.subject for m in smtp.mailbox.messages} == {"Hello from the import"}
    with session_scope(engine) as s:
        person = repository.get_contact_by_email(s, "person7@example.com")
    assert person is not None and person.fields == {"first_name": "Person 7", "plan": "pro"}


def test_enrol_refuses_what_cannot_work_with_exit_2(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    ws = _workspace(tmp_path)
    deploy_workspace(engine, ws)
    with session_scope(engine) as s:
        row = deploys.current_versions(s)["slow-hello"]
        deploys.record_deployment(
            s,
            campaign_id="slow-hello",
            version=row.version,
            status="paused",
            trigger_kind=row.trigger_kind,
            trigger_value=row.trigger_value,
            plan=row.plan,
        )

    def drip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv_binary("drip"), "journeys", "enrol", *args],
            env=_env(settings, ws),  # no Temporal: each is refused before it is needed
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    unknown = drip("bulk-helo", "--email", "a@example.com")
    assert unknown.returncode == 2
    assert "campaign 'bulk-helo' is not deployed (did you mean 'bulk-hello'?)" in unknown.stderr
    paused = drip("slow-hello", "--email", "a@example.com")
    assert paused.returncode == 2 and "campaign 'slow-hello' is paused" in paused.stderr
    both = drip("bulk-hello", "--email", "a@example.com", "--where", "contact.score > 1")
    assert both.returncode == 2 and "give exactly one of --csv, --where or --email" in both.stderr
    events = drip("bulk-hello", "--where", 'event("purchase")')
    assert events.returncode == 2 and "cannot be used to filter contacts" in events.stderr
    no_column = tmp_path / "bad.csv"
    no_column.write_text("mail,name\na@example.com,A\n")
    csv = drip("bulk-hello", "--csv", str(no_column))
    assert csv.returncode == 2 and "needs an 'email' column" in csv.stderr
    assert "Traceback" not in unknown.stderr + paused.stderr + both.stderr + csv.stderr
    assert _enrolments(engine, "bulk-hello") == []


async def test_pause_holds_a_journey_past_its_timer_until_resume_and_cancel_ends_it(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    deploy_workspace(engine, ws)
    async with build_worker(time_env.client, settings=settings, engine=engine, workspace=ws):
        emails = [f"--email={who}@example.com" for who in ("ann", "bob", "cy")]
        enrolled = await _drip(time_env, settings, ws, "journeys", "enrol", "slow-hello", *emails)
        assert enrolled.returncode == 0, enrolled.stderr
        assert "enrolled 3, skipped 0, failed 0" in enrolled.stdout

        paused = await _drip(time_env, settings, ws, "journeys", "pause", "ann@example.com")
        assert paused.returncode == 0, paused.stderr
        assert "paused slow-hello" in paused.stdout
        cancelled = await _drip(
            time_env, settings, ws, "journeys", "cancel", "cy@example.com", "--reason", "asked us"
        )
        assert cancelled.returncode == 0 and "cancelled slow-hello" in cancelled.stdout

        await time_env.sleep(timedelta(days=2))  # past the one-day timer
        await smtp.mailbox.wait_for(lambda m: len(m.to("bob@example.com")) == 1)
        ann = _journey(engine, "ann@example.com")
        await _held_after_its_timer(time_env, ann.workflow_id)
        state = await journey_state(time_env.client, ann.workflow_id)
        assert state.paused and not state.finished
        assert smtp.mailbox.to("ann@example.com") == []  # paused: the timer ran, nothing sent
        shown = await _drip(time_env, settings, ws, "journeys", "show", "ann@example.com")
        assert "paused by an operator" in shown.stdout, shown.stdout + shown.stderr

        typo = await _drip(time_env, settings, ws, "journeys", "resume", "ann")
        assert typo.returncode == 2 and "must have an @-sign" in typo.stderr
        nobody = await _drip(time_env, settings, ws, "journeys", "resume", "nobody@example.com")
        assert nobody.returncode == 1 and "no contact nobody@example.com" in nobody.stderr
        resumed = await _drip(
            time_env,
            settings,
            ws,
            "journeys",
            "resume",
            str(ann.contact_id),
            "--campaign",
            "slow-hello",
        )
        assert resumed.returncode == 0 and "resumed slow-hello" in resumed.stdout
        result = await time_env.client.get_workflow_handle(ann.workflow_id).result()
        assert result["outcome"] == "completed"
        cy = _journey(engine, "cy@example.com")
        assert (await time_env.client.get_workflow_handle(cy.workflow_id).result())[
            "outcome"
        ] == "cancelled"
        shown = await _drip(time_env, settings, ws, "journeys", "show", "cy@example.com")
        again = await _drip(time_env, settings, ws, "journeys", "cancel", "cy@example.com")
    assert smtp.mailbox.subjects().count("A day later") == 2  # ann and bob, not cy
    assert len(smtp.mailbox.to("ann@example.com")) == 1
    assert smtp.mailbox.to("cy@example.com") == []
    cy = _journey(engine, "cy@example.com")
    assert (cy.state, cy.end_reason) == ("cancelled", "asked us")
    assert "slow-hello (" in shown.stdout and "cancelled (asked us)" in shown.stdout
    assert again.returncode == 1 and "has no running journey" in again.stderr


async def test_campaign_pause_resume_and_cancel(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    deploy_workspace(engine, ws)

    async def drip(*args: str) -> Run:
        return await _drip(time_env, settings, ws, *args)

    async with build_worker(time_env.client, settings=settings, engine=engine, workspace=ws):
        two = ("--email", "ann@example.com", "--email", "bob@example.com")
        assert (await drip("journeys", "enrol", "slow-hello", *two)).returncode == 0
        paused = await drip("campaigns", "pause", "slow-hello")
        assert paused.returncode == 0, paused.stderr
        assert "slow-hello is paused; 2 running journeys paused" in paused.stdout
        refused = await drip("journeys", "enrol", "slow-hello", "--email", "cy@example.com")
        assert refused.returncode == 2 and "is paused" in refused.stderr

        await time_env.sleep(timedelta(days=2))
        for e in _enrolments(engine, "slow-hello"):
            await _held_after_its_timer(time_env, e.workflow_id)
        assert smtp.mailbox.messages == []
        resumed = await drip("campaigns", "resume", "slow-hello")
        assert "slow-hello is active; 2 running journeys resumed" in resumed.stdout
        for e in _enrolments(engine, "slow-hello"):
            await time_env.client.get_workflow_handle(e.workflow_id).result()
        assert len(smtp.mailbox.messages) == 2

        late = ("--email", "cy@example.com", "--email", "dee@example.com")
        assert (await drip("journeys", "enrol", "slow-hello", *late)).returncode == 0
        cancelled = await drip("campaigns", "cancel", "slow-hello", "--reason", "wrong offer")
        assert "slow-hello is paused; 2 running journeys cancelled" in cancelled.stdout
        for e in _enrolments(engine, "slow-hello"):
            await time_env.client.get_workflow_handle(e.workflow_id).result()
        unknown = await drip("campaigns", "pause", "nope")
    assert unknown.returncode == 2 and "campaign 'nope' is not deployed" in unknown.stderr
    states = [(e.contact_id, e.state, e.end_reason) for e in _enrolments(engine, "slow-hello")]
    assert [s[1:] for s in states] == [
        ("completed", None),
        ("completed", None),
        ("cancelled", "wrong offer"),
        ("cancelled", "wrong offer"),
    ]
    assert len(smtp.mailbox.messages) == 2
    with session_scope(engine) as s:
        history = [r.status for r in deploys.version_history(s, "slow-hello")]
    assert history == ["paused", "active", "paused", "active"]  # newest first


TAGGED = """\
id: tagged-hello
name: Tagged hello
trigger:
  tag_added: lead
steps:
  - id: hello
    send_email: {template: welcome, subject: "Hello, lead"}
"""


async def test_contacts_update_records_the_change_and_starts_its_campaigns(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    (root / "campaigns" / "tagged-hello.yaml").write_text(TAGGED)
    ws = load_workspace(root)
    deploy_workspace(engine, ws)
    with session_scope(engine) as s:
        repository.upsert_contact(s, "ann@example.com", {"plan": "free"})
    async with build_worker(time_env.client, settings=settings, engine=engine, workspace=ws):
        run = await _drip(
            time_env, settings, ws,
            "contacts", "update", "ann@example.com", "--add-tag", "lead", "--set", "plan=pro",
            "--set", "seats=12",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "3 changes recorded" in run.stdout and "routed" in run.stdout, run.stdout
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        missing = await _drip(time_env, settings, ws, "contacts", "update", "nobody@x.example")
        assert missing.returncode == 1 and "no contact nobody@x.example" in missing.stderr
    assert smtp.mailbox.subjects() == ["Hello, lead"]
    with session_scope(engine) as s:
        ann = repository.get_contact_by_email(s, "ann@example.com")
    assert ann is not None and ann.tags == ["lead"]
    assert ann.fields == {"plan": "pro", "seats": 12}


def test_show_prints_a_relay_error_as_text_not_markup(
    tmp_path: Path, settings: Settings, engine: Engine
) -> None:
    """A relay's words are data: brackets in them are printed, never read as rich markup (which
    raised on a stray closing tag and hid the rest of the contact)."""
    ws = _workspace(tmp_path)
    error = "550 [/red] mailbox [bold]unavailable[/bold]"
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, "dee@example.com")
        assert contact.id is not None
        s.add(
            Enrolment(
                campaign_id="bulk-hello",
                campaign_version="v1",
                contact_id=contact.id,
                workflow_id="journey/bulk-hello/x/1",
                state=EnrolmentState.completed,
            )
        )
        s.add(
            Message(
                id="m1",
                key="journey/bulk-hello/x/1:hello",
                contact_id=contact.id,
                campaign_id="bulk-hello",
                step_id="hello",
                workflow_id="journey/bulk-hello/x/1",
                template="welcome",
                subject="Hello",
                state=MessageState.failed,
                open_token="t1",
                error=error,
            )
        )
    run = subprocess.run(
        [venv_binary("drip"), "journeys", "show", "dee@example.com"],
        env=_env(settings, ws),
        cwd=settings.home.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert error in run.stdout, run.stdout
