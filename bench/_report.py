"""What ``bench.journeys`` measured, and how it prints it: one section per measurement, then the
JSON summary (the caller prints it last)."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from bench._stack import BARE, BARE_QUEUE, CACHE_SIZE, JOURNEY, PARTS, PYTHON_PARTS, TASK_QUEUE

__all__ = ["Breakdown", "Bulk", "Memory", "Round", "report"]


@dataclass
class Round:
    """One timed batch of one path."""

    path: str
    count: int
    started: float  # s from the first entry until the last start returned
    done: float  # s from the first entry until the worker completed the last workflow
    cpu: dict[str, float]  # CPU seconds by part (see CpuClock)
    sql: dict[str, float]  # seconds (see SqlClock)

    @property
    def rate(self) -> float:
        return self.count / self.done


@dataclass
class Memory:
    started: int
    rss_mb: float
    server_rss_mb: float
    cached: int
    seconds: float  # since the first of these journeys was entered


@dataclass
class Bulk:
    count: int
    started: float
    delivered: float
    done: float

    @property
    def rate(self) -> float:
        return self.count / self.delivered


@dataclass
class Breakdown:
    """Latencies of the timed rounds: the worker's histograms (ms) and the drip entry's steps."""

    values: dict[tuple[str, str], list[float]]
    entry: dict[str, list[float]] = field(default_factory=dict)

    def ms(self, name: str, label: str) -> float:
        found = self.values.get((name, label))
        return statistics.median(found) if found else float("nan")


def report(
    rounds: dict[str, list[Round]],
    breakdown: Breakdown,
    histories: dict[str, WorkflowHistory],
    memory: list[Memory],
    bulk: Bulk,
    *,
    concurrency: int,
) -> dict[str, Any]:
    """Print the figures; return the JSON summary."""
    summary = throughput(rounds, concurrency)
    where(rounds, breakdown)
    summary |= history(histories)
    summary |= waiting(memory)
    print()
    print("4. Bulk: journeys entered at once, one email each")
    print(
        f"   {bulk.count} journeys: all entered after {bulk.started:.1f} s, last email after "
        f"{bulk.delivered:.1f} s: {bulk.rate:.1f} emails/s; all completed after {bulk.done:.1f} s"
    )
    print()
    return summary | {"bulk_emails_per_s": round(bulk.rate, 1)}


def throughput(rounds: dict[str, list[Round]], concurrency: int) -> dict[str, Any]:
    rates = {path: [r.rate for r in rs] for path, rs in rounds.items()}
    median = {path: statistics.median(r) for path, r in rates.items()}
    per_round = [d / b for d, b in zip(rates["drip"], rates["bare"], strict=True)]
    ratio = median["drip"] / median["bare"]
    print()
    print(
        f"1. Throughput: {rounds['drip'][0].count} per path per round, {len(per_round)} rounds, "
        f"{concurrency} in flight"
    )
    print(f"{'path':<48}{'per s':>8}   rounds min-max")
    labels = {
        "drip": "drip: record_event + route + 1-email journey",
        "bare": "bare: start_workflow + 1 no-op activity",
    }
    for path, label in labels.items():
        print(f"{label:<48}{median[path]:>8.1f}   {min(rates[path]):.1f}-{max(rates[path]):.1f}")
    print(
        f"ratio drip/bare: {ratio:.2f} (rounds {', '.join(f'{r:.2f}' for r in per_round)}); "
        "goal >= 0.8"
    )
    return {
        "ratio": round(ratio, 3),
        "ratio_rounds": [round(r, 3) for r in per_round],
        "journeys_per_s": round(median["drip"], 1),
        "bare_per_s": round(median["bare"], 1),
    }


def where(rounds: dict[str, list[Round]], breakdown: Breakdown) -> None:
    """Where the time of the timed rounds went: CPU by part, the contact database's write lock,
    and median latencies from the worker's own metrics."""
    cpu = {path: Counter[str]() for path in rounds}
    sql = {path: Counter[str]() for path in rounds}
    for path, rs in rounds.items():
        for r in rs:
            cpu[path].update(r.cpu)
            sql[path].update(r.sql)
    n = {path: sum(r.count for r in rs) for path, rs in rounds.items()}
    wall = {path: sum(r.done for r in rs) for path, rs in rounds.items()}

    def row(label: str, cells: list[str]) -> None:
        print(f"   {label:<36}" + "".join(f"{c:>8}" for c in cells))

    print()
    print("   where the time goes in the timed rounds, per journey (drip) or workflow (bare):")
    row("CPU ms", list(rounds))
    for part in PARTS:
        row(part, [f"{1000 * cpu[p][part] / n[p]:.1f}" for p in rounds])
    row("total", [f"{1000 * sum(cpu[p].values()) / n[p]:.1f}" for p in rounds])
    row("wall ms", [f"{1000 * wall[p] / n[p]:.1f}" for p in rounds])
    gil = {p: sum(cpu[p][part] for part in PYTHON_PARTS) / wall[p] for p in rounds}
    row("Python threads busy (one GIL)", [f"{100 * gil[p]:.0f}%" for p in rounds])
    row(
        "Temporal server, cores busy",
        [f"{cpu[p]['Temporal server'] / wall[p]:.2f}" for p in rounds],
    )
    row(
        "contact DB write lock held",
        [f"{100 * sql[p]['write lock held'] / wall[p]:.0f}%" for p in rounds],
    )
    row(
        "ms inside SQL statements",
        [f"{1000 * sql[p]['inside statements'] / n[p]:.1f}" for p in rounds],
    )

    ms = breakdown.ms
    entry = {k: statistics.median(v) for k, v in breakdown.entry.items() if v}
    print(
        f"   median ms, drip entry: record_event {entry.get('record_event', 0):.1f}, "
        f"route {entry.get('route', 0):.1f} (plan lookup + enrolment row + signal-with-start "
        "+ mark routed)"
    )
    runs = [
        f"{label}{' (local)' if name.startswith('local') else ''} {ms(name, label):.1f}"
        for name, label in sorted(breakdown.values)
        if name in ("activity_execution_latency", "local_activity_execution_latency")
    ]
    print(f"   median ms, activity run: {', '.join(runs)}")
    print(
        f"   median ms, workflow task run: Journey "
        f"{ms('workflow_task_execution_latency', JOURNEY):.1f}, BenchBare "
        f"{ms('workflow_task_execution_latency', BARE):.1f}"
    )
    print(
        "   median ms, queued before a worker took it (schedule-to-start): workflow tasks "
        f"drip {ms('workflow_task_schedule_to_start_latency', TASK_QUEUE):.1f} / bare "
        f"{ms('workflow_task_schedule_to_start_latency', BARE_QUEUE):.1f}, activities drip "
        f"{ms('activity_schedule_to_start_latency', TASK_QUEUE):.1f} / bare "
        f"{ms('activity_schedule_to_start_latency', BARE_QUEUE):.1f}"
    )


