"""Double opt-in over HTTP with the real app, SQLite, Temporal and an SMTP server: the post only
sends a confirmation email; the journey starts when the link is confirmed (by a POST, never by
the GET a link scanner makes); the link expires and cannot be forged."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Event, utcnow
from drip.settings import Settings
from tests.support import SmtpServer, api_client, copy_workspace, running_stack
from webhooks import _optin

FORM = {"email": "Dora@Example.com", "first_name": "Dora", "consent": "yes"}


@pytest.fixture
def opt_in_workspace(tmp_path: Path) -> Workspace:
    """The demo workspace whose newsletter form (which starts the welcome campaign) asks for
    confirmation."""
    root = copy_workspace(tmp_path)
    with (root / "forms" / "newsletter.yaml").open("a") as f:
        f.write("double_opt_in: true\n")
    return load_workspace(root)


def _contact(engine: Engine) -> Contact:
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, "dora@example.com")
        assert contact is not None
        return contact


def _confirm_path(smtp: SmtpServer) -> str:
    (mail,) = smtp.mailbox.to("dora@example.com")
    assert mail.subject == "Please confirm your subscription to Acme Outdoor"
    found = re.search(r"http://testserver(/forms/newsletter/confirm/\S+)", mail.text())
    assert found is not None, mail.text()
    assert f"http://testserver{found.group(1)}" in mail.html()
    assert "List-Unsubscribe" not in mail.message  # nothing to unsubscribe from yet
    return found.group(1)


async def test_the_journey_starts_only_after_confirmation(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    opt_in_workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    async with running_stack(time_env.client, settings, engine, opt_in_workspace) as http:
        r = await http.post("/forms/newsletter", data=FORM)
        assert r.status_code == 200 and "Thank" in r.text
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        path = _confirm_path(smtp)
        pending = _contact(engine)
        # pending: not subscribed, no fields taken from the unconfirmed post, no journey
        assert pending.status == ContactStatus.pending and pending.fields == {}
        assert pending.consent_at is None
        with session_scope(engine) as s:
            assert repository.list_enrolments(s) == []

        # a link scanner's GET shows a button and confirms nothing
        page = await http.get(path)
        assert page.status_code == 200
        assert f'action="{path}"' in page.text and 'method="post"' in page.text
        assert _contact(engine).status == ContactStatus.pending

        for _ in range(2):  # confirming twice starts one journey
            done = await http.post(path)
            assert done.status_code == 200 and "confirmed" in done.text
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)
        assert smtp.mailbox.subjects()[1] == "Welcome to Acme Outdoor, Dora"

    contact = _contact(engine)
    assert contact.status == ContactStatus.subscribed
    assert contact.fields == {"first_name": "Dora"}
    assert contact.consent_at is not None and contact.consent_ip == "127.0.0.1"
    assert contact.consent_source is not None
    assert contact.consent_source.startswith("form:newsletter (double opt-in")
    with session_scope(engine) as s:
        (enrolment,) = repository.list_enrolments(s)
        (form_event,) = s.exec(select(Event).where(Event.type == "form")).all()
    assert enrolment.campaign_id == "welcome"
    assert form_event.properties["double_opt_in"] is True
    assert form_event.properties["submitted_ip"] == "127.0.0.1"
    assert form_event.properties["submitted_at"]


async def test_json_posting_answers_202_and_sends_the_confirmation(
    settings: Settings, engine: Engine, opt_in_workspace: Workspace, smtp: SmtpServer
) -> None:
    async with api_client(settings, opt_in_workspace, engine) as http:
        r = await http.post("/forms/newsletter", json={**FORM, "consent": True})
    assert r.status_code == 202 and r.json()["status"] == "confirmation_sent"
    await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
    assert _contact(engine).status == ContactStatus.pending


async def test_forged_tampered_and_expired_links(
    settings: Settings, engine: Engine, opt_in_workspace: Workspace, smtp: SmtpServer
) -> None:
    async with api_client(settings, opt_in_workspace, engine) as http:
        await http.post("/forms/newsletter", data=FORM)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        path = _confirm_path(smtp)
        token = path.rsplit("/", 1)[1]
        contact_id, request_id = (int(x) for x in token.split(".")[:2])
        secret = settings.secret()
        bad = [
            f"{contact_id + 1}.{token.split('.', 1)[1]}",  # another contact, same MAC
            token[:-1] + ("A" if token[-1] != "A" else "B"),
            _optin.confirm_token(
                b"another-secret-0123456789", contact_id=contact_id, request_id=request_id,
                form_id="newsletter",
            ),
            "garbage",
            "1.2.3." + "A" * 5000,
        ]  # fmt: skip
        for forged in bad:
            for method in ("GET", "POST"):
                r = await http.request(method, f"/forms/newsletter/confirm/{forged}")
                assert r.status_code == 400, (forged, method)
        # a token for another form is not valid for this one
        other = await http.post(path.replace("/newsletter/", "/webinar/"))
        assert other.status_code == 400
        expired = _optin.confirm_token(
            secret,
            contact_id=contact_id,
            request_id=request_id,
            form_id="newsletter",
            now=utcnow() - timedelta(days=8),
        )
        for method in ("GET", "POST"):
            r = await http.request(method, f"/forms/newsletter/confirm/{expired}")
            assert r.status_code == 410 and "expired" in r.text
    assert _contact(engine).status == ContactStatus.pending


async def test_a_double_opt_in_post_changes_nothing_on_an_existing_contact(
    settings: Settings, engine: Engine, opt_in_workspace: Workspace, smtp: SmtpServer
) -> None:
    with session_scope(engine) as s:
        repository.upsert_contact(s, "dora@example.com", {"first_name": "Dorothea"})
        contact = repository.get_contact_by_email(s, "dora@example.com")
        assert contact is not None and contact.id is not None
        repository.set_status(s, contact.id, ContactStatus.unsubscribed)
    async with api_client(settings, opt_in_workspace, engine) as http:
        await http.post("/forms/newsletter", data=FORM)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        unchanged = _contact(engine)
        assert unchanged.status == ContactStatus.unsubscribed
        assert unchanged.fields == {"first_name": "Dorothea"}
        # its owner confirms: a new, explicit consent subscribes them again
        assert (await http.post(_confirm_path(smtp))).status_code == 200
    assert _contact(engine).status == ContactStatus.subscribed


async def test_a_complained_address_gets_no_confirmation_email(
    settings: Settings, engine: Engine, opt_in_workspace: Workspace, smtp: SmtpServer
) -> None:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, "dora@example.com")
        assert contact.id is not None
        repository.set_status(s, contact.id, ContactStatus.complained)
    async with api_client(settings, opt_in_workspace, engine) as http:
        r = await http.post("/forms/newsletter", data=FORM)
    assert r.status_code == 200 and "Thank" in r.text  # the same answer: the form tells nothing
    assert smtp.mailbox.messages == []


async def test_an_smtp_outage_is_a_503_not_a_500(
    settings: Settings, engine: Engine, opt_in_workspace: Workspace, smtp: SmtpServer
) -> None:
    smtp.stop()
    async with api_client(settings, opt_in_workspace, engine) as http:
        api = await http.post("/forms/newsletter", json={**FORM, "consent": True})
        page = await http.post("/forms/newsletter", data=FORM)
    assert api.status_code == 503 and api.json()["status"] == 503
    assert api.headers["retry-after"] == "60"
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
