"""What ``bench.journeys`` runs on: a workspace of bench campaigns and its contacts, a counting
SMTP sink, the SDK's own metrics, CPU and memory read from ``/proc``, and the time the contact
database's write lock is held.

Kept apart from the measurements so ``bench/journeys.py`` reads as the list of what is timed.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    MetricBuffer,
)

from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope

__all__ = [
    "BARE",
    "BARE_QUEUE",
    "CACHE_SIZE",
    "CAMPAIGNS",
    "EMAIL",
    "EMAIL3",
    "JOURNEY",
    "PARTS",
    "PYTHON_PARTS",
    "TASK_QUEUE",
    "WAIT",
    "CoreMetrics",
    "CountingSink",
    "CpuClock",
    "SqlClock",
    "build_workspace",
    "create_contacts",
    "free_port",
    "rss_mb",
]

TASK_QUEUE = "bench-journeys"
BARE_QUEUE = "bench-bare"
#: Registered workflow type names, as the worker's metrics label them.
JOURNEY, BARE = "Journey", "BenchBare"
#: The worker's sticky cache size (``build_worker``), for the memory section's reading.
CACHE_SIZE = 2000
#: Where CPU goes (``CpuClock``); all but the last two run Python and so share one GIL.
PARTS = (
    "event loop",
    "workflow threads",
    "DB threads",
    "SMTP sink",
    "SDK core",
    "Temporal server",
)
PYTHON_PARTS = PARTS[:4]
FIRST_NAMES = ("Ada", "Bilal", "Chloé", "Dmitri", "Fatima", "Jürgen", "Mei", "Søren", "Zoë")

#: The demo workspace: its templates and settings are what the bench campaigns send with.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "acme"

#: One send_email step: the journey whose throughput is the headline.
EMAIL = "bench-email"
#: Three send_email steps: the history cost of one more email step, by difference with EMAIL.
EMAIL3 = "bench-email3"
#: Sends nothing and waits 30 days: the journeys parked on timers for the memory figure.
WAIT = "bench-wait"

# Each campaign has its own trigger form of the same name, so a form event starts exactly one.
CAMPAIGNS = {
    EMAIL: f"""\
id: {EMAIL}
name: Bench, one email
trigger:
  form: {EMAIL}
steps:
  - id: hello
    send_email:
      template: welcome
      subject: "Welcome, {{{{ contact.first_name | default('friend') }}}}"
""",
    EMAIL3: f"""\
id: {EMAIL3}
name: Bench, three emails
trigger:
  form: {EMAIL3}
steps:
  - id: one
    send_email: {{template: welcome, subject: "One"}}
  - id: two
    send_email: {{template: tips, subject: "Two"}}
  - id: three
    send_email: {{template: welcome-reminder, subject: "Three"}}
""",
    WAIT: f"""\
id: {WAIT}
name: Bench, wait 30 days
trigger:
  form: {WAIT}
steps:
  - id: wait
    wait: {{duration: 30d}}
  - id: done
    exit:
