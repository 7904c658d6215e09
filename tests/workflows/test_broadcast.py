"""A broadcast end to end through a real worker, Temporal's time-skipping server, aiosmtpd and
SQLite or PostgreSQL: exactly its audience gets exactly one email each (suppressed contacts,
those who left the topic, paused and capped ones get none, with the reason on their outbox
row); a contact who unsubscribes while the send runs gets nothing; a second send is refused;
an A/B test sends its sample, waits, and sends the winner to the rest; a send in each contact's
time zone reaches each at their local hour; pause stops within one batch and resume finishes;
cancel stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import outbox, repository
from contacts.broadcast_models import BroadcastSend
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Event, Message, MessageState
from drip.settings import Settings
from tests.support import SmtpServer, copy_workspace
from tests.workflows.recording import maybe_record
from workflows.activities import INTERRUPTED
from workflows.broadcasts import (
    BroadcastError,
    cancel_broadcast,
    pause_broadcast,
    progress,
    resume_broadcast,
    start_broadcast,
)
from workflows.metrics import WorkerMetrics
from workflows.resend_activity import request_resends
from workflows.worker import build_worker

NEWS = """\
id: news
name: December news
email:
  template: welcome
  subject: "News for {{ contact.first_name }}"
audience: 'contact.plan == "pro"'
topic: deals
"""


def broadcast_workspace(tmp_path: Path, *broadcasts: str, config: str = "") -> Workspace:
    root = copy_workspace(tmp_path)
    folder = root / "broadcasts"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for text in broadcasts:
        bid = text.split("id:", 1)[1].split()[0]
        (folder / f"{bid}.yaml").write_text(text)
    if config:
        path = root / "workspace.yaml"
        path.write_text(path.read_text() + config)
    return load_workspace(root)


def add_contacts(engine: Engine, n: int, prefix: str = "c", **fields: Any) -> list[int]:
    ids = []
    with session_scope(engine) as s:
        for i in range(n):
            c = Contact(email=f"{prefix}{i}@example.com", fields={"first_name": f"C{i}", **fields})
            s.add(c)
            s.flush()
            assert c.id is not None
            ids.append(c.id)
    return ids


@asynccontextmanager
async def worker(
    env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    metrics: WorkerMetrics | None = None,
) -> AsyncIterator[None]:
    async with build_worker(
        env.client, settings=settings, engine=engine, workspace=workspace, metrics=metrics
    ):
        yield


def small_batches(settings: Settings, size: int, parallel: int) -> Settings:
    return settings.model_copy(
        update={"broadcast_batch_size": size, "broadcast_parallel_batches": parallel}
    )


async def wait_for(check: Any, within: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def wait_state(engine: Engine, send_id: str, states: set[str], within: float = 60) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        state = progress(engine, send_id).state
        if state in states:
            return state
        if loop.time() > deadline:
            raise AssertionError(f"send {send_id} is {state}, not {states}")
        await asyncio.sleep(0.05)


async def test_exactly_its_audience_once_each_with_the_reasons_of_the_others(
    time_env: WorkflowEnvironment,
    settings: Settings,
    any_engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    engine = any_engine
    workspace = broadcast_workspace(tmp_path, NEWS)
    pro = add_contacts(engine, 12, plan="pro")
    add_contacts(engine, 3, "free", plan="free")
    with session_scope(engine) as s:
        repository.set_status(s, pro[0], ContactStatus.unsubscribed)
        repository.set_status(s, pro[1], ContactStatus.bounced)
        left = s.get(Contact, pro[2])
        assert left is not None
        left.tags = ["topic-left:deals"]
        paused = s.get(Contact, pro[3])
        assert paused is not None
        paused.paused_until = datetime.now(UTC) + timedelta(days=3)
    settings = small_batches(settings, 3, 2)
    metrics = WorkerMetrics()
    async with worker(time_env, settings, engine, workspace, metrics):
        send = await start_broadcast(
            time_env.client, engine, workspace, "news", settings=settings, started_by="test"
        )
        with pytest.raises(BroadcastError, match="being sent"):
            await start_broadcast(time_env.client, engine, workspace, "news", settings=settings)
        await wait_state(engine, send.id, {"completed"})
    mailbox = smtp.mailbox
    expected = {f"c{i}@example.com" for i in range(4, 12)}
    received = [r for m in mailbox.messages for r in m.recipients]
    assert sorted(received) == sorted(expected)
    assert {m.subject for m in mailbox.messages} == {f"News for C{i}" for i in range(4, 12)}
    done = progress(engine, send.id)
    emails = metrics.broadcast_emails
    assert emails.labels("sent")._value.get() == 8
    assert emails.labels("suppressed")._value.get() == 4
    assert metrics.broadcast_batches.labels("done")._value.get() == 4
    assert done.audience == 12
    assert done.by_state == {"sent": 8, "suppressed": 4}
    assert done.suppressed_by_reason == {
        "contact is unsubscribed": 1,
        "contact is bounced": 1,
        "left topic deals": 1,
        "paused": 1,
    }
    with session_scope(engine) as s:
        rows = s.exec(select(Message).where(Message.workflow_id == send.id)).all()
        assert {r.campaign_id for r in rows} == {"broadcast:news"}
        assert all(r.subject.startswith("News for C") for r in rows if r.state == "sent")
    async with worker(time_env, settings, engine, workspace):
        with pytest.raises(BroadcastError, match="sent already"):
            await start_broadcast(time_env.client, engine, workspace, "news", settings=settings)


SIMPLE = """\
id: simple
name: Simple
email: {template: welcome, subject: "Hi {{ contact.first_name }}"}
"""


async def test_who_unsubscribes_while_it_runs_gets_nothing(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    ids = add_contacts(engine, 12)
    smtp.mailbox.delay = 0.05
    settings = small_batches(settings, 3, 1).model_copy(update={"smtp_max_connections": 1})
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=settings
        )
        await smtp.mailbox.wait_for(lambda m: len(m.messages) >= 1)
        with session_scope(engine) as s:
            repository.set_status(s, ids[-1], ContactStatus.unsubscribed)
        await wait_state(engine, send.id, {"completed"})
    received = sorted(r for m in smtp.mailbox.messages for r in m.recipients)
    assert received == sorted(f"c{i}@example.com" for i in range(11))
    assert progress(engine, send.id).suppressed_by_reason == {"contact is unsubscribed": 1}


async def test_pause_stops_within_one_batch_and_resume_sends_the_rest_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    add_contacts(engine, 30)
    smtp.mailbox.delay = 0.03
    settings = small_batches(settings, 4, 2).model_copy(update={"smtp_max_connections": 2})
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=settings
        )
        await smtp.mailbox.wait_for(lambda m: len(m.messages) >= 2)
        await pause_broadcast(time_env.client, engine, "simple", by="test")
        at_pause = len(smtp.mailbox.messages)
        # the workflow confirms the pause once the batches in flight have ended
        await wait_for(lambda: _workflow_paused(engine, send.id))
        stopped = len(smtp.mailbox.messages)
        assert stopped - at_pause <= 2 * 4  # at most the batches running when it was asked
        assert stopped < 30
        await asyncio.sleep(0.5)
        assert len(smtp.mailbox.messages) == stopped  # nothing while paused
        with pytest.raises(BroadcastError, match="paused already"):
            await pause_broadcast(time_env.client, engine, "simple")
        await resume_broadcast(time_env.client, engine, "simple", by="test")
        await wait_state(engine, send.id, {"completed"})
    received = sorted(r for m in smtp.mailbox.messages for r in m.recipients)
    assert received == sorted(f"c{i}@example.com" for i in range(30))


def _workflow_paused(engine: Engine, send_id: str) -> bool:
    """Paused, and no email of it waiting or on the wire."""
    p = progress(engine, send_id)
    return p.state == "paused" and not p.by_state.get("sending") and not p.by_state.get("pending")


async def test_cancel_stops_it_for_good(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    add_contacts(engine, 30)
    smtp.mailbox.delay = 0.03
    settings = small_batches(settings, 4, 1).model_copy(update={"smtp_max_connections": 2})
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=settings
        )
        await smtp.mailbox.wait_for(lambda m: len(m.messages) >= 2)
        await cancel_broadcast(time_env.client, engine, "simple", by="ops")
        await wait_state(engine, send.id, {"cancelled"})
        stopped = len(smtp.mailbox.messages)
        await asyncio.sleep(0.3)
        assert len(smtp.mailbox.messages) == stopped < 30
        with pytest.raises(BroadcastError, match="not being sent"):
            await resume_broadcast(time_env.client, engine, "simple")
    with session_scope(engine) as s:
        row = s.get(BroadcastSend, send.id)
        assert row is not None and row.note == "cancelled by ops" and row.finished_at
    p = progress(engine, send.id)
    assert p.sent == stopped and p.done == p.sent  # nothing left half-way
    received = [r for m in smtp.mailbox.messages for r in m.recipients]
    assert len(received) == len(set(received))


AB = """\
id: ab
name: Subject test
email: {template: welcome, subject: "Plain"}
ab_test:
  variants:
    - {id: a, subject: "Subject A"}
    - {id: b, subject: "Subject B"}
  sample: 40
  metric: opens
  wait: 4h
