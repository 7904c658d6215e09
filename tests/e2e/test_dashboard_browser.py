"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the real
app on a real port, after a campaign ran through the real engine (Temporal's time-skipping
server, a worker, an SMTP server).

A marketer sees the welcome campaign's counts equal to what the database says and gets a 403
page on an admin page; a sales user acknowledges a lead from "my leads" and the database says
so. Every page is checked at 1280 and 390 px for horizontal scrolling, every request the
browser makes must go to the app (nothing leaves the machine), and each page is saved as a
screenshot under ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.async_api import Page
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.hits import NewHit, consume, insert_hits
from contacts.models import (
    Enrolment,
    EnrolmentState,
    Event,
    Hit,
    LeadAlert,
    Message,
    MessageState,
    utcnow,
)
from drip.settings import Settings
from tests.dashboard.support import make_alert, make_user
from tests.e2e._browser import browser_page, fits, serving, sign_in
from tests.engine_support import Journeys, journeys
from tests.support import SmtpServer
from webhooks.main import create_app

MINUTE = timedelta(minutes=1)


@pytest.fixture
async def j(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> AsyncIterator[Journeys]:
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as stack:
        yield stack


@pytest.fixture
async def base_url(
    j: Journeys, settings: Settings, engine: Engine, workspace: Workspace
) -> AsyncIterator[str]:
    """The real app on a loopback port, in this test's event loop (so it shares the Temporal
    client the journeys run on)."""
    app = create_app(settings, workspace, engine=engine, temporal=j.env.client)
    async with serving(app) as url:
        yield url


async def _run_welcome(j: Journeys, engine: Engine) -> None:
    """Three sign-ups: one opens (a person), one unsubscribes, and a privacy proxy fetches the
    pixel of the third's email (a flagged hit, never an open)."""
    opener = await j.form("newsletter", "olive@example.com", first_name="Olive")
    quitter = await j.form("newsletter", "quinn@example.com", first_name="Quinn")
    proxied = await j.form("newsletter", "pat@example.com", first_name="Pat")
    await j.advance(MINUTE)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 3)
    await j.track("open", opener, "welcome")
    await j.unsubscribe(quitter)
    message = j.message(proxied, "welcome")
    with session_scope(engine) as s:  # stored and judged by the tracking's own consumer
        insert_hits(s, [NewHit("open", message.open_token, utcnow(), user_agent="Proxy")])
    with session_scope(engine) as s:
        consume(s, now=utcnow(), classify_user_agent=lambda _: "apple_mpp",
                min_seconds_after_send=0)  # fmt: skip
    await j.advance(MINUTE)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 4)  # the opener's tips
    for _ in range(200):  # until nothing is between pending and sent
        with session_scope(engine) as s:
            moving = s.exec(
                select(sa.func.count()).where(
                    col(Message.state).in_([MessageState.pending, MessageState.sending])
                )
            ).one()
            ended = s.exec(
                select(sa.func.count()).where(Enrolment.state == EnrolmentState.exited)
            ).one()
        if not moving and ended == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the journeys did not settle")


def _welcome_figures(engine: Engine) -> dict[str, str]:
    """The welcome campaign's figures counted straight from the tables, independently of the
    dashboard's queries."""
    with session_scope(engine) as s:
        ids = select(Message.id).where(Message.campaign_id == "welcome")
        enrolments = select(sa.func.count()).where(Enrolment.campaign_id == "welcome")
        return {
            "running": str(s.exec(enrolments.where(Enrolment.state == "running")).one()),
            "sent": str(
                s.exec(
                    select(sa.func.count()).where(
                        Message.campaign_id == "welcome", Message.state == "sent"
                    )
                ).one()
            ),
            "unique_opens": str(
                s.exec(
                    select(sa.func.count(sa.distinct(col(Event.contact_id)))).where(
                        Event.type == "open", col(Event.message_id).in_(ids)
                    )
                ).one()
            ),
            "bot_opens": str(
                s.exec(
                    select(sa.func.count()).where(
                        col(Hit.bot_reason).is_not(None), col(Hit.message_id).in_(ids)
                    )
                ).one()
            ),
            "converted": str(s.exec(enrolments.where(Enrolment.state == "converted")).one()),
            "unsubscribes": str(
                s.exec(enrolments.where(Enrolment.end_reason == "unsubscribe")).one()
            ),
        }


