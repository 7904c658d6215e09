"""Pacing by receiving domain, counted at a real SMTP server.

- A relay that defers gmail.com with ``421 4.7.0`` for a while and accepts everyone else: the
  broadcast's other domains go on (no batch fails, their mail keeps arriving while Google
  waits), Google is not tried again before its backoff ends, and every recipient gets exactly
  one email (Google's in the broadcast's later round).
- Two ``drip worker`` processes on PostgreSQL share one broadcast: together they never put more
  than Google's ``connections`` transactions in flight, nor more than its ``per_second`` in any
  second, as the server sees them.
- A warm-up's daily cap, on the time-skipping server: day 1 gets its cap and the rest of the
  journeys' emails wait for day 2.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts.db import session_scope
from contacts.models import Contact, MessageState
from contacts.pacing import DomainDay
from drip.settings import Settings
from tests.e2e.conftest import WorkerProcess, temporal_target
from tests.e2e.test_broadcast_faults import _batches, _rows, _started, _until
from tests.engine_support import journeys, workspace_with
from tests.support import Mailbox, SmtpServer, copy_workspace
from tests.workflows.recording import maybe_record
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
rate: 60
"""


@dataclass
class Throttling(Mailbox):
    """A relay that answers ``421 4.7.0`` to RCPT TO for ``deferred`` domains during the
    ``defer_for`` seconds after their first recipient, and records, per domain, when each
    recipient was accepted and how many transactions were in flight at once."""

    deferred: set[str] = field(default_factory=set)
    defer_for: float = 0.0
    first_seen: dict[str, float] = field(default_factory=dict)
    #: (monotonic time, recipient, reply code) for every RCPT TO
    rcpts: list[tuple[float, str, int]] = field(default_factory=list)
    flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    guard: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2]
        now = time.monotonic()
        with self.guard:
            start = self.first_seen.setdefault(domain, now)
            if domain in self.deferred and now < start + self.defer_for:
                self.rcpts.append((now, address, 421))
                return "421 4.7.0 Try again later, closing connection"
            self.rcpts.append((now, address, 250))
            self.flight[domain] += 1
            self.most_in_flight[domain] = max(self.most_in_flight[domain], self.flight[domain])
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            return await super().handle_DATA(server, session, envelope)
        finally:
            with self.guard:
                for address in envelope.rcpt_tos:
                    self.flight[address.rpartition("@")[2]] -= 1

    def accepted(self, domain: str) -> list[float]:
        with self.guard:
            return [t for t, a, code in self.rcpts if code == 250 and a.endswith("@" + domain)]

    def refused(self, domain: str) -> list[float]:
        with self.guard:
            return [t for t, a, code in self.rcpts if code != 250 and a.endswith("@" + domain)]


class ThrottlingSmtp(SmtpServer):
    def __init__(self) -> None:
        super().__init__()
        self.mailbox: Throttling = Throttling()


@pytest.fixture
def smtp() -> Iterator[ThrottlingSmtp]:
    """Replaces the suite's relay (the ``settings`` fixture sends to this one)."""
    server = ThrottlingSmtp()
    server.start()
    yield server
    server.stop()


def _workspace(tmp_path: Path, deliverability: str) -> Path:
    """The demo workspace with ``news`` as its only broadcast and this ``deliverability:``."""
    root = copy_workspace(tmp_path)
    folder = root / "broadcasts"
    for old in folder.glob("*.yaml"):
        old.unlink()
    (folder / "news.yaml").write_text(NEWS)
    with (root / "workspace.yaml").open("a") as out:
        out.write(deliverability)
    return root


def _audience(engine: Engine, gmail: int, others: int) -> set[str]:
    with session_scope(engine) as s:
        s.add_all(
            Contact(email=f"g{i}@gmail.com", fields={"first_name": f"G{i}", "plan": "pro"})
            for i in range(gmail)
        )
        s.add_all(
            Contact(email=f"r{i}@example.com", fields={"first_name": f"R{i}", "plan": "pro"})
            for i in range(others)
        )
    return {f"g{i}@gmail.com" for i in range(gmail)} | {f"r{i}@example.com" for i in range(others)}


def _sizes(settings: Settings, root: Path, batch: int, parallel: int) -> Settings:
    return settings.model_copy(
        update={
            "workspace": root,
            "broadcast_batch_size": batch,
            "broadcast_parallel_batches": parallel,
        }
    )


def _received(smtp: ThrottlingSmtp) -> Counter[str]:
    with smtp.mailbox.lock:
        return Counter(r for m in smtp.mailbox.messages for r in m.recipients)


async def _completed(engine: Engine, send_id: str, within: float) -> None:
    await _until(lambda: progress(engine, send_id).state == "completed", "the send", within)


# --- a deferred domain backs off, the others go on -------------------------------------------

DEFERRING = """
deliverability:
  domains:
    google: {domains: [gmail.com, googlemail.com], per_second: 50, connections: 4}
  backoff: {first: 3s, max: 10s, recover: 5s}
"""


