"""``/dashboard/campaigns/{id}`` over HTTP: counts of a campaign run through the real engine,
A/B uplift and confidence on seeded numbers, the versions diff, and pause/resume."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import deploys, repository
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Event, Message, MessageState
from drip.settings import Settings
from tests.dashboard.support import form_csrf, make_user, sign_in
from tests.engine_support import Journeys, journeys, workspace_with
from tests.support import SmtpServer, api_client, free_port
from webhooks.dashboard._campaign_figures import two_proportion_test
from workflows.client import journey_state
from workflows.deploy import deploy_workspace

AB = """\
id: ab
name: Subject test
trigger:
  form: newsletter
goal:
  event: purchase
steps:
  - id: pick
    split:
      variants:
        - {name: a, percent: 50, goto: send_a}
        - {name: b, percent: 50, goto: send_b}
  - id: send_a
    send_email: {template: welcome, subject: "Subject A"}
    next: later
  - id: send_b
    send_email: {template: welcome, subject: "Subject B"}
  - id: later
    wait: {duration: 3d}
  - id: done
    exit:
"""

MINUTE = timedelta(minutes=1)


def figure(html: str, scope: str, name: str) -> str:
    """The text of ``data-figure="name"`` inside the element marked ``scope`` (an attribute)."""
    start = html.index(scope)
    match = re.search(rf'data-figure="{name}">([^<]*)<', html[start:])
    assert match, f"no {name} in {scope}"
    return match.group(1).strip()


@pytest.fixture
def ab(tmp_path: Path) -> Workspace:
    return workspace_with(tmp_path, AB)


@pytest.fixture
async def j(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    ab: Workspace,
) -> AsyncIterator[Journeys]:
    async with journeys(time_env, settings, engine, ab, smtp.mailbox) as stack:
        yield stack


@pytest.fixture
async def marketer(
    j: Journeys, settings: Settings, ab: Workspace
) -> AsyncIterator[httpx.AsyncClient]:
    make_user(j.engine, "mia@example.com", "marketer")
    async with api_client(settings, ab, j.engine, j.env.client) as http:
        assert (await sign_in(http, "mia@example.com")).status_code == 303
        yield http


async def test_counts_of_a_campaign_run_through_the_engine_match_the_database(
    j: Journeys, marketer: httpx.AsyncClient
) -> None:
    people = [await j.form("newsletter", f"p{i}@example.com") for i in range(6)]
    await j.advance(MINUTE)
    assert len(j.mailbox.messages) == 6
    sent_steps = {p: j.messages(p)[0].step_id for p in people}
    await j.track("open", people[0], sent_steps[people[0]])
    await j.track("open", people[1], sent_steps[people[1]])
    await j.track("click", people[1], sent_steps[people[1]])
    await j.event(people[2], "purchase")
    await j.advance(MINUTE)

    page = await marketer.get("/dashboard/campaigns/ab")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<svg" in html and 'data-step="send_a"' in html and "<script>" not in html
    with session_scope(j.engine) as s:
        sent = dict(
            s.exec(
                select(Message.step_id, sa.func.count())
                .where(Message.state == MessageState.sent)
                .group_by(col(Message.step_id))
            ).all()
        )
        running = s.exec(
            select(sa.func.count()).where(Enrolment.state == EnrolmentState.running)
        ).one()
        converted = s.exec(
            select(sa.func.count()).where(Enrolment.state == EnrolmentState.converted)
        ).one()
    assert sum(sent.values()) == 6 and running == 5 and converted == 1
    for step_id in ("send_a", "send_b"):
        row = f'<tr data-step="{step_id}">'
        assert figure(html, row, "sent") == str(sent.get(step_id, 0))
    opened_step = sent_steps[people[0]]
    clicked_step = sent_steps[people[1]]
    opens = {"send_a": 0, "send_b": 0}
    opens[opened_step] += 1
    opens[clicked_step] += 1
    for step_id, n in opens.items():
        assert figure(html, f'<tr data-step="{step_id}">', "unique_opens") == str(n)
    assert figure(html, f'<tr data-step="{clicked_step}">', "unique_clicks") == "1"
    # where journeys are is Temporal's to count, and the time-skipping server cannot: the page
    # says so rather than show zeros (test_here_now counts them on the dev server)
    for step_id in ("send_a", "send_b", "later"):
        assert figure(html, f'<tr data-step="{step_id}">', "here_now") == "?"
    assert "cannot count workflows" in figure(html, "<table", "positions")
    assert (
        'data-figure="here_now"'
        not in html[html.index('<tr data-step="pick">') :].split("</tr>")[0]
    )
    funnel = {
        stage: figure(html, f'data-stage="{stage}"', stage)
        for stage in ("entered", "emailed", "opened", "clicked", "converted")
    }
    assert funnel == {
        "entered": "6",
        "emailed": "6",
        "opened": "2",
        "clicked": "1",
        "converted": "1",
    }
    split = html[html.index('data-split="pick"') :]
    for variant, step_id in (("a", "send_a"), ("b", "send_b")):
        assert figure(split, f'data-variant="{variant}"', "sent") == str(sent.get(step_id, 0))
    assert figure(split, 'data-variant="a"', "uplift") == "baseline"

    listing = await marketer.get("/dashboard/campaigns")
    assert 'href="/dashboard/campaigns/ab"' in listing.text


def test_two_proportion_test_matches_the_textbook_formula() -> None:
    uplift, confidence = two_proportion_test(100, 1000, 130, 1000)
    pooled = 230 / 2000
    z = 0.03 / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert uplift == pytest.approx(0.30)
    assert confidence == pytest.approx(math.erf(z / math.sqrt(2)))
    assert confidence == pytest.approx(0.9645, abs=1e-4)
    assert two_proportion_test(0, 10, 0, 10) == (None, None)  # no rate to compare
    assert two_proportion_test(0, 0, 3, 10) == (None, None)


def _seed_split(engine: Engine, sent: dict[str, int], clicked: dict[str, int]) -> None:
    """Sent emails of the split's variant steps and clicks of some of them, as the engine and
    the tracking routes record them, without running the journeys."""
    with session_scope(engine) as s:
        version = deploys.current_versions(s)["ab"].version
        n = 0
        for step_id, count in sent.items():
            for i in range(count):
                n += 1
                contact, _ = repository.upsert_contact(
                    s, f"seed{n}@example.com", {}, consent_source="test"
                )
                assert contact.id is not None
                message_id = uuid.uuid4().hex
                s.add(
                    Message(
                        id=message_id,
                        key=f"seed/{n}",
                        contact_id=contact.id,
                        campaign_id="ab",
                        campaign_version=version,
                        step_id=step_id,
                        workflow_id=f"journey/ab/{contact.id}/1",
                        template="welcome",
                        subject="seeded",
                        state=MessageState.sent,
                        open_token=uuid.uuid4().hex,
                    )
                )
                if i < clicked[step_id]:
                    s.add(
                        Event(
                            contact_id=contact.id,
                            type="click",
                            message_id=message_id,
                            dedupe_key=f"seed-click/{n}",
                        )
                    )


async def test_split_uplift_and_confidence_on_seeded_numbers(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    workspace = workspace_with(tmp_path, AB.replace("goal:\n  event: purchase\n", ""))
    make_user(engine, "mia@example.com", "marketer")
    async with api_client(settings, workspace, engine) as http:
        _seed_split(engine, {"send_a": 200, "send_b": 200}, {"send_a": 20, "send_b": 36})
        await sign_in(http, "mia@example.com")
        html = (await http.get("/dashboard/campaigns/ab")).text
    split = html[html.index('data-split="pick"') :]
    assert "by click rate" in split
    assert figure(split, 'data-variant="a"', "rate") == "10.0%"
    assert figure(split, 'data-variant="b"', "rate") == "18.0%"
    assert figure(split, 'data-variant="b"', "clicked") == "36"
    uplift, confidence = two_proportion_test(20, 200, 36, 200)
    assert uplift == pytest.approx(0.8) and confidence is not None
    assert figure(split, 'data-variant="b"', "uplift") == "+80.0%"
    assert figure(split, 'data-variant="b"', "confidence") == f"{confidence * 100:.1f}%"
    assert 0.97 < confidence < 0.99


async def test_versions_show_what_changed_between_deployments(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    make_user(engine, "mia@example.com", "marketer")
    deploy_workspace(engine, workspace_with(tmp_path / "one", AB))
    changed = workspace_with(tmp_path / "two", AB.replace('"Subject B"', '"A better subject"'))
    async with api_client(settings, changed, engine) as http:
        await sign_in(http, "mia@example.com")
        html = (await http.get("/dashboard/campaigns/ab")).text
    with session_scope(engine) as s:
        history = deploys.version_history(s, "ab")
    assert len(history) == 2
    versions = html[html.index('class="versions"') :]
    assert versions.index(history[0].version) < versions.index(history[1].version)
    assert "step send_b: subject: &#39;Subject B&#39; -&gt; &#39;A better subject&#39;" in versions


async def test_pause_and_resume_need_csrf_and_the_marketer_role_and_pause_the_journeys(
    j: Journeys, marketer: httpx.AsyncClient
) -> None:
    people = [await j.form("newsletter", f"r{i}@example.com") for i in range(2)]
    await j.advance(MINUTE)
    page = await marketer.get("/dashboard/campaigns/ab")
    csrf = form_csrf(page.text)
    assert 'action="/dashboard/campaigns/ab/pause"' in page.text

    refused = await marketer.post("/dashboard/campaigns/ab/pause", data={"csrf_token": "nope"})
    assert refused.status_code == 403 and "Form expired" in refused.text
    with session_scope(j.engine) as s:
        assert deploys.current_versions(s)["ab"].status == "active"

    paused = await marketer.post("/dashboard/campaigns/ab/pause", data={"csrf_token": csrf})
    assert paused.status_code == 303, paused.text
    shown = await marketer.get(paused.headers["location"])
    assert "Campaign paused; 2 running journeys paused." in shown.text
    assert 'action="/dashboard/campaigns/ab/resume"' in shown.text
    with session_scope(j.engine) as s:
        assert deploys.current_versions(s)["ab"].status == "paused"
    for contact_id in people:
        state = await journey_state(j.env.client, j.enrolment(contact_id, "ab").workflow_id)
        assert state.paused

    resumed = await marketer.post("/dashboard/campaigns/ab/resume", data={"csrf_token": csrf})
    assert resumed.status_code == 303
    with session_scope(j.engine) as s:
        assert deploys.current_versions(s)["ab"].status == "active"
    for contact_id in people:
        state = await journey_state(j.env.client, j.enrolment(contact_id, "ab").workflow_id)
        assert not state.paused

    make_user(j.engine, "sam@example.com", "sales")
    marketer.cookies.clear()
    await sign_in(marketer, "sam@example.com")
    sales_page = await marketer.get("/dashboard/campaigns/ab")
    assert sales_page.status_code == 403
    sales_csrf = form_csrf(sales_page.text)  # the sign-out form of the 403 page
    denied = await marketer.post("/dashboard/campaigns/ab/pause", data={"csrf_token": sales_csrf})
    assert denied.status_code == 403 and "Not for your role" in denied.text
    with session_scope(j.engine) as s:
        assert deploys.current_versions(s)["ab"].status == "active"


async def test_pause_without_temporal_shows_the_error_and_changes_nothing(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    away = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    make_user(engine, "mia@example.com", "marketer")
    async with api_client(away, workspace_with(tmp_path, AB), engine) as http:
        await sign_in(http, "mia@example.com")
        csrf = form_csrf((await http.get("/dashboard/campaigns/ab")).text)
        r = await http.post("/dashboard/campaigns/ab/pause", data={"csrf_token": csrf})
        assert r.status_code == 503
        assert "Temporal" in r.text and "cannot be reached" in r.text
        assert "<h1>Subject test</h1>" in r.text  # the page itself still shows
        assert (await http.get("/dashboard/campaigns/ab")).status_code == 200
        missing = await http.get("/dashboard/campaigns/nope")
        assert missing.status_code == 404
    with session_scope(engine) as s:
        assert deploys.current_versions(s)["ab"].status == "active"


async def test_with_temporal_unreachable_the_page_says_where_journeys_are_is_unknown(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    """Nothing listens where Temporal should be: the page still renders from the database,
    with "?" for here-now and the reason, and does not wait past the positions budget."""
    away = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    make_user(engine, "mia@example.com", "marketer")
    async with api_client(away, workspace, engine) as http:
        assert (await sign_in(http, "mia@example.com")).status_code == 303
        page = await http.get("/dashboard/campaigns/welcome")
    assert page.status_code == 200
    html = page.text
    assert figure(html, '<tr data-step="wait_for_open">', "here_now") == "?"
    assert "cannot be reached" in figure(html, "<table", "positions")
    assert "here now" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]
