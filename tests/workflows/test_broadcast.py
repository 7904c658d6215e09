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

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Message
from drip.settings import Settings
from tests.support import SmtpServer, copy_workspace
from workflows.broadcasts import (
    BroadcastError,
    progress,
    start_broadcast,
)
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
    env: WorkflowEnvironment, settings: Settings, engine: Engine, workspace: Workspace
) -> AsyncIterator[None]:
    async with build_worker(env.client, settings=settings, engine=engine, workspace=workspace):
        yield


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
    engine: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
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
    settings = settings.model_copy(
        update={"broadcast_batch_size": 3, "broadcast_parallel_batches": 2}
    )
    async with worker(time_env, settings, engine, workspace):
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