async def test_a_deferred_domain_backs_off_while_the_others_keep_going(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: ThrottlingSmtp,
    tmp_path: Path,
) -> None:
    settings = _sizes(settings, _workspace(tmp_path, DEFERRING), batch=40, parallel=2)
    eligible = _audience(engine, gmail=30, others=150)
    smtp.mailbox.deferred = {"gmail.com"}
    smtp.mailbox.defer_for = 1.0  # shorter than the backoff: a retry inside it would succeed
    workspace = load_workspace(settings.workspace)
    async with build_worker(dev_env.client, settings=settings, engine=engine, workspace=workspace):
        send = await start_broadcast(dev_env.client, engine, workspace, "news", settings=settings)
        await _completed(engine, send.id, within=120)
        await maybe_record(dev_env.client.get_workflow_handle(send.id), "broadcast-held-round")
    got = _received(smtp)
    assert [r for r, n in got.items() if n > 1] == []
    assert set(got) == eligible
    assert Counter(state for _, state, _ in _rows(engine, send.id).values()) == {
        "sent": len(eligible)
    }
    refused = smtp.mailbox.refused("gmail.com")
    assert refused, "the relay never deferred gmail.com: the test tested nothing"
    first = min(refused)
    # Google backed off: nothing was accepted for it until its backoff (3 s) had passed,
    # although the relay took Google's mail again after 1 s
    later = [t for t in smtp.mailbox.accepted("gmail.com") if t > first]
    assert later and min(later) >= first + 3.0 - 0.05, (first, later[:3])
    # ... and only the sends already under way when the first deferral came were refused
    assert len(refused) <= 4 + 2, refused
    # the other domain went on meanwhile, and no batch ever failed over Google's deferral
    during = [t for t in smtp.mailbox.accepted("example.com") if first < t < first + 3.0]
    assert during, "example.com's mail stopped while Google was backing off"
    attempts = [attempt for _, attempt in await _batches(dev_env.client, send.id)]
    assert set(attempts) == {1}, attempts


# --- two worker processes share a domain's limit -------------------------------------------

LIMITED = """
deliverability:
  domains:
    google: {domains: [gmail.com, googlemail.com], per_second: 4, connections: 2}
"""


@pytest.mark.postgres
async def test_two_workers_together_keep_to_a_domains_limit(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    pg_engine: Engine,
    smtp: ThrottlingSmtp,
    tmp_path: Path,
) -> None:
    engine = pg_engine
    settings = _sizes(
        settings.model_copy(
            update={"database_url": engine.url.render_as_string(hide_password=False)}
        ),
        _workspace(tmp_path, LIMITED),
        batch=8,
        parallel=4,
    )
    eligible = _audience(engine, gmail=24, others=40)
    # each transaction takes longer than Google's slots are apart: without the limit on
    # transactions at once, three would overlap
    smtp.mailbox.delay = 0.6
    address = temporal_target(dev_env)
    workers = [WorkerProcess(settings, address, tmp_path / f"worker{i}.log") for i in (1, 2)]
    try:
        for worker in workers:
            worker.start()
        await _started(workers)
        workspace = load_workspace(settings.workspace)
        send = await start_broadcast(dev_env.client, engine, workspace, "news", settings=settings)
        await _completed(engine, send.id, within=120)
    finally:
        for worker in workers:
            worker.stop()
    got = _received(smtp)
    assert [r for r, n in got.items() if n > 1] == []
    assert set(got) == eligible
    # both processes sent the broadcast's batches
    pids = Counter(int(who.split("@")[0]) for who, _ in await _batches(dev_env.client, send.id))
    assert set(pids) == {w.proc.pid for w in workers if w.proc is not None}, pids
    # never more than 2 of Google's transactions at once, counted by the server
    assert smtp.mailbox.most_in_flight["gmail.com"] == 2
    assert smtp.mailbox.most_in_flight["example.com"] > 2  # the limit was Google's alone
    # and never more than 4 a second: the workers book slots 0.25 s apart in the database; the
    # server sees them through scheduling jitter, which can bring one slot into the window
    times = sorted(smtp.mailbox.accepted("gmail.com"))
    assert len(times) == 24
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 4 + 1, busiest
    # over the whole send, the pace held: 24 emails take at least 23 slots of 0.25 s
    assert times[-1] - times[0] >= 23 * 0.25 - 0.25


# --- a warm-up's cap for the day -------------------------------------------------------------

WELCOME = """\
id: hello
name: Hello
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello}
"""


async def test_a_warm_up_cap_holds_the_rest_until_the_next_day(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: ThrottlingSmtp,
    tmp_path: Path,
) -> None:
    start = await time_env.get_current_time()
    zone = ZoneInfo("UTC")
    today = start.astimezone(zone).date()
    warmup = f"""
timezone: UTC
deliverability:
  warmup: {{start: {today.isoformat()}, per_day: [3, 10]}}
"""
    workspace = workspace_with(tmp_path, WELCOME, config=warmup)
    people = [f"p{i}@gmail.com" for i in range(5)]
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        ids = [await d.form("newsletter", p) for p in people]

        def held() -> list[str]:
            return [
                m.error or ""
                for m in d.messages()
                if m.state == MessageState.pending and "warm-up" in (m.error or "")
            ]

        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 3, within=30)
        await _until(lambda: len(held()) == 2, "two emails held for the warm-up", within=30)
        assert len(smtp.mailbox.messages) == 3  # the day's cap, and no more
        assert all(f"google has had its 3 for {today.isoformat()}" in e for e in held())
        midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), zone)
        await d.advance_to(midnight + timedelta(minutes=5))
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 5, within=30)
        await _until(
            lambda: {d.message(i, "hello").state for i in ids} == {MessageState.sent},
            "every row sent",
            within=30,
        )
        held_id = next(i for i in ids if d.message(i, "hello").attempts > 1)
        await d.finish()
        workflow_id = d.enrolment(held_id, "hello").workflow_id
        await maybe_record(time_env.client.get_workflow_handle(workflow_id), "warm-up-held")
    assert sorted(r for m in smtp.mailbox.messages for r in m.recipients) == sorted(people)
    with session_scope(engine) as s:
        days = s.execute(
            sa.select(DomainDay.day, DomainDay.sent).where(DomainDay.domain_group == "google")  # type: ignore[call-overload]
        ).all()
    assert sorted(days) == [(today.isoformat(), 3), ((today + timedelta(days=1)).isoformat(), 2)]
