"""Bulk enrolment through ``workflows.bulk``: CSV rows with their line numbers, targets by address,
id or condition, each outcome with its reason, and the import id that makes a rerun harmless."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import ContactStatus, Enrolment, EnrolmentState
from drip.settings import Settings
from tests.support import SmtpServer, copy_workspace
from workflows.bulk import (
    BulkError,
    BulkProgress,
    CampaignNotLive,
    Target,
    enrol_many,
    read_csv,
    select_contacts,
)
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter
from workflows.worker import build_worker


async def _until_no_journey_runs(engine: Engine, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        with session_scope(engine) as s:
            running = s.exec(
                select(Enrolment).where(Enrolment.state == EnrolmentState.running)
            ).all()
        if not running:
            return
        assert time.monotonic() < deadline, f"journeys still running: {running}"
        await asyncio.sleep(0.05)


HELLO = """\
id: hello
name: Hello
trigger:
  manual: true
audience: 'not has_tag("staff")'
steps:
  - id: hello
    send_email: {template: welcome, subject: "Hello"}
"""


def _workspace(tmp_path: Path) -> Workspace:
    root = copy_workspace(tmp_path)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    (root / "campaigns" / "hello.yaml").write_text(HELLO)
    return load_workspace(root)


def test_csv_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(
        "\ufeffEmail,first_name,note\r\n"  # Excel's byte-order mark and line ends
        "Ann@Example.com,Ann,\r\n"
        "\r\n"
        'bob@example.com,Bob,"two\r\nlines"\r\n'
        ",Nobody,x\r\n"
        "cy@example,Cy,x\r\n"
        "dee@example.com,Dee\r\n".encode()
    )
    targets, problems = read_csv(path)
    assert [(t.line, t.email, t.fields) for t in targets] == [
        (2, "ann@example.com", {"first_name": "Ann"}),
        (4, "bob@example.com", {"first_name": "Bob", "note": "two\r\nlines"}),
        (8, "dee@example.com", {"first_name": "Dee"}),
    ]
    no_address, bad_address = (str(p) for p in problems)
    assert no_address == "line 6: no email address"
    assert bad_address.startswith("line 7: cy@example: The part after the @-sign")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("name,mail", "needs an 'email' column in its first line (columns: name, mail)"),
        ("email,first name", "column 'first name' cannot be a contact field"),
        ("email,score", "column 'score' is built into every contact"),
        ("email,a,a", "a column name appears twice"),
    ],
)
def test_a_csv_that_cannot_work_is_refused_whole(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "people.csv"
    path.write_text(f"{header}\nann@example.com,1,2\n")
    with pytest.raises(BulkError) as refused:
        read_csv(path)
    assert message in str(refused.value)


async def test_each_target_gets_an_outcome_and_a_rerun_enrols_nobody_twice(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = _workspace(tmp_path)
    router = EventRouter(client=time_env.client, engine=any_engine, settings=settings)
    with pytest.raises(CampaignNotLive, match="campaign 'hello' is not deployed"):
        await enrol_many(router, "hello", ["ann@example.com"])
    deploy_workspace(any_engine, ws)
    with session_scope(any_engine) as s:
        old, _ = repository.upsert_contact(s, "old@example.com", {"plan": "pro"})
        staff, _ = repository.upsert_contact(s, "staff@example.com", {"plan": "pro"})
        gone, _ = repository.upsert_contact(s, "gone@example.com", {"plan": "pro"})
        assert old.id and staff.id and gone.id
        repository.update_contact(s, staff.id, add_tags=["staff"])
        repository.set_status(s, gone.id, ContactStatus.unsubscribed)
    # --where: subscribed contacts only, in SQL
    assert select_contacts(any_engine, 'contact.plan == "pro"') == [old.id, staff.id]
    targets: list[Target | str | int] = [
        Target(email="new@example.com", fields={"plan": "team"}, line=2),
        Target(email="NEW@example.com", line=3),
        old.id,
        staff.id,
        gone.id,
        999,
        "not an address",
    ]
    seen: list[BulkProgress] = []
    async with build_worker(time_env.client, settings=settings, engine=any_engine, workspace=ws):
        first = await enrol_many(
            router, "hello", targets, import_id="batch-1", concurrency=3, on_progress=seen.append
        )
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)
        # the email lands a moment before its journey records that it ended: wait for that,
        # or the third import below meets a running journey ("already in the campaign")
        await _until_no_journey_runs(any_engine)
        again = await enrol_many(router, "hello", targets, import_id="batch-1")
        other = await enrol_many(router, "hello", [old.id], import_id="batch-2")
    assert first.enrolled == 2
    assert sorted(str(p) for p in first.skipped) == [
        "contact 2: outside the audience, or the goal or an exit rule already holds",
        "contact 3: contact is unsubscribed",
        "line 3: NEW@example.com: same contact as line 2",
    ]
    assert sorted(str(p) for p in first.failed) == [
        "contact 999: contact 999 does not exist",
        "not an address: An email address must have an @-sign.",
    ]
    assert [p.done for p in seen] == list(range(1, 8)) and seen[-1].total == 7
    assert again.enrolled == 0 and len(again.failed) == 2
    assert sum("already processed by import batch-1" in p.reason for p in again.skipped) == 4
    assert other.enrolled == 0
    assert [p.reason for p in other.skipped] == ["already went through it (reentry: never)"]
    assert sorted(r for m in smtp.mailbox.messages for r in m.recipients) == [
        "new@example.com",
        "old@example.com",
    ]
    with session_scope(any_engine) as s:
        new = repository.get_contact_by_email(s, "new@example.com")
    assert new is not None and new.fields == {"plan": "team"}
