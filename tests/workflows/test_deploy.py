"""Deploys: explicit, recorded, idempotent; new enrolments get the live version while running
journeys keep the one they started with."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.diff import diff_plans
from campaigns.workspace import load_workspace
from contacts import deploys
from contacts.db import session_scope
from contacts.models import CampaignVersion, Enrolment
from drip.settings import Settings
from tests.support import SmtpServer, copy_workspace, running_stack
from workflows.deploy import deploy_workspace, live_plans


def _versions(engine: Engine, campaign_id: str = "welcome") -> list[tuple[str, str, str]]:
    with session_scope(engine) as s:
        rows = s.exec(
            select(CampaignVersion)
            .where(CampaignVersion.campaign_id == campaign_id)
            .order_by(col(CampaignVersion.id))
        ).all()
        return [(r.campaign_id, r.version, r.status) for r in rows]


def test_deploy_records_changes_once(any_engine: Engine, tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    first = load_workspace(root)
    planned = deploy_workspace(any_engine, first, dry_run=True)
    assert {d.campaign_id for d in planned if d.changed} == set(first.plans)
    assert _versions(any_engine) == []  # a dry run writes nothing

    deploy_workspace(any_engine, first)
    deploy_workspace(any_engine, first)  # unchanged: no second row
    v1 = first.plans["welcome"].version
    assert _versions(any_engine) == [("welcome", v1, "active")]

    path = root / "campaigns" / "welcome.yaml"
    path.write_text(path.read_text().replace("timeout: 2d", "timeout: 3d"))
    second = load_workspace(root)
    [pending] = [d for d in deploy_workspace(any_engine, second) if d.changed]
    assert [str(c) for c in pending.changes] == ["~ step wait_for_open: seconds: 2d -> 3d"]
    v2 = second.plans["welcome"].version
    path.write_text(path.read_text().replace("status: active\n", "") + "status: paused\n")
    deploy_workspace(any_engine, load_workspace(root))
    assert _versions(any_engine) == [
        ("welcome", v1, "active"),
        ("welcome", v2, "active"),
        ("welcome", v2, "paused"),
    ]
    with session_scope(any_engine) as s:
        assert live_plans(s, "form", "newsletter") == []  # paused: nobody new enters
        assert len(deploys.version_history(s, "welcome")) == 3


def test_diff_names_steps_added_removed_and_changed(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    old = load_workspace(root).plans["welcome"]
    path = root / "campaigns" / "welcome.yaml"
    text = path.read_text()
    text = text.replace("      add_tags: [engaged]\n", "      add_tags: [engaged, reader]\n")
    text = text.replace("  - id: done\n    exit:\n", "  - id: done\n    exit: {reason: finished}\n")
    path.write_text(text)
    new = load_workspace(root).plans["welcome"]
    assert [str(c) for c in diff_plans(old, new)] == [
        "~ step tag_engaged: add_tags: ['engaged'] -> ['engaged', 'reader']",
        "~ step done: reason: '' -> 'finished'",
    ]
    assert [str(c) for c in diff_plans(None, new)] == ["+ campaign: welcome (7 steps)"]
    assert [str(c) for c in diff_plans(old, None)] == ["- campaign: welcome"]
    assert diff_plans(new, new) == []


async def test_running_journeys_keep_their_version(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    v1 = load_workspace(root)
    async with running_stack(time_env.client, settings, engine, v1) as http:
        r = await http.post("/forms/newsletter", json={"email": "old@example.com", "consent": True})
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)

        path = root / "campaigns" / "welcome.yaml"
        path.write_text(path.read_text().replace("Did you see this", "Still there"))
        v2 = load_workspace(root)
        deploy_workspace(engine, v2)
        r = await http.post("/forms/newsletter", json={"email": "new@example.com", "consent": True})
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)

        await time_env.sleep(31 * 86400)  # neither opens: both get their reminder
        with session_scope(engine) as s:
            enrolments = {e.contact_id: e for e in s.exec(select(Enrolment)).all()}
        for e in enrolments.values():
            await time_env.client.get_workflow_handle(e.workflow_id).result()

    reminders = {m.recipients[0]: m.subject for m in smtp.mailbox.messages[2:]}
    assert reminders == {
        "old@example.com": "Did you see this, friend?",
        "new@example.com": "Still there, friend?",
    }
    versions = sorted(e.campaign_version for e in enrolments.values())
    assert versions == sorted([v1.plans["welcome"].version, v2.plans["welcome"].version])
