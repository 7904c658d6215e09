"""The walking skeleton end to end on the real Temporal dev server, API, worker and SMTP server.

form POST -> welcome email (pixel, rewritten links) -> pixel GET -> tips email -> click GET
-> 302 to the original URL -> contact tagged ``engaged`` -> journey completes.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import EnrolmentState
from drip.settings import Settings
from tests.support import EXAMPLES, SmtpServer, running_stack
from workflows.client import journey_state, journey_workflow_id

pytestmark = pytest.mark.e2e

HREF = re.compile(r'href="([^"]+)"')


def _tag_set(engine: Engine, contact_id: int) -> bool:
    with session_scope(engine) as s:
        return "engaged" in repository.get_contact(s, contact_id).tags


async def test_form_to_open_to_click(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    async with running_stack(dev_env.client, settings, engine, workspace) as http:
        r = await http.post(
            "/forms/newsletter",
            data={"email": "eve@example.com", "first_name": "Eve", "consent": "yes"},
        )
        assert r.status_code == 200

        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        welcome = smtp.mailbox.messages[0]
        assert welcome.subject == "Welcome to Acme Outdoor, Eve"
        html = welcome.html()
        pixel = re.search(r'src="http://testserver(/t/o/[A-Za-z0-9_-]+\.gif)"', html)
        assert pixel is not None
        links = [h for h in HREF.findall(html) if h.startswith("http")]
        assert links, "the welcome email has links"
        # every web link is rewritten to a click token, except unsubscribe and view-in-browser
        assert all(
            h.startswith(("http://testserver/t/c/", "http://testserver/u/", "http://testserver/m/"))
            for h in links
        ), links

        with session_scope(engine) as s:
            contact = repository.get_contact_by_email(s, "eve@example.com")
            assert contact is not None and contact.id is not None
            contact_id = contact.id
        workflow_id = journey_workflow_id("welcome", contact_id)
        # The SMTP server has the email before the send activity has reported back: wait for the
        # journey to reach its wait, as a reader opening the email a moment later would.
        deadline = time.monotonic() + 30
        state = await journey_state(dev_env.client, workflow_id)
        while state.current_step != "wait_for_open":
            assert time.monotonic() < deadline, f"journey stuck at {state.current_step}"
            await asyncio.sleep(0.05)
            state = await journey_state(dev_env.client, workflow_id)
        assert state.waiting_for.startswith("open welcome until ")

        assert (await http.get(pixel.group(1))).status_code == 200
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)
        tips = smtp.mailbox.messages[1]
        assert tips.subject == "Three trail tips our guides swear by"

        click = next(h for h in HREF.findall(tips.html()) if "/t/c/" in h)
        r = await http.get(click.removeprefix("http://testserver"), follow_redirects=False)
        assert r.status_code == 302
        originals = set(HREF.findall((EXAMPLES / "emails" / "tips.mjml").read_text()))
        assert r.headers["location"] in {o.replace("&amp;", "&") for o in originals}

        deadline = time.monotonic() + 30
        while not _tag_set(engine, contact_id):
            assert time.monotonic() < deadline, "contact never tagged engaged"
            await asyncio.sleep(0.1)
        result = await dev_env.client.get_workflow_handle(workflow_id).result()

    assert result["visited"] == [
        "welcome",
        "wait_for_open",
        "tips",
        "wait_for_click",
        "tag_engaged",
        "done",
    ]
    assert smtp.mailbox.subjects() == [
        "Welcome to Acme Outdoor, Eve",
        "Three trail tips our guides swear by",
    ]
    with session_scope(engine) as s:
        (enrolment,) = repository.list_enrolments(s, contact_id=contact_id)
    assert enrolment.state == EnrolmentState.completed
