"""A click on a broadcast's email starts a follow-up journey, end to end on the real Temporal dev
server, the API (its click redirect, hit writer and consumer, event routing) and a worker, and
the follow-up email arrives at the SMTP server.

The broadcast's email is its outbox row as the broadcast engine leaves it
(``tests.broadcast_support``); everything after the recipient's click is production's path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from contacts import repository
from contacts.db import session_scope
from contacts.models import Event
from drip.settings import Settings
from emails.links import click_token
from tests.broadcast_support import URLS, sent_email
from tests.engine_support import workspace_with
from tests.support import SmtpServer, running_stack, tracked_and_routed

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