"""


async def test_ab_test_sends_the_sample_then_the_winner_to_the_rest(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, AB)
    add_contacts(engine, 20)
    settings = small_batches(settings, 5, 2)
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(time_env.client, engine, workspace, "ab", settings=settings)
        await wait_state(engine, send.id, {"testing"})
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 8)
        assert sorted(smtp.mailbox.subjects()) == ["Subject A"] * 4 + ["Subject B"] * 4
        with session_scope(engine) as s:
            b_rows = s.exec(
                select(Message).where(Message.workflow_id == send.id, Message.step_id == "b")
            ).all()
            for i, row in enumerate(b_rows[:3]):  # three of B's four open it, none of A's
                repository.record_event(
                    s,
                    contact_id=row.contact_id,
                    type="open",
                    message_id=row.id,
                    dedupe_key=f"open:test:{i}",
                )
        assert len(smtp.mailbox.messages) == 8  # nobody else before the wait is over
        await time_env.sleep(timedelta(hours=4, minutes=1))
        await wait_state(engine, send.id, {"completed"})
        await maybe_record(time_env.client.get_workflow_handle(send.id), "broadcast-ab")
    subjects = smtp.mailbox.subjects()
    assert sorted(subjects) == ["Subject A"] * 4 + ["Subject B"] * 16
    received = [r for m in smtp.mailbox.messages for r in m.recipients]
    assert sorted(received) == sorted(f"c{i}@example.com" for i in range(20))
    with session_scope(engine) as s:
        row = s.get(BroadcastSend, send.id)
        assert row is not None and row.winner == "b" and row.sample == 8
        assert row.ab_figures["variants"]["b"]["opens"] == 3


async def test_in_each_contacts_time_zone_each_gets_it_at_their_local_hour(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    now = await time_env.get_current_time()
    day = (now + timedelta(days=2)).date()
    local = f"""\
