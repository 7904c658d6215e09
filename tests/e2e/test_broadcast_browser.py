"""A broadcast's dashboard page in a real browser (Debian's chromium, Playwright) during and
after a real send: the engine on Temporal's time-skipping server with a worker, aiosmtpd as the
relay, the app on a loopback port sharing the Temporal client.

An A/B broadcast to 20 contacts sends its sample of 8 and waits 4 hours; three of variant b's
recipients open it (human hits through the tracking consumer) and a privacy proxy fetches the
pixel of an a email. The page shows the send testing, the progress and the A/B figures equal to
what the database says, b leading. A marketer pauses and resumes it with the page's buttons;
the wait is skipped, the winner goes to the rest, and the open page's progress turns to
completed by itself (its polling), no reload. Reloaded, every figure matches the database
again, counted here straight from the tables. Nothing the browser asks for leaves the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.async_api import Page
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from contacts.broadcast_models import BroadcastRecipient, BroadcastSend
from contacts.db import session_scope
from contacts.hits import NewHit, consume, insert_hits
from contacts.models import Event, Hit, Message, utcnow
from contacts.splits import two_proportion_test
from drip.settings import Settings
from tests.dashboard.support import make_user
from tests.e2e._browser import browser_page, fits, serving, sign_in
from tests.support import SmtpServer
from tests.workflows.test_broadcast import (
    AB,
    add_contacts,
    broadcast_workspace,
    small_batches,
    wait_state,
    worker,
)
from webhooks.main import create_app
from workflows.broadcasts import start_broadcast

PAGE = "/dashboard/broadcasts/ab"


def _pct(rate: float | None, signed: bool = False) -> str:
    """A rate as the page prints it."""
    if rate is None:
        return "\u2013"
    return ("%+.1f%%" if signed else "%.1f%%") % (rate * 100)


def _from_the_tables(engine: Engine, send_id: str) -> dict[str, str]:
    """The send's figures counted here from the tables, independently of the page's queries."""
    with session_scope(engine) as s:
        ids = select(Message.id).where(Message.workflow_id == send_id)
        by_state = dict(
            s.exec(
                select(Message.state, sa.func.count())
                .where(Message.workflow_id == send_id)
                .group_by(col(Message.state))
            ).all()
        )
        send = s.get(BroadcastSend, send_id)
        assert send is not None

        def distinct_messages(kind: str) -> int:
            return int(
                s.exec(
                    select(sa.func.count(sa.distinct(col(Event.message_id)))).where(
                        Event.type == kind, col(Event.message_id).in_(ids)
                    )
                ).one()
            )

        bots = s.exec(
            select(sa.func.count()).where(
                col(Hit.bot_reason).is_not(None), col(Hit.message_id).in_(ids)
            )
        ).one()
    sent = int(by_state.get("sent", 0))
    done = sum(int(n) for st, n in by_state.items() if st not in ("pending", "sending"))
    return {
        "state": str(send.state),
        "audience": str(send.audience),
        "sent": str(sent),
        "done": str(done),
        "delivered": str(sent),
        "opened": str(distinct_messages("open")),
        "clicked": str(distinct_messages("click")),
        "bot_opens": str(bots),
    }


def _variants(engine: Engine, send_id: str) -> dict[str, tuple[int, int]]:
    """Per variant of the sample: (emails sent, messages with a human open)."""
    with session_scope(engine) as s:
        rows = s.exec(
            select(BroadcastRecipient.variant, Message.id, Message.state)
            .join(Message, col(Message.key) == send_id + ":" + sa.cast(
                col(BroadcastRecipient.contact_id), sa.String))
            .where(BroadcastRecipient.send_id == send_id, BroadcastRecipient.variant != "")
        ).all()  # fmt: skip
        opened = set(s.exec(select(Event.message_id).where(Event.type == "open")).all())
    figures: dict[str, tuple[int, int]] = {}
    for variant, message_id, state in rows:
        n, o = figures.get(variant, (0, 0))
        figures[variant] = (n + (state == "sent"), o + (message_id in opened))
    return figures


def _opens(engine: Engine, humans: list[str], proxies: list[str]) -> None:
    """Pixel hits stored and judged by the tracking's own consumer."""
    with session_scope(engine) as s:
        insert_hits(
            s,
            [NewHit("open", t, utcnow(), user_agent="Mail") for t in humans]
            + [NewHit("open", t, utcnow(), user_agent="Proxy") for t in proxies],
        )
    with session_scope(engine) as s:
        consume(s, now=utcnow(), min_seconds_after_send=0,
                classify_user_agent=lambda ua: "apple_mpp" if ua == "Proxy" else None)  # fmt: skip


async def _shown(page: Page, expected: dict[str, str]) -> None:
    for figure, value in expected.items():
        shown = await page.locator(f'[data-figure="{figure}"]').first.inner_text()
        assert shown.strip() == value, (figure, shown, value)


