"""Broadcasts through faults, counted at the SMTP server: every eligible recipient gets exactly
one email and none gets two, whatever breaks mid-send.

- ``drip worker`` SIGKILLed mid-broadcast (2,000 recipients, a relay slow enough that the kill
  lands inside DATA on many connections) and started again: the send completes; the only
  recipients who may lack their email are those whose transaction the kill cut off, never more
  than the connections open then, each marked ``interrupted`` and listed by
  ``drip messages interrupted``, never resent;
- the Temporal dev server restarted (same SQLite file) mid-broadcast: the send completes;
- the relay answering 421 for a while (to connections, then to MAIL FROM): the batches are
  retried, every refusal shows as one more attempt on its outbox row and as the retried batch's
  last failure in Temporal, and the send completes;
- two ``drip worker`` processes on PostgreSQL share one broadcast (Temporal's history names the
  worker that ran each batch: both did) and still send each email exactly once.

Real pieces only: the Temporal dev server (or the time-skipping one for the 421 test, whose
retry backoff would otherwise take minutes), ``drip worker`` processes, aiosmtpd, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Message
from drip._temporal import TemporalDevServer
from drip.settings import Settings
from tests.e2e.conftest import WorkerProcess, temporal_target
from tests.support import SmtpServer, copy_workspace, free_port, venv_binary
from tests.workflows.test_smtp_faults import FaultySmtp
from workflows.broadcast_types import BATCH_ACTIVITY
from workflows.broadcasts import progress, start_broadcast
from workflows.worker import build_worker

pytestmark = pytest.mark.e2e

NEWS = """\
id: news
name: December news
email:
  template: welcome
  subject: "News for {{ contact.first_name }}"
audience: 'contact.plan == "pro"'
"""
CAMPAIGN = "broadcast:news"


# --- the workspace, the audience, the worker ---------------------------------------------------


def _workspace(tmp_path: Path) -> Path:
    """The demo workspace with ``news`` as its only broadcast."""
    root = copy_workspace(tmp_path)
    folder = root / "broadcasts"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    (folder / "news.yaml").write_text(NEWS)
    return root


def _audience(engine: Engine, n: int) -> set[str]:
    """``n`` eligible contacts, plus some that must get nothing: unsubscribed and bounced ones
    in the audience (their rows end ``suppressed``), and contacts outside it. Returns the
    eligible addresses."""
    with session_scope(engine) as s:
        s.add_all(
            Contact(email=f"r{i}@example.com", fields={"first_name": f"R{i}", "plan": "pro"})
            for i in range(n)
        )
        for i, status in enumerate([ContactStatus.unsubscribed, ContactStatus.bounced] * 5):
            s.add(Contact(email=f"x{i}@example.com", fields={"plan": "pro"}, status=status))
        s.add_all(Contact(email=f"f{i}@example.com", fields={"plan": "free"}) for i in range(10))
    return {f"r{i}@example.com" for i in range(n)}


def _sizes(settings: Settings, batch: int, parallel: int) -> Settings:
    """What ``start_broadcast`` puts in the send: recipients per batch, batches at once, and
    how soon a killed worker's batch is retried (10 s, not the default 30, to keep it short)."""
    return settings.model_copy(
        update={
            "broadcast_batch_size": batch,
            "broadcast_parallel_batches": parallel,
            "broadcast_heartbeat_seconds": 10.0,
        }
    )


def _worker(settings: Settings, address: str, log: Path, connections: int) -> WorkerProcess:
    worker = WorkerProcess(settings, address, log)
    worker.env["DRIP_SMTP_MAX_CONNECTIONS"] = str(connections)
    worker.env["DRIP_SMTP_POOL_SIZE"] = str(connections)
    return worker


async def _start(client: Client, engine: Engine, settings: Settings) -> str:
    workspace = load_workspace(settings.workspace)
    send = await start_broadcast(client, engine, workspace, "news", settings=settings)
    return send.id


