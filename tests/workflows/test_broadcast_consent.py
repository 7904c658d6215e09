"""A broadcast is marketing: contacts without marketing consent (the events API's, by default)
get none of it, on SQLite and PostgreSQL, through a real worker, Temporal's time-skipping server
and aiosmtpd; the dry run counts them under the same reason the send records."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from contacts.db import session_scope
from contacts.models import Contact, MarketingConsent, Message, MessageState
from drip.settings import Settings
from tests.support import SmtpServer
from tests.workflows.test_broadcast import add_contacts, broadcast_workspace, wait_state, worker
from workflows.broadcasts import dry_run, progress, start_broadcast

HELLO = """\
id: hello
name: Hello
email: {template: welcome, subject: "Hi {{ contact.first_name }}"}
"""


async def test_a_broadcast_skips_contacts_without_marketing_consent(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, HELLO)
    ids = add_contacts(any_engine, 4)
    states = [
        MarketingConsent.none,
        MarketingConsent.given,
        MarketingConsent.implied,
        MarketingConsent.unrecorded,
    ]
    with session_scope(any_engine) as s:
        for contact_id, state in zip(ids, states, strict=True):
            row = s.get(Contact, contact_id)
            assert row is not None
            row.marketing_consent = state
            s.add(row)
    planned = dry_run(any_engine, workspace, "hello")
    assert (planned.audience, planned.would_send) == (4, 3)
    assert planned.suppressed_by_reason == {"no marketing consent": 1}
    assert "c0@example.com" not in planned.sample

    async with worker(time_env, settings, any_engine, workspace):
        send = await start_broadcast(
            time_env.client, any_engine, workspace, "hello", settings=settings
        )
        await wait_state(any_engine, send.id, {"completed"})
    received = sorted(r for m in smtp.mailbox.messages for r in m.recipients)
    assert received == ["c1@example.com", "c2@example.com", "c3@example.com"]
    assert progress(any_engine, send.id).suppressed_by_reason == {"no marketing consent": 1}
    with session_scope(any_engine) as s:
        [row] = s.exec(select(Message).where(Message.contact_id == ids[0])).all()
    assert (row.state, row.error) == (MessageState.suppressed, "no marketing consent")