id: local
name: Local morning
email: {{template: welcome, subject: "Morning"}}
send_at: {day.isoformat()}T09:00:00
in_contact_timezone: true
"""
    workspace = broadcast_workspace(tmp_path, local)
    zones = {"Asia/Tokyo": "tokyo", "Europe/Berlin": "berlin", "America/New_York": "ny"}
    for zone, name in zones.items():
        add_contacts(engine, 2, name, timezone=zone)
    add_contacts(engine, 1, "nozone")  # the workspace's zone (UTC in the demo)
    add_contacts(engine, 1, "bad", timezone="Mars/Olympus")

    def due(zone: str) -> datetime:
        return datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo(zone)).astimezone(UTC)

    async def until(moment: datetime) -> None:
        left = moment - await time_env.get_current_time()
        if left > timedelta(0):
            await time_env.sleep(left)

    def got() -> set[str]:
        return {
            r.split("@")[0].rstrip("0123456789")
            for m in smtp.mailbox.messages
            for r in m.recipients
        }

    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(time_env.client, engine, workspace, "local", settings=settings)
        order = sorted(
            [
                ("tokyo", due("Asia/Tokyo")),
                ("berlin", due("Europe/Berlin")),
                ("utc", due("UTC")),
                ("ny", due("America/New_York")),
            ],
            key=lambda x: x[1],
        )
        seen: set[str] = set()
        for name, moment in order:
            await until(moment - timedelta(minutes=5))
            await asyncio.sleep(0.3)
            assert got() == seen, f"before {name}'s 09:00"
            await until(moment + timedelta(minutes=1))
            seen |= {"nozone", "bad"} if name == "utc" else {name}
            await wait_for(lambda: got() == seen, within=30)
        await wait_state(engine, send.id, {"completed"})
    assert len(smtp.mailbox.messages) == 8


async def test_a_long_send_continues_as_new_and_still_reaches_everyone_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    add_contacts(engine, 25)
    settings = small_batches(settings, 2, 2).model_copy(update={"broadcast_batches_per_run": 3})
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=settings
        )
        handle = time_env.client.get_workflow_handle(send.id)
        result = await handle.result()
        await maybe_record(handle, "broadcast-continued")
        history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id  # this run followed a continue-as-new
    inp = started.input.payloads[0].data
    assert b'"next_seq":' in inp and b'"next_seq": 1,' not in inp
    # the totals are carried from run to run: the last run returns them all
    assert result["sent"] == 25
    received = sorted(r for m in smtp.mailbox.messages for r in m.recipients)
    assert received == sorted(f"c{i}@example.com" for i in range(25))
    assert progress(engine, send.id).state == "completed"


async def test_an_interrupted_broadcast_email_is_resent_on_request_as_the_same_message(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, AB)
    add_contacts(engine, 10)
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(time_env.client, engine, workspace, "ab", settings=settings)
        await wait_state(engine, send.id, {"testing"})
        with session_scope(engine) as s:
            row = s.exec(
                select(Message).where(Message.workflow_id == send.id, Message.step_id == "b")
            ).first()
            assert row is not None
            outbox.finish_send(s, row.id, MessageState.interrupted, INTERRUPTED)
            first = row.header_message_id
        [outcome] = await request_resends(
            time_env.client,
            engine,
            [row.id],
            requested_by="test (ops)",
            task_queue=settings.temporal_task_queue,
        )
        assert outcome.state == "sent", outcome
    again = [m for m in smtp.mailbox.messages if m.message["Message-ID"] == first]
    assert len(again) == 2
    assert again[1].subject == "Subject B"


async def test_a_send_paused_before_it_starts_stays_paused_until_resumed(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    add_contacts(engine, 6)
    send = await start_broadcast(time_env.client, engine, workspace, "simple", settings=settings)
    await pause_broadcast(time_env.client, engine, "simple", by="test")
    seen: list[str] = []
    async with worker(time_env, settings, engine, workspace):
        loop = asyncio.get_running_loop()
        until = loop.time() + 1.5
        while loop.time() < until:  # the worker snapshots the audience meanwhile
            seen.append(progress(engine, send.id).state)
            await asyncio.sleep(0.005)
        assert set(seen) == {"paused"}, seen  # never shown as sending while it is paused
        assert progress(engine, send.id).audience == 6
        assert not smtp.mailbox.messages
        await resume_broadcast(time_env.client, engine, "simple")
        await wait_state(engine, send.id, {"completed"})
    assert len(smtp.mailbox.messages) == 6


async def test_render_processes_render_it_and_one_killed_midway_loses_and_doubles_nothing(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    add_contacts(engine, 60)
    smtp.mailbox.delay = 0.02
    settings = small_batches(settings, 10, 1).model_copy(
        update={"broadcast_render_processes": 1, "smtp_max_connections": 2}
    )
    async with build_worker(
        time_env.client, settings=settings, engine=engine, workspace=workspace
    ) as running:
        send = await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=settings
        )
        await smtp.mailbox.wait_for(lambda m: len(m.messages) >= 5)
        pool = running.render_pool
        assert pool is not None and pool._pool is not None, (
            "the emails were not rendered in a render process"
        )
        for process in list(pool._pool._processes.values()):
            process.kill()
        await wait_state(engine, send.id, {"completed"})
    received = sorted(r for m in smtp.mailbox.messages for r in m.recipients)
    assert received == sorted(f"c{i}@example.com" for i in range(60))
    assert {m.subject for m in smtp.mailbox.messages} == {f"Hi C{i}" for i in range(60)}


async def test_a_refused_address_fails_its_email_and_bounces_the_contact(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, SIMPLE)
    ids = add_contacts(engine, 5)
    smtp.mailbox.refuse["c2@example.com"] = "550 5.1.1 no such user"
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(
            time_env.client, engine, workspace, "simple", settings=settings
        )
        await wait_state(engine, send.id, {"completed"})
    assert progress(engine, send.id).by_state == {"sent": 4, "failed": 1}
    with session_scope(engine) as s:
        contact = s.get(Contact, ids[2])
        assert contact is not None and contact.status == ContactStatus.bounced
        [bounce] = s.exec(select(Event).where(Event.type == "bounce")).all()
        assert bounce.contact_id == ids[2]
        assert bounce.properties["broadcast"] == "simple"
        assert bounce.properties["status"] == "5.1.1"


CAPPED = """\
id: capped
name: Capped
email: {template: welcome, subject: "Hi"}
frequency_cap: {max: 2, per: 7d}
"""


async def test_a_frequency_cap_skips_who_had_enough_email_lately(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    workspace = broadcast_workspace(tmp_path, CAPPED)
    ids = add_contacts(engine, 3)
    with session_scope(engine) as s:  # two journey emails to c0 this week, one to c1
        for n, contact_id in enumerate([ids[0], ids[0], ids[1]]):
            s.add(
                Message(
                    id=f"j{n}",
                    key=f"journey/welcome/{contact_id}/1:hello:{n}",
                    contact_id=contact_id,
                    campaign_id="welcome",
                    step_id="hello",
                    workflow_id=f"journey/welcome/{contact_id}/1",
                    template="welcome",
                    state=MessageState.sent,
                    open_token=f"tok{n}",
                    created_at=datetime.now(UTC) - timedelta(days=1),
                )
            )
    async with worker(time_env, settings, engine, workspace):
        send = await start_broadcast(
            time_env.client, engine, workspace, "capped", settings=settings
        )
        await wait_state(engine, send.id, {"completed"})
    received = sorted(r for m in smtp.mailbox.messages for r in m.recipients)
    assert received == ["c1@example.com", "c2@example.com"]
    assert progress(engine, send.id).suppressed_by_reason == {"frequency cap": 1}