def _welcome_steps(engine: Engine) -> dict[str, dict[str, str]]:
    """Per step of the welcome campaign, straight from the tables: for send steps the emails
    sent and unique human openers. Journeys here now are counted by Temporal, which the
    time-skipping server cannot do: the page shows "?" (tests/dashboard/test_here_now.py
    counts them on the dev server)."""
    with session_scope(engine) as s:
        sent = dict(
            s.exec(
                select(Message.step_id, sa.func.count())
                .where(Message.campaign_id == "welcome", Message.state == "sent")
                .group_by(col(Message.step_id))
            ).all()
        )
        opened = dict(
            s.exec(
                select(Message.step_id, sa.func.count(sa.distinct(col(Event.contact_id))))
                .join(Event, col(Event.message_id) == col(Message.id))
                .where(Message.campaign_id == "welcome", Event.type == "open")
                .group_by(col(Message.step_id))
            ).all()
        )
    assert sent and opened, "the run left nothing to compare"
    steps: dict[str, dict[str, str]] = {}
    for step_id in ("welcome", "wait_for_open", "tips", "wait_for_click"):
        steps[step_id] = {"here_now": "?"}
        if step_id in ("welcome", "tips"):
            steps[step_id]["sent"] = str(sent.get(step_id, 0))
            steps[step_id]["unique_opens"] = str(opened.get(step_id, 0))
    return steps


async def _sign_out(page: Page) -> None:
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/dashboard/login")


async def test_dashboard_in_a_browser(j: Journeys, engine: Engine, base_url: str) -> None:
    await _run_welcome(j, engine)
    expected = _welcome_figures(engine)
    assert expected["sent"] == "4" and expected["unique_opens"] == "1"
    assert expected["bot_opens"] == "1" and expected["unsubscribes"] == "1"
    make_user(engine, "mia@example.com", "marketer", "Mia")
    make_user(engine, "sam@example.com", "sales", "Sam")
    alert_id = make_alert(engine, "sam@example.com")

    async with browser_page(base_url) as (page, left):
        await page.goto(f"{base_url}/dashboard/campaigns")  # not signed in: to the form
        assert "/dashboard/login" in page.url
        await fits(page, "login")

        await sign_in(page, base_url, "mia@example.com")
        assert page.url.endswith("/dashboard/campaigns")
        row = page.locator('tr[data-campaign="welcome"]')
        for figure, value in expected.items():
            shown = await row.locator(f'[data-figure="{figure}"]').inner_text()
            assert shown.strip() == value, (figure, shown, value)
        await fits(page, "campaigns")

        await row.get_by_role("link", name="welcome").click()  # the campaign's own page
        await page.wait_for_url("**/dashboard/campaigns/welcome")
        for step_id, figures in _welcome_steps(engine).items():
            step = page.locator(f'tr[data-step="{step_id}"]')
            for figure, value in figures.items():
                shown = await step.locator(f'[data-figure="{figure}"]').inner_text()
                assert shown.strip() == value, (step_id, figure, shown, value)
        assert await page.locator('svg g[data-step="welcome"] text.note').count() == 1
        await fits(page, "campaign")

        refused = await page.goto(f"{base_url}/dashboard/admin/users")
        assert refused is not None and refused.status == 403
        assert await page.get_by_role("heading", name="Not for your role").is_visible()
        await fits(page, "forbidden")
        await _sign_out(page)

        await sign_in(page, base_url, "sam@example.com")
        assert page.url.endswith("/dashboard/leads")
        await fits(page, "leads")
        await page.get_by_role("button", name="Acknowledge Lee Ada").click()
        await page.get_by_role("status").filter(has_text="Acknowledged by you").wait_for()
        await fits(page, "leads-acknowledged")

    with session_scope(engine) as s:
        alert = s.get(LeadAlert, alert_id)
        assert alert is not None
        assert (alert.state, alert.acknowledged_by) == ("acknowledged", "sam@example.com")
    assert left == [], f"requests left the machine: {left}"
