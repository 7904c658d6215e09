"""What ``drip broadcasts`` shows: the progress bar that follows a send, and the lines of
``status``. Kept apart from the commands (``drip.cli_broadcasts``), which decide what to do.

The bar reads the send's outbox rows (``workflows.broadcasts.progress``) every
``POLL_SECONDS``, so it shows what every worker did, and stopping it (Ctrl-C, SIGTERM) stops
only the watching: the send is a Temporal workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from rich import progress as bars
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from sqlalchemy.engine import Engine

from contacts.broadcast_models import FINISHED, BroadcastSend, SendState
from contacts.broadcast_reports import ABResult, SendReport
from drip._runtime import stop_on_signals
from workflows.broadcasts import Progress, progress

__all__ = [
    "POLL_SECONDS",
    "describe",
    "duration",
    "follow",
    "status_lines",
    "summary",
    "when",
]

T = TypeVar("T")

#: how often ``follow`` reads the progress from the database
POLL_SECONDS = 0.5


def when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def duration(seconds: float) -> str:
    """4h, 1h 30m, 45m, 20s: an A/B test's wait as people write it."""
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return " ".join(parts) or "0s"


class RateColumn(bars.ProgressColumn):
    def render(self, task: bars.Task) -> Text:
        speed = task.speed
        return Text("- emails/s" if speed is None else f"{speed:,.0f} emails/s")


def describe(p: Progress) -> str:
    suppressed = sum(p.suppressed_by_reason.values())
    failed = p.by_state.get("failed", 0)
    return f"{p.state}: {p.sent:,} sent, {suppressed:,} suppressed, {failed:,} failed"


def follow(engine: Engine, started: BroadcastSend, console: Console) -> Progress | None:
    """Show the send's progress until it ends or its A/B sample is out (its figures then), or
    until Ctrl-C/SIGTERM (None)."""

    async def poll(bar: bars.Progress, task: bars.TaskID) -> Progress:
        while True:
            p = await asyncio.to_thread(progress, engine, started.id)
            bar.update(task, total=p.audience or None, completed=p.done, description=describe(p))
            if p.state in FINISHED or p.state == SendState.testing:
                return p
            await asyncio.sleep(POLL_SECONDS)

    async def run() -> Progress | None:
        with bars.Progress(
            bars.TextColumn("{task.description}"),
            bars.BarColumn(),
            bars.MofNCompleteColumn(),
            RateColumn(),
            bars.TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("starting", total=started.audience or None)
            work: asyncio.Task[Progress] = asyncio.create_task(poll(bar, task))
            with stop_on_signals(work.cancel, work.cancel):
                console.print(
                    "Ctrl-C leaves it running (the send goes on in Temporal)", style="dim"
                )
                try:
                    return await work
                except asyncio.CancelledError:
                    return None

    return _run(run())


def _run(work: Coroutine[Any, Any, T | None]) -> T | None:
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:  # before the handler was installed (or outside the main thread)
        return None


def summary(p: Progress, console: Console) -> None:
    colour = {SendState.completed: "green", SendState.testing: "yellow"}.get(
        SendState(p.state), "red"
    )
    console.print(f"[{colour}]{escape(describe(p))}[/{colour}]", highlight=False)
    for reason, count in sorted(p.suppressed_by_reason.items(), key=lambda kv: -kv[1]):
        console.print(f"  suppressed {count:,}: {escape(reason)}", highlight=False)


def _percent(part: int, whole: int) -> str:
    return f" ({part / whole:.1%})" if whole else ""


def status_lines(r: SendReport, ab: ABResult | None) -> list[str]:
    """The lines of ``status``, as rich markup (every value escaped)."""
    lines = [
        f"[bold]{escape(r.name)}[/bold] ({escape(r.broadcast_id)}) send #{r.number}: "
        f"[bold]{r.state}[/bold]  [dim]{escape(r.id)}[/dim]"
    ]
    audience = "-" if r.audience is None else f"{r.audience:,}"
    lines.append(f"  audience {audience}, done {r.done:,}, sent {r.sent:,}")
    counts = ", ".join(f"{state} {n:,}" for state, n in r.by_state.items() if n)
    lines.append(f"  emails by state: {counts or 'none yet'}")
    for reason, count in sorted(r.suppressed_by_reason.items(), key=lambda kv: -kv[1]):
        lines.append(f"  suppressed {count:,}: {escape(reason)}")
    if r.rate is not None:
        eta = "" if r.eta_seconds is None else f", about {r.eta_seconds:,.0f} s to go"
        lines.append(f"  rate {r.rate:,.1f} emails/s over the last minute{eta}")
    elif (average := r.average_rate) is not None:
        lines.append(f"  rate {average:,.1f} emails/s on average")
    lines.append(f"  started {when(r.started_at)}, finished {when(r.finished_at)}")
    lines.append(
        f"  opened {r.opened:,}{_percent(r.opened, r.sent)}, clicked {r.clicked:,}"
        f"{_percent(r.clicked, r.sent)} (machine hits apart: {r.bot_opens:,} opens, "
        f"{r.bot_clicks:,} clicks); unsubscribes {r.unsubscribes:,}, bounces {r.bounces:,}, "
        f"complaints {r.complaints:,}"
    )
    if ab is not None:
        picked = f"winner {escape(ab.winner)}" if ab.winner else "no winner yet"
        if not ab.winner and not r.live:
            picked = "no winner"
        kind = "open" if ab.metric == "opens" else "click"
        lines.append(f"  A/B test on {ab.metric}, sample {ab.sample:,}: {picked}")
        for v in ab.variants:
            rate = "-" if v.rate is None else f"{v.rate:.1%}"
            versus = ""
            if v.uplift is not None and v.confidence is not None:
                versus = f"; the leader {v.uplift:+.1%}, confidence {v.confidence:.0%}"
            lines.append(
                f"    {escape(v.id)}: sent {v.sent:,}, opened {v.opened:,}, clicked "
                f"{v.clicked:,}, {kind} rate {rate}{versus}"
            )
    if r.note:
        lines.append(f"  note: {escape(r.note)}")
    return lines