async def _state_becomes(page: Page, state: str, within: float = 30) -> None:
    """Wait until the open page's own polling shows ``state`` (no reload)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    locator = page.locator('#progress [data-figure="state"]')
    while (await locator.inner_text()).strip() != state:
        if loop.time() > deadline:
            raise AssertionError(f"the page still shows {await locator.inner_text()!r}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def stack(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> AsyncIterator[tuple[str, Settings]]:
    workspace = broadcast_workspace(tmp_path, AB)
    settings = small_batches(settings, 5, 2)
    add_contacts(engine, 20)
    app = create_app(settings, workspace, engine=engine, temporal=time_env.client)
    async with worker(time_env, settings, engine, workspace), serving(app) as url:
        send = await start_broadcast(time_env.client, engine, workspace, "ab", settings=settings)
        assert send.id == "broadcast:ab:1"
        yield url, settings


async def test_the_broadcast_page_follows_a_real_send(
    stack: tuple[str, Settings],
    time_env: WorkflowEnvironment,
    engine: Engine,
    smtp: SmtpServer,
) -> None:
    base_url, _ = stack
    send_id = "broadcast:ab:1"
    await wait_state(engine, send_id, {"testing"})
    await smtp.mailbox.wait_for(lambda m: len(m.messages) == 8)
    with session_scope(engine) as s:
        sample = s.exec(
            select(Message.step_id, Message.open_token)
            .where(Message.workflow_id == send_id)
            .order_by(col(Message.id))
        ).all()
    b_tokens = [t for step, t in sample if step == "b"]
    a_tokens = [t for step, t in sample if step == "a"]
    _opens(engine, humans=b_tokens[:3], proxies=a_tokens[:1])
    make_user(engine, "mia@example.com", "marketer", "Mia")

    async with browser_page(base_url) as (page, left):
        await sign_in(page, base_url, "mia@example.com")
        await page.goto(f"{base_url}{PAGE}")
        testing = _from_the_tables(engine, send_id)
        assert testing["state"] == "testing" and testing["sent"] == "8"
        assert (testing["opened"], testing["bot_opens"]) == ("3", "1")
        await _shown(page, testing)
        variants = _variants(engine, send_id)
        assert variants == {"a": (4, 0), "b": (4, 3)}
        uplift, confidence = two_proportion_test(0, 4, 3, 4)
        row_a = page.locator('tr[data-variant="a"]')
        row_b = page.locator('tr[data-variant="b"]')
        assert (await row_b.locator('[data-figure="rate"]').inner_text()) == "75.0%"
        assert (await row_a.locator('[data-figure="rate"]').inner_text()) == "0.0%"
        assert (await row_a.locator('[data-figure="confidence"]').inner_text()) == _pct(confidence)
        assert (await row_a.locator('[data-figure="uplift"]').inner_text()) == _pct(uplift, True)
        assert "no winner yet" in await page.locator('[data-figure="winner"]').inner_text()
        await page.wait_for_selector("#broadcast-hourly[data-drawn]")  # the chart is drawn
        await fits(page, "broadcast-testing")

        await page.get_by_role("button", name="Pause").click()
        await page.wait_for_url(f"**{PAGE}?done=paused")
        assert "Broadcast paused" in await page.locator('[role="status"]').inner_text()
        await _state_becomes(page, "paused", within=1)
        await page.get_by_role("button", name="Resume").click()
        await page.wait_for_url(f"**{PAGE}?done=resumed")

        await time_env.sleep(timedelta(hours=4, minutes=1))  # the test's wait is over
        await wait_state(engine, send_id, {"completed"})
        await _state_becomes(page, "completed")  # the page's own polling, no reload
        assert await page.locator("#progress[hx-trigger]").count() == 0  # polling ended
        assert len(smtp.mailbox.messages) == 20

        await page.reload()
        done = _from_the_tables(engine, send_id)
        assert (done["state"], done["sent"], done["done"], done["audience"]) == (
            "completed", "20", "20", "20",
        )  # fmt: skip
        await _shown(page, done)
        assert (await page.locator('[data-figure="winner"]').inner_text()) == "b"
        assert (await row_b.locator('[data-figure="sent"]').inner_text()) == "4"
        assert (await page.locator('[data-state="sent"]').inner_text()) == "20"
        hour0 = page.locator('tr[data-hour="0"] [data-figure="opened"]')
        assert (await hour0.text_content()) == "3"  # in the folded table under the chart
        await fits(page, "broadcast-completed")

        await page.get_by_role("link", name="All broadcasts").click()
        await page.wait_for_url("**/dashboard/broadcasts")
        row = page.locator('tr[data-broadcast="ab"]')
        for figure in ("state", "audience", "sent", "opened", "bot_opens"):
            shown = await row.locator(f'[data-figure="{figure}"]').inner_text()
            assert shown.strip() == done[figure], figure
        await fits(page, "broadcasts")
    assert left == []
