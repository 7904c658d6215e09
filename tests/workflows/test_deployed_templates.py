"""Email templates are deployed with the plan: a running journey renders the template files of
its own version, a template that is new in a deploy sends at once from a worker started before
the file existed, and the outbox keeps the subject as the person received it."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import deploys, outbox, repository
from contacts.db import session_scope
from contacts.models import Enrolment, Message, MessageState, TemplateSource
from drip.settings import Settings
from emails.deployed import DeployedTemplate, DeployedTemplates
from emails.errors import TemplateError
from emails.templates import Record, render_bounded
from tests.dashboard.support import make_user, sign_in
from tests.support import SmtpServer, copy_workspace, running_stack, venv_binary
from workflows.deploy import deploy_workspace
from workflows.worker import build_worker

NEW_TEMPLATE = """\
<mj-section>
  <mj-column>
    <mj-text>A brand-new template for {{ contact.first_name }}.</mj-text>
  </mj-column>
</mj-section>
"""

NEW_CAMPAIGN = """\
id: new-hello
name: New hello
trigger:
  manual: true
steps:
  - id: hello
    send_email: {template: new, subject: "Hello {{ contact.first_name }}, this is new"}
"""


async def _drip(env: WorkflowEnvironment, settings: Settings, ws: Workspace, *args: str) -> str:
    """The real ``drip`` command (not blocking the loop the worker shares with this test)."""
    process = await asyncio.create_subprocess_exec(
        venv_binary("drip"),
        *args,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
            "DRIP_HOME": str(settings.home),
            "DRIP_WORKSPACE": str(ws.root),
            "DRIP_DATABASE_URL": settings.database_url,
            "DRIP_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
            "DRIP_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "COLUMNS": "200",
        },
        cwd=settings.home.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, out.decode() + err.decode()
    return out.decode()


async def test_a_new_template_sends_at_once_from_a_worker_started_before_it_existed(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    before = load_workspace(root)
    deploy_workspace(engine, before)
    with session_scope(engine) as s:
        repository.upsert_contact(s, "ann@example.com", {"first_name": "Ann"})
    # the worker reads the workspace folder now, before the template exists
    async with build_worker(time_env.client, settings=settings, engine=engine, workspace=before):
        (root / "emails" / "new.mjml").write_text(NEW_TEMPLATE)
        (root / "campaigns" / "new-hello.yaml").write_text(NEW_CAMPAIGN)
        deployed = await _drip(time_env, settings, before, "campaigns", "deploy")
        assert "new-hello: nothing -> v" in deployed
        enrolled = await _drip(
            time_env, settings, before, "journeys", "enrol", "new-hello", "--email=ann@example.com"
        )
        assert "enrolled 1" in enrolled
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        with session_scope(engine) as s:
            [journey] = s.exec(select(Enrolment)).all()
        await time_env.client.get_workflow_handle(journey.workflow_id).result()
    [email] = smtp.mailbox.messages
    assert "A brand-new template for Ann." in email.html()
    assert email.subject == "Hello Ann, this is new"
    with session_scope(engine) as s:
        [message] = s.exec(select(Message)).all()
    assert (message.state, message.subject) == (MessageState.sent, "Hello Ann, this is new")


async def test_a_journey_renders_the_templates_of_its_version_and_keeps_the_sent_subject(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    version_a = load_workspace(root)
    reminder = root / "emails" / "welcome-reminder.mjml"
    wording_a = reminder.read_text()
    make_user(engine, "mia@example.com", "marketer", "Mia")
    async with running_stack(time_env.client, settings, engine, version_a) as http:
        r = await http.post(
            "/forms/newsletter",
            json={"email": "ann@example.com", "first_name": "Ann", "consent": True},
        )
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)

        # only the template changes, not the campaign's YAML: still a new version
        reminder.write_text(
            wording_a.replace("<mj-text", "<mj-text>Version B here.</mj-text><mj-text", 1)
        )
        version_b = load_workspace(root)
        assert version_b.plans["welcome"].version != version_a.plans["welcome"].version
        [change] = [d for d in deploy_workspace(engine, version_b) if d.changed]
        assert [str(c) for c in change.changes] == [
            "~ template welcome-reminder: welcome-reminder.mjml"
        ]
        r = await http.post(
            "/forms/newsletter",
            json={"email": "bob@example.com", "first_name": "Bob", "consent": True},
        )
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)

        await time_env.sleep(31 * 86400)  # neither opens: both get the reminder
        with session_scope(engine) as s:
            journeys = s.exec(select(Enrolment)).all()
        for journey in journeys:
            await time_env.client.get_workflow_handle(journey.workflow_id).result()
        with session_scope(engine) as s:
            ann = repository.get_contact_by_email(s, "ann@example.com")
        assert ann is not None
        await sign_in(http, "mia@example.com")
        timeline = (await http.get(f"/dashboard/contacts/{ann.id}")).text
        shown = await _drip(time_env, settings, version_a, "journeys", "show", "ann@example.com")

    reminders = {m.recipients[0]: m for m in smtp.mailbox.messages[2:]}
    assert "Version B here." not in reminders["ann@example.com"].html()  # started on A
    assert "Version B here." in reminders["bob@example.com"].html()
    with session_scope(engine) as s:
        subjects = s.exec(
            select(Message.step_id, Message.subject)
            .join(Enrolment, col(Enrolment.workflow_id) == col(Message.workflow_id))
            .where(Message.contact_id == ann.id)
            .order_by(col(Message.created_at))
        ).all()
    assert [tuple(row) for row in subjects] == [
        ("welcome", "Welcome to Acme Outdoor, Ann"),
        ("reminder", "Did you see this, Ann?"),
    ]
    assert "Welcome to Acme Outdoor, Ann" in timeline and "contact.first_name" not in timeline
    assert 'email welcome: sent "Welcome to Acme Outdoor, Ann"' in shown


def test_deploy_stores_each_template_file_once_and_old_rows_render_from_the_workspace(
    any_engine: Engine, tmp_path: Path
) -> None:
    ws = load_workspace(copy_workspace(tmp_path))
    deploy_workspace(any_engine, ws)
    plan = ws.plans["newsletter-onboarding"]
    with session_scope(any_engine) as s:
        stored = {row.hash: row.source for row in s.exec(select(TemplateSource)).all()}
    used = {h for p in ws.plans.values() for files in p.templates.values() for h in files.values()}
    assert stored == {h: ws.template_texts[h] for h in used}  # the shared partial once
    templates = DeployedTemplates(any_engine)
    hiking = templates.get(plan.campaign_id, plan.version, "welcome-hiking")
    assert hiking is not None
    assert set(hiking.files) == {"welcome-hiking.mjml", "partials/shop-note.mjml"}
    assert "Bristol" in str(hiking.files["partials/shop-note.mjml"])
    assert templates.get(plan.campaign_id, "v-never-deployed", "welcome-hiking") is None

    # a deployment from before templates were recorded: its emails use the workspace's files
    old = replace(plan, templates={}, version="v-before-templates")
    with session_scope(any_engine) as s:
        deploys.record_deployment(
            s,
            campaign_id=old.campaign_id,
            version=old.version,
            status="active",
            trigger_kind=old.trigger_kind,
            trigger_value=old.trigger_value,
            plan={k: v for k, v in old.to_dict().items() if k != "templates"},
        )
    assert templates.get(old.campaign_id, old.version, "welcome-hiking") is None


def test_the_outbox_keeps_the_rendered_subject(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "ann@example.com", {"first_name": "Ann"})
        assert contact.id is not None
        outbox.reserve_message(
            s,
            Message(
                id="m1",
                key="journey/x/1/1/hello/1",
                workflow_id="journey/x/1/1",
                open_token="token-m1",
                contact_id=contact.id,
                campaign_id="x",
                step_id="hello",
                template="welcome",
                subject="Hello {{ contact.first_name }}",
            ),
        )
        outbox.record_subject(s, "m1", "Hello Ann " + "x" * 2000)
    with session_scope(any_engine) as s:
        message = outbox.get_message(s, "m1")
    assert message is not None and message.subject == ("Hello Ann " + "x" * 2000)[:1000]


def test_deployed_files_compile_as_the_folder_would() -> None:
    body = (
        "<mj-section><mj-column><mj-text>Body</mj-text></mj-column></mj-section>"
        '{% include "note" %}'
    )
    note = "<mj-section><mj-column><mj-text>From the partial</mj-text></mj-column></mj-section>"
    compiled = DeployedTemplate(name="x", files={"x.mjml": body, "partials/note.mjml": note})
    context = {
        "workspace": Record({"name": "Acme", "postal_address": "1 Road"}),
        "contact": Record({"email": "ann@example.com"}),
        **dict.fromkeys(
            ("unsubscribe_url", "preferences_url", "view_in_browser_url", "subject", "preheader"),
            "x",
        ),
    }
    assert "From the partial" in render_bounded(compiled.compile().html, context, "x")
    # a layout the workspace named but lacked when deployed: the folder's own error
    missing = DeployedTemplate(name="x", files={"x.mjml": body, "layouts/plain.mjml": None})
    with pytest.raises(TemplateError, match="unknown layout 'plain'"):
        missing.compile()
