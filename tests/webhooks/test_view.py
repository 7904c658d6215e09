"""The "view in your browser" page: a sent email as a page, personalised, untracked, private;
anything else a 404 page (or 410 when the template broke since), never a 500."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import Event, Message, MessageState
from drip.settings import Settings
from emails.links import open_token, unsubscribe_token, view_token
from tests.support import SmtpServer, copy_workspace, running_stack

WELCOME_SUBJECT = "Welcome to Acme Outdoor, Ann"


def _contact(engine: Engine, first_name: str = "Ann", email: str = "ann@example.com") -> int:
    with session_scope(engine) as s:
        # no consent recorded: its record would be an event, and these tests count events
        contact, _ = repository.upsert_contact(s, email=email, fields={"first_name": first_name})
        assert contact.id is not None
        return contact.id


def _message(
    engine: Engine,
    settings: Settings,
    contact_id: int,
    *,
    state: MessageState = MessageState.sent,
    template: str = "welcome",
    subject: str = WELCOME_SUBJECT,
    version: str = "",
) -> str:
    """An outbox row as the send activity leaves it: the subject as rendered for the contact,
    and the state the send reached."""
    message_id = str(uuid.uuid4())
    with session_scope(engine) as s:
        outbox.reserve_message(
            s,
            Message(
                id=message_id,
                key=f"journey/welcome/{contact_id}/1/welcome/{message_id}",
                contact_id=contact_id,
                campaign_id="welcome",
                campaign_version=version,
                step_id="welcome",
                workflow_id=f"journey/welcome/{contact_id}/1",
                template=template,
                subject=subject,
                open_token=open_token(settings.secret(), message_id),
            ),
        )
        if state is not MessageState.pending:
            outbox.finish_send(s, message_id, state)
    return message_id


def _url(settings: Settings, message_id: str) -> str:
    return f"/m/{view_token(settings.secret(), message_id)}"


def _assert_private(r: httpx.Response) -> None:
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["x-robots-tag"] == "noindex, nofollow"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["content-type"] == "text/html; charset=utf-8"


async def test_a_sent_email_shows_personalised_and_untracked(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    message_id = _message(engine, settings, contact_id)
    r = await http.get(_url(settings, message_id))
    assert r.status_code == 200, r.text
    _assert_private(r)
    html = r.text
    # the subject as sent is the page title; the body renders for the contact
    assert "<title>Welcome to Acme Outdoor, Ann</title>" in html
    assert "Welcome to Acme Outdoor, Ann!" in html
    # the links go where they say, with no pixel, no click tracking and no link to itself
    assert 'href="https://acme.example/routes?utm_source=drip&amp;utm_campaign=welcome"' in html
    assert "/t/o/" not in html and "/t/c/" not in html
    assert "/m/" not in html and "View in your browser" not in html
    assert f'href="http://testserver/u/{unsubscribe_token(settings.secret(), contact_id)}"' in html
    assert "Acme Outdoor Ltd" in html  # the postal address, as in the email


async def test_the_page_allows_the_emails_images_and_styles_but_no_scripts(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    message_id = _message(engine, settings, _contact(engine))
    r = await http.get(_url(settings, message_id))
    csp = {
        d.strip().split(" ", 1)[0]: d.strip()
        for d in r.headers["content-security-policy"].split(";")
    }
    assert csp["default-src"] == "default-src 'none'"
    assert csp["img-src"] == "img-src https: http: data:"
    assert csp["style-src"] == "style-src 'unsafe-inline'"
    assert "script-src" not in csp and csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["sandbox"].startswith("sandbox")  # opaque origin; no allow-scripts
    assert "allow-scripts" not in csp["sandbox"]


async def test_contact_data_is_escaped(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine, first_name='<script>alert("x")</script>')
    r = await http.get(_url(settings, _message(engine, settings, contact_id)))
    assert r.status_code == 200
    assert "<script" not in r.text and "&lt;script&gt;" in r.text


async def test_head_answers_like_get_and_viewing_records_nothing(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    message_id = _message(engine, settings, _contact(engine))
    url = _url(settings, message_id)
    head = await http.head(url)
    get = await http.get(url)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    _assert_private(head)
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]
    with session_scope(engine) as s:
        assert s.exec(select(Event)).all() == []  # not an open, not a click
        message = outbox.get_message(s, message_id)
        assert message is not None and message.state == MessageState.sent


@pytest.mark.parametrize(
    "state", [MessageState.pending, MessageState.sending, MessageState.failed, "suppressed"]
)
async def test_a_message_that_was_not_sent_is_not_shown(
    http: httpx.AsyncClient, settings: Settings, engine: Engine, state: MessageState
) -> None:
    message_id = _message(engine, settings, _contact(engine), state=MessageState(state))
    for method in ("GET", "HEAD"):
        r = await http.request(method, _url(settings, message_id))
        assert r.status_code == 404
        _assert_private(r)


async def test_bad_tokens_are_the_same_404_page(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    message_id = _message(engine, settings, _contact(engine))
    good = view_token(settings.secret(), message_id)
    last = good[-1]
    tampered = good[:-1] + ("A" if last != "A" else "B")
    other_id = good.replace(message_id[0], "f" if message_id[0] != "f" else "e", 1)
    tokens = [
        tampered,  # one character of the MAC changed
        other_id,  # one character of the id changed, the MAC kept
        view_token(b"another-secret-entirely-0123456789", message_id),
        view_token(settings.secret(), str(uuid.uuid4())),  # signed, but no such message
        message_id,  # the id alone
        f"{message_id}.",
        "garbage",
        "A" * 40,
        "x" * 5000,
        "a/b/c",
        "..%2F..%2Fetc%2Fpasswd",
        "%00",
        "'; DROP TABLE messages; --",
        "",
    ]
    for token in tokens:
        r = await http.get(f"/m/{token}")
        assert r.status_code == 404, (token, r.status_code)
        _assert_private(r)
        assert "This link is not valid" in r.text
    assert (await http.get(f"/m/{good}")).status_code == 200


async def test_a_contact_that_is_gone_is_a_404(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    message_id = _message(engine, settings, contact_id)
    with engine.connect() as conn:  # as an erasure that kept the message row would leave it
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.exec_driver_sql("DELETE FROM contacts WHERE id = ?", (contact_id,))
        conn.commit()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    r = await http.get(_url(settings, message_id))
    assert r.status_code == 404
    _assert_private(r)


async def test_the_stored_subject_is_shown_as_sent_never_evaluated_again(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    # a subject rendered from contact data that looks like Jinja stays text
    subject = "Hello {{ 7 * 7 }} {% if true %}x{% endif %}"
    r = await http.get(
        _url(settings, _message(engine, settings, _contact(engine), subject=subject))
    )
    assert r.status_code == 200
    assert "<title>Hello {{ 7 * 7 }} {% if true %}x{% endif %}</title>" in r.text


async def test_a_row_sent_before_subjects_were_stored_rendered_renders_its_template(
    http: httpx.AsyncClient, settings: Settings, engine: Engine, workspace: Workspace
) -> None:
    plan = workspace.plans["welcome"]  # deployed by the fixture
    template = plan.steps["welcome"].subject
    old = _message(engine, settings, _contact(engine), subject=template, version=plan.version)
    r = await http.get(_url(settings, old))
    assert "<title>Welcome to Acme Outdoor, Ann</title>" in r.text


async def test_a_template_that_no_longer_renders_is_a_410_page_and_a_log_line(
    http: httpx.AsyncClient,
    settings: Settings,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the template file is gone (and its version was never deployed with its files)
    message_id = _message(engine, settings, _contact(engine), template="renamed-since")
    with caplog.at_level(logging.WARNING, logger="webhooks.routes.view"):
        r = await http.get(_url(settings, message_id))
    assert r.status_code == 410
    _assert_private(r)
    assert "can no longer be shown" in r.text
    assert any(message_id in record.getMessage() for record in caplog.records)


async def test_the_api_document_lists_the_page_once(http: httpx.AsyncClient) -> None:
    # HEAD shares GET's handler; a second operation of it would be a duplicate operation id
    r = await http.get("/openapi.json")
    assert r.status_code == 200
    assert list(r.json()["paths"]["/m/{token}"]) == ["get"]


async def test_the_link_in_a_real_email_shows_that_email(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        r = await http.post(
            "/forms/newsletter",
            json={"email": "ann@example.com", "first_name": "Ann", "consent": True},
        )
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        email = smtp.mailbox.messages[0]
        found = re.search(r'href="http://testserver(/m/[A-Za-z0-9._-]+)"', email.html())
        assert found is not None, "no view-in-browser link in the email"
        assert "/t/o/" in email.html()  # the email itself is tracked; the page is not
        r = await http.get(found.group(1))
    assert r.status_code == 200
    assert f"<title>{email.subject}</title>" in r.text
    assert "Welcome to Acme Outdoor, Ann!" in r.text
    assert "/t/o/" not in r.text and "/t/c/" not in r.text and "/m/" not in r.text


async def test_the_page_renders_the_template_files_its_version_deployed(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    async with running_stack(time_env.client, settings, engine, load_workspace(root)) as http:
        r = await http.post(
            "/forms/newsletter",
            json={"email": "ann@example.com", "first_name": "Ann", "consent": True},
        )
        assert r.status_code == 202
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        found = re.search(
            r'href="http://testserver(/m/[A-Za-z0-9._-]+)"', smtp.mailbox.messages[0].html()
        )
        assert found is not None
        # edited in the folder (not yet deployed): the page still shows what was sent
        template = root / "emails" / "welcome.mjml"
        template.write_text(
            template.read_text()
            + "<mj-section><mj-column><mj-text>Edited later.</mj-text></mj-column></mj-section>\n"
        )
        r = await http.get(found.group(1))
    assert r.status_code == 200
    assert "Welcome to Acme Outdoor, Ann!" in r.text and "Edited later." not in r.text
