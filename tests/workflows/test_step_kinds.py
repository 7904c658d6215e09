"""The step kinds the engine learnt after the welcome slice: branch, split, goto and scores,
each on Temporal's time-skipping server, counted from what the SMTP server received."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment, Event
from drip.settings import Settings
from tests.support import (
    EXAMPLES,
    SmtpServer,
    copy_workspace,
    running_stack,
    tracked_and_routed,
)
from tests.workflows.recording import maybe_record
from workflows.journey import _variant


def _only(tmp_path: Path, campaign_id: str, text: str) -> Workspace:
    """The demo workspace with one campaign: this one (the newsletter form would start welcome)."""
    root = copy_workspace(tmp_path)
    (root / "campaigns" / "welcome.yaml").unlink()
    (root / "campaigns" / f"{campaign_id}.yaml").write_text(text)
    return load_workspace(root)


async def _finish_all(env: WorkflowEnvironment, engine: Engine) -> list[Enrolment]:
    await env.sleep(timedelta(days=60))
    with session_scope(engine) as s:
        enrolments = list(s.exec(select(Enrolment)).all())
    for e in enrolments:
        await env.client.get_workflow_handle(e.workflow_id).result()
    return enrolments


@pytest.mark.parametrize(
    ("interest", "subject", "tag"),
    [
        ("climbing", "Chalk up, Cai: welcome, climber", "climbing"),
        ("hiking", "Boots on, Cai: welcome, hiker", "hiking"),
        ("Camping", "Welcome, Cai: a bit of everything", "all-rounder"),
    ],
)
async def test_newsletter_onboarding_branches_on_the_answer(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    interest: str,
    subject: str,
    tag: str,
) -> None:
    workspace = load_workspace(EXAMPLES)
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        r = await http.post(
            "/forms/preferences",
            json={
                "email": "cai@example.com",
                "first_name": "Cai",
                "interest": interest,
                "consent": True,
            },
        )
        assert r.status_code == 202, r.text
        [enrolment] = await _finish_all(time_env, engine)
        handle = time_env.client.get_workflow_handle(enrolment.workflow_id)
        await maybe_record(handle, f"onboarding-{tag}")
    assert smtp.mailbox.subjects() == [subject]
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, "cai@example.com")
    assert contact is not None and contact.tags == [tag]


LOOP = """\
id: loop
name: Scored loop
trigger:
  form: newsletter
steps:
  - id: hello
    send_email: {template: welcome, subject: "Hello"}
  - id: points
    update_contact: {add_score: 10}
  - id: check
    branch:
      cases:
        - {when: 'contact.score >= 30', goto: hot}
        - {when: 'opened("hello")', goto: reader}
      else: again_wait
  - id: again_wait
    wait: {duration: 1d}
  - id: again
    goto: {step: points, max_times: 5}
  - id: cold
    exit: {reason: gave up}
  - id: reader
    send_email: {template: tips, subject: "For readers"}
    next: cold
  - id: hot
    update_contact: {add_tags: [hot]}
"""


async def test_goto_loops_with_a_wait_and_scores_once_per_visit(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = _only(tmp_path, "loop", LOOP)
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        r = await http.post("/forms/newsletter", json={"email": "lu@example.com", "consent": True})
        assert r.status_code == 202
        [enrolment] = await _finish_all(time_env, engine)
        result = await time_env.client.get_workflow_handle(enrolment.workflow_id).result()
    # 10 points per pass through `points`: the third pass reaches 30 and the branch goes hot
    assert result["visited"] == [
        "hello", "points", "check", "again_wait", "again",
        "points", "check", "again_wait", "again",
        "points", "check", "hot",
    ]  # fmt: skip
    assert smtp.mailbox.subjects() == ["Hello"]
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, "lu@example.com")
        scores = s.exec(select(Event).where(Event.type == "score")).all()
    assert contact is not None and contact.score == 30 and contact.tags == ["hot"]
    assert len(scores) == 3  # one per visit: the key makes a retried activity add nothing


async def test_branch_sees_the_journeys_own_opens(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = _only(tmp_path, "loop", LOOP)
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        r = await http.post("/forms/newsletter", json={"email": "ola@example.com", "consent": True})
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        html = smtp.mailbox.messages[0].html()
        token = html.split("/t/o/", 1)[1].split(".gif", 1)[0]
        assert (await http.get(f"/t/o/{token}.gif")).status_code == 200
        await tracked_and_routed(engine)  # the open reaches the journey a moment later
        await _finish_all(time_env, engine)
    assert smtp.mailbox.subjects() == ["Hello", "For readers"]


def test_split_assignment_is_stable_and_follows_the_percentages(tmp_path: Path) -> None:
    text = """\
id: ab
name: AB
trigger:
  form: newsletter
steps:
  - id: pick
    split:
      variants:
        - {name: a, percent: 20, goto: a}
        - {name: b, percent: 80, goto: b}
  - id: a
    exit:
  - id: b
    exit:
"""
    root = copy_workspace(tmp_path)
    (root / "campaigns" / "ab.yaml").write_text(text)
    step = load_workspace(root).plans["ab"].steps["pick"]
    picks = [_variant(step, contact_id, "ab") for contact_id in range(1, 5001)]
    assert picks == [_variant(step, contact_id, "ab") for contact_id in range(1, 5001)]
    share_a = picks.count("a") / len(picks)
    assert 0.17 < share_a < 0.23  # 20% +- 3 points over 5000 contacts


SPLIT = """\
id: ab
name: Subject test
trigger:
  form: newsletter
steps:
  - id: pick
    split:
      variants:
        - {name: a, percent: 50, goto: send_a}
        - {name: b, percent: 50, goto: send_b}
  - id: send_a
    send_email: {template: welcome, subject: "Subject A"}
    next: done
  - id: send_b
    send_email: {template: welcome, subject: "Subject B"}
  - id: done
    exit:
"""


async def test_split_runs_in_the_journey(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = _only(tmp_path, "ab", SPLIT)
    step = workspace.plans["ab"].steps["pick"]
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        for n in range(6):
            r = await http.post(
                "/forms/newsletter", json={"email": f"p{n}@example.com", "consent": True}
            )
            assert r.status_code == 202
        await _finish_all(time_env, engine)
        with session_scope(engine) as s:
            ids = {
                c.email: c.id
                for c in (repository.get_contact_by_email(s, f"p{n}@example.com") for n in range(6))
                if c is not None
            }
    expected = {
        email: "Subject A" if _variant(step, cid, "ab") == "send_a" else "Subject B"
        for email, cid in ids.items()
        if cid is not None
    }
    assert {m.recipients[0]: m.subject for m in smtp.mailbox.messages} == expected