def event_counts(history: WorkflowHistory) -> Counter[str]:
    return Counter(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events)


def history(histories: dict[str, WorkflowHistory]) -> dict[str, Any]:
    one, three, bare = (event_counts(histories[k]) for k in ("1 email", "3 emails", "bare"))
    total1, total3 = sum(one.values()), sum(three.values())
    size1 = sum(e.ByteSize() for e in histories["1 email"].events)
    marginal = (total3 - total1) / 2
    fixed = total1 - marginal
    print()
    print("2. History of a finished journey")
    print(f"   {'event type':<34}{'1 email':>8}{'3 emails':>9}{'bare':>6}")
    for name in sorted(set(one) | set(three) | set(bare)):
        print(f"   {name:<34}{one[name]:>8}{three[name]:>9}{bare[name]:>6}")
    print(f"   {'total':<34}{total1:>8}{total3:>9}{sum(bare.values()):>6}")
    print(
        f"   events per send_email step: {total1} in the 1-email journey (goal <= 12), "
        f"{total3 / 3:.1f} in the 3-email one"
    )
    print(
        f"   each email step adds {marginal:.0f}; the rest of a journey costs {fixed:.0f}; "
        f"1-email history {size1:,} bytes"
    )
    return {
        "history_events_per_email_step": total1,
        "history_events_marginal_email_step": marginal,
        "history_events_fixed": fixed,
        "history_events_bare": sum(bare.values()),
    }


def waiting(memory: list[Memory]) -> dict[str, Any]:
    print()
    print("3. Worker memory with journeys waiting on a 30-day timer")
    print(f"   {'started':>8}{'after s':>9}{'worker RSS MB':>15}{'cached':>8}{'server RSS MB':>15}")
    for m in memory:
        print(
            f"   {m.started:>8}{m.seconds:>9.1f}{m.rss_mb:>15.1f}{m.cached:>8}"
            f"{m.server_rss_mb:>15.1f}"
        )
    start, last = memory[0], memory[-1]
    full = next((m for m in memory if m.cached >= CACHE_SIZE), None)
    filled = full or last
    per_cached = (filled.rss_mb - start.rss_mb) * 1024 / max(1, filled.cached)
    print(f"   while the cache fills: {per_cached:.0f} KB of worker RSS per cached journey")
    after: float | None = None
    if full is not None and last.started > full.started:
        after = last.rss_mb - full.rss_mb
        more = last.started - full.started
        print(
            f"   once full ({CACHE_SIZE} cached, at {full.started} started): {after:+.1f} MB "
            f"over {more} more journeys ({after * 1024 / more:.1f} KB each)"
        )
    else:
        print(f"   the cache never filled: run with --waiting over {CACHE_SIZE} to see RSS flatten")
    return {
        "rss_mb_waiting": round(last.rss_mb, 1),
        "rss_mb_before_waiting": round(start.rss_mb, 1),
        "rss_kb_per_cached_journey": round(per_cached),
        "rss_mb_growth_after_cache_full": None if after is None else round(after, 1),
        "waiting": last.started,
    }
