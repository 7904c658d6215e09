"""The suppression lists on every send path, through a real worker, Temporal's time-skipping
server, aiosmtpd and SQLite or PostgreSQL: an address and a domain on the list get nothing from a
journey or a broadcast, nor does a role address from marketing mail, while everyone else's email
arrives (counted at the SMTP server); each stopped email's outbox row is ``suppressed`` with its
reason, and a broadcast's dry run counts them by reason. A transactional send still reaches a
role address but never an address on the list; a workspace may let role addresses have
marketing mail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository, suppressions
from contacts.db import session_scope
from contacts.models import Message
from drip.settings import Settings
from emails.sender import SmtpTransport
from tests.support import SmtpServer, copy_workspace
from tests.workflows.test_broadcast import broadcast_workspace, wait_state, worker
from tests.workflows.test_bulk import _until_no_journey_runs
from workflows.activities import JourneyActivities
from workflows.broadcasts import dry_run, progress, start_broadcast
from workflows.bulk import enrol_many
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter
from workflows.types import SendEmailInput

HELLO = """\
id: hello
name: Hello
trigger:
  manual: true
steps:
  - id: hello
    send_email: {template: welcome, subject: "Hello"}
"""

NEWS = """\
id: news
name: News
email: {template: welcome, subject: "News"}
"""

EVERYONE = [
    "bob@example.com",
    "ann@example.com",
    "x@competitor.com",
    "y@uk.competitor.com",
    "abuse@example.org",
    "cy@example.com",
]
STOPPED = {
    "ann@example.com": "suppressed: asked by phone",
    "x@competitor.com": "suppressed: competitor",
    "y@uk.competitor.com": "suppressed: competitor",
    "abuse@example.org": "suppressed: role address",
}
DELIVERED = ["bob@example.com", "cy@example.com"]


def _contacts_and_list(engine: Engine) -> list[int]:
    ids = []
    with session_scope(engine) as s:
        for email in EVERYONE:
            contact, _ = repository.upsert_contact(s, email, {"first_name": "Pat"})
            assert contact.id is not None
            ids.append(contact.id)
        suppressions.add(s, "ANN@example.com", "asked by phone", "cli")
        suppressions.add(s, "competitor.com", "competitor", "csv import")
    return ids


def _outcomes(engine: Engine) -> dict[str, tuple[str, str | None]]:
    with session_scope(engine) as s:
        rows = s.exec(select(Message)).all()
        return {
            repository.get_contact(s, r.contact_id).email: (str(r.state), r.error) for r in rows
        }


def _received(smtp: SmtpServer) -> list[str]:
    return sorted(r for m in smtp.mailbox.messages for r in m.recipients)


async def test_a_journey_sends_nothing_to_the_list_nor_marketing_to_role_addresses(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    (root / "campaigns" / "hello.yaml").write_text(HELLO)
    ws = load_workspace(root)
    deploy_workspace(any_engine, ws)
    ids = _contacts_and_list(any_engine)
    router = EventRouter(client=time_env.client, engine=any_engine, settings=settings)
    async with worker(time_env, settings, any_engine, ws):
        done = await enrol_many(router, "hello", list(ids))
        assert done.enrolled == len(EVERYONE)
        await _until_no_journey_runs(any_engine)
    assert _received(smtp) == DELIVERED
    outcomes = _outcomes(any_engine)
    assert {e: o for e, o in outcomes.items() if o[0] == "suppressed"} == {
        e: ("suppressed", why) for e, why in STOPPED.items()
    }
    assert {e for e, o in outcomes.items() if o[0] == "sent"} == set(DELIVERED)


async def test_a_broadcast_sends_nothing_to_the_list_and_its_dry_run_says_so(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = broadcast_workspace(tmp_path, NEWS)
    _contacts_and_list(any_engine)
    planned = dry_run(any_engine, workspace, "news", sample=10)
    assert planned.audience == len(EVERYONE) and planned.would_send == len(DELIVERED)
    assert planned.suppressed_by_reason == {
        "suppressed: asked by phone": 1,
        "suppressed: competitor": 2,
        "suppressed: role address": 1,
    }
    assert sorted(planned.sample) == DELIVERED
    async with worker(time_env, settings, any_engine, workspace):
        send = await start_broadcast(
            time_env.client, any_engine, workspace, "news", settings=settings
        )
        await wait_state(any_engine, send.id, {"completed"})
    assert _received(smtp) == DELIVERED
    assert progress(any_engine, send.id).suppressed_by_reason == planned.suppressed_by_reason
    outcomes = _outcomes(any_engine)
    assert {e: o[1] for e, o in outcomes.items() if o[0] == "suppressed"} == STOPPED


async def test_a_workspace_may_let_role_addresses_have_marketing_mail(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    workspace = broadcast_workspace(
        tmp_path, NEWS, config="suppressions:\n  role_addresses: false\n"
    )
    _contacts_and_list(engine)
    assert dry_run(engine, workspace, "news").suppressed_by_reason == {
        "suppressed: asked by phone": 1,
        "suppressed: competitor": 2,
    }
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(time_env.client, engine, workspace, "news", settings=settings)
        await wait_state(engine, send.id, {"completed"})
    assert _received(smtp) == sorted([*DELIVERED, "abuse@example.org"])


@pytest.fixture
def send_to(engine: Engine, workspace: Workspace) -> Callable[[str, bool], SendEmailInput]:
    deploy_workspace(engine, workspace)
    version = workspace.plans["welcome"].version

    def send(email: str, marketing: bool) -> SendEmailInput:
        with session_scope(engine) as s:
            contact, _ = repository.upsert_contact(s, email, {"first_name": "Pat"})
            assert contact.id is not None
            contact_id = contact.id
        workflow_id = f"journey/welcome/{contact_id}/1"
        return SendEmailInput(
            message_id=f"message-{contact_id}-{marketing}",
            key=f"{workflow_id}/welcome/{marketing}",
            workflow_id=workflow_id,
            contact_id=contact_id,
            campaign_id="welcome",
            campaign_version=version,
            step_id="welcome",
            template="welcome",
            subject="Welcome",
            marketing=marketing,
        )

    return send


async def test_transactional_mail_reaches_a_role_address_but_never_one_on_the_list(
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
    send_to: Callable[[str, bool], SendEmailInput],
) -> None:
    with session_scope(engine) as s:
        suppressions.add(s, "competitor.com", "competitor", "cli")
    transport = SmtpTransport(settings)
    activities = JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=transport
    )
    run = ActivityEnvironment().run
    try:
        marketing = await run(activities.send_email, send_to("postmaster@example.org", True))
        receipt = await run(activities.send_email, send_to("postmaster@example.org", False))
        listed = await run(activities.send_email, send_to("billing@competitor.com", False))
    finally:
        await transport.close()
    assert (marketing.state, marketing.error) == ("suppressed", "suppressed: role address")
    assert receipt.state == "sent"
    assert (listed.state, listed.error) == ("suppressed", "suppressed: competitor")
    assert _received(smtp) == ["postmaster@example.org"]
    assert _outcomes(engine)["billing@competitor.com"] == ("suppressed", "suppressed: competitor")