async def _until(check: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _completed(engine: Engine, send_id: str, within: float) -> None:
    def done() -> bool:
        return progress(engine, send_id).state == "completed"

    await _until(done, f"send {send_id} to complete", within)


# --- what the relay got, what the outbox says ----------------------------------------------------


def _received(smtp: SmtpServer) -> Counter[str]:
    """Emails the relay accepted, by recipient."""
    with smtp.mailbox.lock:
        return Counter(r for m in smtp.mailbox.messages for r in m.recipients)


def _rows(engine: Engine, send_id: str) -> dict[str, tuple[str, str, int]]:
    """The send's outbox rows: recipient -> (message id, state, attempts)."""
    with session_scope(engine) as s:
        found = s.execute(
            sa.select(Contact.email, Message.id, Message.state, Message.attempts)  # type: ignore[call-overload]
            .join(Contact, Contact.id == Message.contact_id)
            .where(Message.workflow_id == send_id)
        ).all()
    return {email: (mid, str(state), attempts) for email, mid, state, attempts in found}


def _exactly_once(
    smtp: SmtpServer, engine: Engine, send_id: str, eligible: set[str], *, cut_off: int = 0
) -> dict[str, str]:
    """Every eligible recipient got exactly one email and nobody got two, nobody else any;
    the only exception: up to ``cut_off`` recipients whose transaction a kill cut off may lack
    theirs (the relay may or may not have kept it), each marked ``interrupted`` (never
    resent). Returns the interrupted recipients with their message ids."""
    got = _received(smtp)
    assert [r for r, n in got.items() if n > 1] == []
    assert set(got) <= eligible, sorted(set(got) - eligible)[:5]
    rows = _rows(engine, send_id)
    interrupted = {r: mid for r, (mid, state, _) in rows.items() if state == "interrupted"}
    assert len(interrupted) <= cut_off, interrupted
    assert sorted(eligible - set(got)) == sorted(r for r in interrupted if r not in got)
    states = Counter(state for r, (_, state, _) in rows.items() if r in eligible)
    want = Counter({"sent": len(eligible) - len(interrupted), "interrupted": len(interrupted)})
    assert states == +want  # (+ drops a zero count)
    others = Counter(state for r, (_, state, _) in rows.items() if r not in eligible)
    assert others == Counter({"suppressed": 10})
    done = progress(engine, send_id)
    assert (done.state, done.audience, done.done) == ("completed", len(eligible) + 10, len(rows))
    return interrupted


async def _batches(client: Client, send_id: str) -> list[tuple[str, int]]:
    """The send's batch activities from Temporal's history: (the worker that ran the last
    attempt, its attempt number)."""
    history = await client.get_workflow_handle(send_id).fetch_history()
    batch_events = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == BATCH_ACTIVITY
    }
    started = []
    for e in history.events:
        if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            continue
        a = e.activity_task_started_event_attributes
        if a.scheduled_event_id in batch_events:
            started.append((a.identity, a.attempt))
    return started


async def _started(workers: list[WorkerProcess]) -> None:
    """Until every worker says it started (it polls the task queue from then on)."""

    def up(worker: WorkerProcess) -> bool:
        return worker.log.exists() and "worker started" in worker.log.read_text(errors="replace")

    await _until(lambda: all(up(w) for w in workers), "the workers to start", within=60)


async def _drip(settings: Settings, address: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        venv_binary("drip"),
        *args,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
            "DRIP_HOME": str(settings.home),
            "DRIP_WORKSPACE": str(settings.workspace),
            "DRIP_DATABASE_URL": settings.database_url,
            "DRIP_TEMPORAL_ADDRESS": address,
            "DRIP_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
            "COLUMNS": "250",
        },
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# --- 1. the worker killed ----------------------------------------------------------------------

#: connections the killed worker keeps open: the most emails a kill can catch inside DATA
KILL_CONNECTIONS = 40


