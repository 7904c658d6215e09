"""Where running journeys are, on the real Temporal dev server (the time-skipping server cannot
count workflows): the campaign page's "journeys here now", a contact's current step on the
timeline and in ``/api/journeys``, each against what the journeys themselves say through their
``state`` query, which reads the workflow's memory and not the search attributes the pages read.

Three people join the welcome campaign and get the welcome email; one opens it and moves on to
the tips email and its ``wait_for_click``, one unsubscribes (her journey ends), one waits for an
open. Nothing in the campaign needs Temporal's clock to move: the waits are days long.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.models import EnrolmentState
from drip.settings import Settings
from tests.dashboard.support import make_user, sign_in
from tests.engine_support import Journeys, journeys
from tests.support import SmtpServer, api_client
from tests.webhooks._admin import make_key

#: the welcome campaign's steps a journey can be found at, in order
DWELL = ("welcome", "wait_for_open", "tips", "wait_for_click", "reminder")


@pytest.fixture
async def j(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> AsyncIterator[Journeys]:
    async with journeys(dev_env, settings, engine, workspace, smtp.mailbox) as stack:
        yield stack


@pytest.fixture
async def http(
    j: Journeys, settings: Settings, workspace: Workspace
) -> AsyncIterator[httpx.AsyncClient]:
    make_user(j.engine, "mia@example.com", "marketer")
    async with api_client(settings, workspace, j.engine, j.env.client) as client:
        assert (await sign_in(client, "mia@example.com")).status_code == 303
        yield client


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)


def _here_now(html: str) -> dict[str, str]:
    shown = {}
    for step_id in DWELL:
        row = html.split(f'<tr data-step="{step_id}">', 1)[1].split("</tr>", 1)[0]
        found = re.search(r'data-figure="here_now">([^<]*)<', row)
        assert found, f"no here-now figure for {step_id}"
        shown[step_id] = found.group(1).strip()
    return shown


async def test_here_now_and_current_steps_match_the_journeys(
    j: Journeys, http: httpx.AsyncClient
) -> None:
    opener = await j.form("newsletter", "olive@example.com", first_name="Olive")
    quitter = await j.form("newsletter", "quinn@example.com", first_name="Quinn")
    waiter = await j.form("newsletter", "wes@example.com", first_name="Wes")
    await j.mailbox.wait_for(lambda m: len(m.messages) == 3)
    ids = {c: j.enrolment(c, "welcome").workflow_id for c in (opener, quitter, waiter)}

    async def at(contact_id: int, step_id: str) -> bool:
        return (await j.state(ids[contact_id])).current_step == step_id

    for contact_id in ids:
        await _until(lambda c=contact_id: at(c, "wait_for_open"), "all wait for an open")
    await j.track("open", opener, "welcome")
    await j.unsubscribe(quitter)
    await _until(lambda: at(opener, "wait_for_click"), "the opener waits for a click")
    await _until(
        lambda: asyncio.sleep(0, j.enrolment(quitter, "welcome").state == EnrolmentState.exited),
        "the unsubscriber's journey ended",
    )

    # what the journeys say of themselves, from their own memory
    running = [c for c in ids if j.enrolment(c, "welcome").state == EnrolmentState.running]
    truth = Counter([(await j.state(ids[c])).current_step for c in running])
    expected = {step_id: str(truth.get(step_id, 0)) for step_id in DWELL}
    assert expected == {
        "welcome": "0",
        "wait_for_open": "1",
        "tips": "0",
        "wait_for_click": "1",
        "reminder": "0",
    }

    page = ""

    async def page_agrees() -> bool:  # Temporal's visibility catches up within moments
        nonlocal page
        response = await http.get("/dashboard/campaigns/welcome")
        assert response.status_code == 200, response.text
        page = response.text
        return _here_now(page) == expected

    await _until(page_agrees, f"the campaign page shows {expected}")
    assert 'data-figure="positions"' not in page and 'data-figure="step_unknown"' not in page
    # the flow picture carries the same figure in the step's box
    assert "1 here now" in page.split('data-step="wait_for_open"', 1)[1].split("</g>", 1)[0]

    timeline = (await http.get(f"/dashboard/contacts/{opener}")).text
    row = timeline.split('<tr data-journey="welcome">', 1)[1].split("</tr>", 1)[0]
    assert 'data-figure="step">wait_for_click<' in row
    assert 'data-figure="steps_note"' not in timeline
    ended = (await http.get(f"/dashboard/contacts/{quitter}")).text
    assert 'data-figure="step">\u2013<' in ended.split('<tr data-journey="welcome">', 1)[1]

    listed = await http.get("/api/journeys", headers=make_key(j.engine, "journeys:read"))
    assert listed.status_code == 200, listed.text
    steps = {item["contact_id"]: item["current_step"] for item in listed.json()["items"]}
    assert steps == {opener: "wait_for_click", quitter: None, waiter: "wait_for_open"}
