"""Unsubscribe: a GET only asks, the RFC 8058 one-click POST unsubscribes at once, and a journey
already under way sends nothing more to that contact."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import ContactStatus, Event, Message
from drip.settings import Settings
from emails.links import unsubscribe_token
from tests.support import SmtpServer, running_stack

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _contact(engine: Engine, email: str = "una@example.com") -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
        assert contact.id is not None
        return contact.id


def _status(engine: Engine, contact_id: int) -> ContactStatus:
    with session_scope(engine) as s:
        return ContactStatus(repository.get_contact(s, contact_id).status)


async def test_a_get_only_asks(http: httpx.AsyncClient, settings: Settings, engine: Engine) -> None:
    contact_id = _contact(engine)
    token = unsubscribe_token(settings.secret(), contact_id)
    r = await http.get(f"/u/{token}")
    assert r.status_code == 200
    assert f'action="/u/{token}"' in r.text and 'method="post"' in r.text.lower()
    assert _status(engine, contact_id) == ContactStatus.subscribed


async def test_one_click_post_unsubscribes_once(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    token = unsubscribe_token(settings.secret(), contact_id)
    for _ in range(2):
        r = await http.post(f"/u/{token}", data=ONE_CLICK, follow_redirects=False)
        assert r.status_code == 200 and "location" not in r.headers
    assert _status(engine, contact_id) == ContactStatus.unsubscribed
    with session_scope(engine) as s:
        events = s.exec(select(Event).where(Event.type == "unsubscribe")).all()
    assert len(events) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_forged_or_garbage_tokens_are_a_404_page(
    http: httpx.AsyncClient, settings: Settings, engine: Engine, method: str
) -> None:
    contact_id = _contact(engine)
    forged = unsubscribe_token(b"another-secret-entirely-0123456789", contact_id)
    nobody = unsubscribe_token(settings.secret(), contact_id + 1000)
    for token in (forged, nobody, "garbage", "A" * 32, "x" * 3000):
        r = await http.request(method, f"/u/{token}", data=ONE_CLICK if method == "POST" else None)
        if token == nobody and method == "GET":
            # a valid signature for an id we never had: the page asks, the POST finds nobody
            assert r.status_code == 200
            continue
        assert r.status_code == 404, (token, r.status_code)
    assert _status(engine, contact_id) == ContactStatus.subscribed


async def test_unsubscribing_mid_journey_ends_it_at_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        r = await http.post("/forms/newsletter", json={"email": "una@example.com", "consent": True})
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        welcome = smtp.mailbox.messages[0]
        # the unsubscribe link the recipient actually got, in the header and in the footer
        header = str(welcome.message["List-Unsubscribe"])
        found = re.search(r"<http://testserver(/u/[A-Za-z0-9_-]+)>", header)
        assert found is not None, header
        assert f"http://testserver{found.group(1)}" in welcome.html()
        r = await http.post(found.group(1), data=ONE_CLICK)
        assert r.status_code == 200

        await time_env.sleep(timedelta(days=31))  # past the two-day wait for an open
        with session_scope(engine) as s:
            enrolment_ids = [e.workflow_id for e in repository.list_enrolments(s)]
        result = await time_env.client.get_workflow_handle(enrolment_ids[0]).result()

    # the unsubscribe ended the journey at once: the reminder was never even attempted
    assert result["outcome"] == "exited"
    assert smtp.mailbox.subjects() == ["Welcome to Acme Outdoor, friend"]
    with session_scope(engine) as s:
        assert [m.step_id for m in s.exec(select(Message)).all()] == ["welcome"]
        (enrolment,) = repository.list_enrolments(s)
    assert (enrolment.state, enrolment.end_reason) == ("exited", "unsubscribe")