""",
}


def build_workspace(parent: Path) -> Workspace:
    """The demo workspace (templates, settings) with only the bench campaigns and their forms."""
    root = parent / "workspace"
    shutil.copytree(EXAMPLES, root)
    for path in (root / "campaigns").glob("*.yaml"):
        path.unlink()
    form = (root / "forms" / "newsletter.yaml").read_text()
    assert form.startswith("id: newsletter\n"), "the demo newsletter form changed shape"
    for campaign_id, text in CAMPAIGNS.items():
        (root / "campaigns" / f"{campaign_id}.yaml").write_text(text)
        (root / "forms" / f"{campaign_id}.yaml").write_text(
            form.replace("id: newsletter", f"id: {campaign_id}", 1)
        )
    return load_workspace(root)


def create_contacts(engine: Engine, count: int) -> Iterator[int]:
    """``count`` subscribed contacts with consent, through the repository, in one transaction."""
    ids: list[int] = []
    with session_scope(engine) as session:
        for n in range(1, count + 1):
            contact, _ = repository.upsert_contact(
                session,
                f"contact{n:06d}@example.org",
                {"first_name": FIRST_NAMES[n % len(FIRST_NAMES)]},
                consent_source="bench",
            )
            assert contact.id is not None
            ids.append(contact.id)
    return iter(ids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingSink:
    """An SMTP server on a free loopback port that accepts every message and keeps only counts
    (and the first message, to check it), like Postfix's ``smtp-sink``. The test suite's
    ``SmtpServer`` parses and keeps every message, which would cost CPU in this process and
    show up in the memory figure."""

    def __init__(self) -> None:
        self.port = free_port()
        self.count = 0
        self.bytes = 0
        self.first = b""
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        if not self.first:
            self.first = data
        # Only the sink's own thread writes these; the bench reads them.
        self.count += 1
        self.bytes += len(data)
        return "250 OK"

    def start(self) -> CountingSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def thread_id(self) -> int | None:
        thread = getattr(self.controller, "_thread", None)
        return thread.native_id if isinstance(thread, threading.Thread) else None


#: Histograms whose values are kept (the others are only counted), by metric name.
KEPT = frozenset(
    {
        "workflow_task_execution_latency",
        "workflow_task_schedule_to_start_latency",
        "activity_execution_latency",
        "local_activity_execution_latency",
        "activity_schedule_to_start_latency",
    }
)


class CoreMetrics:
    """The worker's metrics (Temporal's Rust core), drained from a MetricBuffer.

    Keys are (metric name without ``temporal_``, workflow or activity type, else task queue).
    Counters add up (histograms count their observations); gauges keep their last value.
    """

    def __init__(self, buffer: MetricBuffer) -> None:
        self.buffer = buffer
        self.counts: Counter[tuple[str, str]] = Counter()
        self.gauges: dict[tuple[str, str], float] = {}
        self.values: defaultdict[tuple[str, str], list[float]] = defaultdict(list)

    def drain(self) -> None:
        for update in self.buffer.retrieve_updates():
            metric, attrs = update.metric, update.attributes
            name = metric.name.removeprefix("temporal_")
            label = attrs.get("activity_type") or attrs.get("workflow_type") or ""
            key = (name, str(label or attrs.get("task_queue") or ""))
            if metric.kind == BUFFERED_METRIC_KIND_GAUGE:
                self.gauges[key] = update.value
            elif metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                self.counts[key] += int(update.value)
            else:
                self.counts[key] += 1
                if name in KEPT:
                    self.values[key].append(float(update.value))

    def forget_values(self) -> None:
        """Start a new phase: histogram values recorded so far are dropped (counts stay)."""
        self.values.clear()


class CpuClock:
    """CPU seconds used so far, by part: this process's threads (read from /proc, named through
    ``threading``) and the Temporal server process."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_pid: int, sink_thread: int | None) -> None:
        self.server_pid = server_pid
        self.sink_thread = sink_thread

    @classmethod
    def _ticks(cls, stat: Path) -> float:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / cls.TICK  # utime + stime

    def server(self) -> float:
        return self._ticks(Path(f"/proc/{self.server_pid}/stat"))

    def read(self) -> dict[str, float]:
        parts: dict[str, float] = defaultdict(float)
        threads = {t.native_id: t.name for t in threading.enumerate()}
        for task in Path("/proc/self/task").iterdir():
            tid = int(task.name)
            if tid == threading.main_thread().native_id:
                part = "event loop"
            elif tid == self.sink_thread:
                part = "SMTP sink"
            elif threads.get(tid, "").startswith("asyncio"):
                part = "DB threads"  # asyncio.to_thread: the router's and activities' SQL
            elif threads.get(tid, "").startswith("temporal_workflow"):
                part = "workflow threads"  # the SDK runs workflow code (sandboxed) in these
            else:
                continue  # the SDK's Rust threads: the process total minus the parts above
            parts[part] += self._ticks(task / "stat")
        total = self._ticks(Path("/proc/self/stat"))
        parts["SDK core"] = max(0.0, total - sum(parts.values()))
        parts["Temporal server"] = self.server()
        return dict(parts)

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds used by each part since ``before`` (an earlier ``read()``)."""
        return {part: used - before.get(part, 0.0) for part, used in self.read().items()}


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class SqlClock:
    """Seconds the contact database's write lock was held, and seconds spent inside
    statements, summed over all connections.

    SQLite has one writer at a time: a transaction takes the lock at its first write and keeps
    it until commit, whatever Python does in between. If the lock is held for most of the
    wall time, every other writer queues behind it and the database, not CPU, sets the pace.
    Time inside statements includes waiting for that lock (busy_timeout sleeps) and for the GIL.
    """

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self.held = 0.0
        self.statements = 0.0
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        sa.event.listen(engine, "commit", self._release)
        sa.event.listen(engine, "rollback", self._release)

    def _before(self, conn: Any, *_: Any) -> None:
        conn.info["bench_statement"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            self.statements += now - conn.info.pop("bench_statement", now)
        if statement.lstrip()[:7].upper().startswith(_WRITES):
            conn.info.setdefault("bench_write_lock", now)

    def _release(self, conn: Any) -> None:
        taken = conn.info.pop("bench_write_lock", None)
        if taken is not None:
            with self._lock:
                self.held += time.perf_counter() - taken

    def read(self) -> dict[str, float]:
        return {"write lock held": self.held, "inside statements": self.statements}
