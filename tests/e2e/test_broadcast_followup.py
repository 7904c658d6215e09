"""A click on a broadcast's email starts a follow-up journey, end to end on the real Temporal dev
server, the API (its click redirect, hit writer and consumer, event routing) and a worker, and
the follow-up email arrives at the SMTP server.

The first test starts from the broadcast's outbox row as the engine leaves it
(``tests.broadcast_support``); the second sends a real broadcast and follows the links of the
emails that arrived: pixel, click and the one-click unsubscribe of the List-Unsubscribe header.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Event
from drip.settings import Settings
from emails.links import click_token
from tests.broadcast_support import URLS, sent_email
from tests.engine_support import workspace_with
from tests.support import SmtpServer, running_stack, tracked_and_routed
from workflows.broadcasts import progress, start_broadcast

pytestmark = pytest.mark.e2e

FOLLOW_UP = """\
id: black-friday-follow-up
name: Black Friday follow-up
trigger: {event: click, where: 'properties.broadcast == "black-friday"'}
steps:
  - id: offer
    send_email: {template: tips, subject: "Still thinking about Black Friday?"}
"""


async def test_a_click_on_a_broadcast_email_sends_the_follow_up(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = workspace_with(tmp_path, FOLLOW_UP)
    async with running_stack(dev_env.client, settings, engine, workspace) as http:
        with session_scope(engine) as s:
            contact, _ = repository.upsert_contact(
                s, "ann@example.com", {"first_name": "Ann"}, consent_source="test"
            )
            assert contact.id is not None
            ann = contact.id
        message = sent_email(engine, settings.secret(), ann)

        r = await http.get(f"/t/c/{click_token(settings.secret(), message.id, 1)}")
        assert r.status_code == 302 and r.headers["location"] == URLS[1]
        await tracked_and_routed(engine, "click", within=30)

        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1, within=30)
    [email] = smtp.mailbox.messages
    assert email.subject == "Still thinking about Black Friday?"
    assert email.recipients == ["ann@example.com"]
    with session_scope(engine) as s:
        [click] = s.exec(select(Event).where(Event.type == "click")).all()
    assert (click.message_id, click.properties["broadcast"]) == (message.id, "black-friday")
    assert click.properties["url"] == URLS[1]


BLACK_FRIDAY = """\
id: black-friday
name: Black Friday
email: {template: welcome, subject: "Black Friday, {{ contact.first_name }}"}
"""
PIXEL = re.compile(r'src="http://testserver(/t/o/[A-Za-z0-9_-]+\.gif)"')
CLICK = re.compile(r'href="http://testserver(/t/c/[A-Za-z0-9_-]+)"')
ONE_CLICK = re.compile(r"<http://testserver(/u/[^>]+)>")


async def test_a_sent_broadcast_is_tracked_and_followed_up(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = workspace_with(tmp_path, FOLLOW_UP).root
    (root / "broadcasts").mkdir(exist_ok=True)
    for old in (root / "broadcasts").glob("*.yaml"):
        old.unlink()
    (root / "broadcasts" / "black-friday.yaml").write_text(BLACK_FRIDAY)
    workspace = load_workspace(root)
    people = {}
    with session_scope(engine) as s:
        for name in ("ann", "bob"):
            contact, _ = repository.upsert_contact(
                s, f"{name}@example.com", {"first_name": name.title()}, consent_source="test"
            )
            people[name] = contact.id
    async with running_stack(dev_env.client, settings, engine, workspace) as http:
        send = await start_broadcast(
            dev_env.client, engine, workspace, "black-friday", settings=settings
        )
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2, within=30)
        emails = {m.recipients[0]: m for m in smtp.mailbox.messages}
        ann, bob = emails["ann@example.com"], emails["bob@example.com"]

        # Ann opens and clicks: the follow-up campaign's email comes; Bob only opens
        for email in (ann, bob):
            pixel = PIXEL.search(email.html())
            assert pixel is not None
            assert (await http.get(pixel.group(1))).status_code == 200
        await tracked_and_routed(engine, "open", within=30)
        click = CLICK.search(ann.html())
        assert click is not None
        assert (await http.get(click.group(1))).status_code == 302
        await tracked_and_routed(engine, "click", within=30)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 3, within=30)

        # Bob unsubscribes with his mail client's one-click button
        one_click = ONE_CLICK.search(str(bob.message["List-Unsubscribe"]))
        assert one_click is not None
        r = await http.post(one_click.group(1), data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 200
    assert progress(engine, send.id).sent == 2
    assert smtp.mailbox.messages[2].subject == "Still thinking about Black Friday?"
    assert smtp.mailbox.messages[2].recipients == ["ann@example.com"]
    with session_scope(engine) as s:
        events = s.exec(select(Event).order_by(Event.id)).all()
    filed = sorted(
        (e.type, e.contact_id, e.properties.get("broadcast"), e.properties.get("variant"))
        for e in events
        if e.type in ("open", "click", "unsubscribe")
    )
    assert filed == sorted(
        [
            ("open", people["ann"], "black-friday", "email"),
            ("open", people["bob"], "black-friday", "email"),
            ("click", people["ann"], "black-friday", "email"),
            ("unsubscribe", people["bob"], "black-friday", "email"),
        ]
    )