async def test_a_worker_killed_mid_broadcast_and_restarted_sends_each_email_once(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = _sizes(
        settings.model_copy(update={"workspace": _workspace(tmp_path)}), batch=200, parallel=4
    )
    eligible = _audience(engine, 2000)
    address = temporal_target(dev_env)
    worker = _worker(settings, address, tmp_path / "worker.log", KILL_CONNECTIONS)
    # the relay keeps each message, then holds its reply: most of a transaction is that wait,
    # so the kill finds nearly every connection inside DATA
    smtp.mailbox.delay = 0.2
    try:
        worker.start()
        send_id = await _start(dev_env.client, engine, settings)
        await smtp.mailbox.wait_for(lambda m: m.data_started >= 300, within=60)
        worker.kill()
        at_kill = len(_received(smtp))
        smtp.mailbox.delay = 0.0
        assert at_kill < len(eligible)  # mid-broadcast
        worker.start()
        await _completed(engine, send_id, within=150)
    finally:
        worker.stop()
    interrupted = _exactly_once(smtp, engine, send_id, eligible, cut_off=KILL_CONNECTIONS)
    # the kill did catch transactions inside DATA: the relay has those emails, the worker never
    # heard so, and its successor marked them instead of sending them again
    caught = [r for r in interrupted if _received(smtp)[r] == 1]
    assert caught, "the kill caught no transaction (the relay was not slow enough)"
    with session_scope(engine) as s:
        notes = s.execute(
            sa.select(Message.error).where(Message.id.in_(list(interrupted.values())))  # type: ignore[union-attr]
        ).scalars()
        assert all("not resent" in (note or "") for note in notes)
    listed = ("messages", "interrupted", "--campaign", CAMPAIGN)
    code, out, err = await _drip(settings, address, *listed)
    assert code == 0, err
    assert f"{len(interrupted)} interrupted email" in out
    for recipient, message_id in interrupted.items():
        assert message_id in out and recipient in out


# --- 2. the Temporal server restarted -----------------------------------------------------------


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[TemporalDevServer]:
    """``temporal server start-dev`` as ``drip dev`` starts it: its own SQLite file (under
    ``settings.home``), so what it knows survives a restart on the same file and port."""
    settings.home.mkdir(parents=True, exist_ok=True)
    ours = settings.model_copy(
        update={"temporal_address": f"127.0.0.1:{free_port()}", "temporal_ui_port": free_port()}
    )
    dev = TemporalDevServer(ours, venv_binary("temporal"))
    await dev.start()
    try:
        await dev.wait_ready()
        yield dev
    finally:
        await dev.stop()


async def test_a_broadcast_survives_a_temporal_server_restart(
    server: TemporalDevServer,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    address = server.settings.temporal_address
    settings = _sizes(
        settings.model_copy(
            update={"workspace": _workspace(tmp_path), "temporal_address": address}
        ),
        batch=200,
        parallel=2,
    )
    eligible = _audience(engine, 1000)
    worker = _worker(settings, address, tmp_path / "worker.log", 20)
    smtp.mailbox.delay = 0.1
    client = await Client.connect(address)
    try:
        worker.start()
        send_id = await _start(client, engine, settings)
        await smtp.mailbox.wait_for(lambda m: m.data_started >= 100, within=60)
        await server.stop()
        assert server.returncode is not None
        down_at = len(_received(smtp))
        # the batches under way finish while the server is down; nothing starts new ones
        await asyncio.sleep(1.0)
        smtp.mailbox.delay = 0.0
        await server.start()  # same SQLite file, same port
        await server.wait_ready()
        assert down_at < len(eligible)  # mid-broadcast
        await _completed(engine, send_id, within=120)
    finally:
        worker.stop()
    assert _exactly_once(smtp, engine, send_id, eligible) == {}


# --- 3. the relay answering 421 -----------------------------------------------------------------

REFUSED = "421 4.7.0 Too busy, try again later"


@pytest.fixture
def faulty() -> Iterator[FaultySmtp]:
    server = FaultySmtp().start()
    yield server
    server.stop()


async def test_a_relay_answering_421_for_a_while_delays_the_broadcast_and_sends_each_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    faulty: FaultySmtp,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Temporal's time-skipping server: the batches' retry backoff (1 s, doubling) takes no
    real time while the test awaits the send's result."""
    settings = _sizes(
        settings.model_copy(
            update={
                "workspace": _workspace(tmp_path),
                "smtp_port": faulty.port,
                "smtp_max_connections": 10,
            }
        ),
        batch=100,
        parallel=3,
    )
    workspace: Workspace = load_workspace(settings.workspace)
    eligible = _audience(engine, 400)
    # first it refuses new connections, then (once some are open) the messages themselves
    faulty.mailbox.fail("greeting", REFUSED, times=5)
    faulty.mailbox.fail("MAIL", REFUSED, times=30)
    async with build_worker(time_env.client, settings=settings, engine=engine, workspace=workspace):
        send = await start_broadcast(time_env.client, engine, workspace, "news", settings=settings)
        await asyncio.wait_for(time_env.client.get_workflow_handle(send.id).result(), 120)
    assert faulty.mailbox.faults == Counter({"greeting": 5, "MAIL": 30})
    assert _exactly_once(faulty, engine, send.id, eligible) == {}
    # each refused MAIL FROM is one more attempt on its row (claimed, refused, handed back)
    attempts = [a for r, (_, _, a) in _rows(engine, send.id).items() if r in eligible]
    assert sum(attempts) == len(eligible) + 30
    assert max(attempts) >= 2
    # Temporal shows the batches retried, the worker's log says why
    batches = await _batches(time_env.client, send.id)
    assert len(batches) == 5, batches  # 410 in the audience, 100 a batch
    assert max(attempt for _, attempt in batches) >= 2, batches
    deferred = [r.getMessage() for r in caplog.records if " deferred: " in r.getMessage()]
    assert deferred and all(REFUSED.split(" ", 1)[1] in d for d in deferred), deferred


# --- 4. two workers on PostgreSQL ---------------------------------------------------------------


@pytest.mark.postgres
async def test_two_workers_on_postgresql_share_a_broadcast_and_send_each_email_once(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    pg_engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    engine = pg_engine
    settings = _sizes(
        settings.model_copy(
            update={
                "workspace": _workspace(tmp_path),
                "database_url": engine.url.render_as_string(hide_password=False),
            }
        ),
        batch=50,
        parallel=4,
    )
    eligible = _audience(engine, 1200)
    address = temporal_target(dev_env)
    workers = [_worker(settings, address, tmp_path / f"worker{i}.log", 10) for i in (1, 2)]
    smtp.mailbox.delay = 0.02
    try:
        for worker in workers:
            worker.start()
        # both ready before the first batch, or the first could take them all by being alone
        await _started(workers)
        send_id = await _start(dev_env.client, engine, settings)
        await _completed(engine, send_id, within=120)
    finally:
        for worker in workers:
            worker.stop()
    assert _exactly_once(smtp, engine, send_id, eligible) == {}
    batches = await _batches(dev_env.client, send_id)
    assert len(batches) == 25  # 1,210 in the audience, 50 a batch
    # each worker took a fair part of them (about half; a worker taking nearly all is the
    # eager dispatch of batches to the workflow's own worker, workflows.broadcast_spread)
    pids = Counter(int(who.split("@")[0]) for who, _ in batches)
    assert set(pids) == {w.proc.pid for w in workers if w.proc is not None}, pids
    assert min(pids.values()) >= 5, pids
