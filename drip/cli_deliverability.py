"""``drip deliverability``: pacing by receiving domain, from the command line.

- ``status`` prints what the dashboard's Delivery page shows (``emails.pacing_report``): for
  each group of receiving domains its limit, its pace now, whether a deferral has it backing
  off and until when, its deferrals and the relay's last reply, its transactions in flight and,
  during a warm-up, the day's count against its cap. The state is the database's, shared by
  every worker, so this is the deployment's, whichever machine runs it.
- ``reset GROUP`` ends a group's backoff early, for an operator who fixed what made the relay
  defer its mail (a quota raised, a listing cleared): the group may be mailed at once, at its
  full pace. It asks first (``--yes`` does not), since mailing a provider that still refuses
  makes the next backoff start from scratch. Emails already told to wait (a journey asleep
  until its retry time, a broadcast's later round) keep their time; new sends go now.

Exit codes: 0 done (or nothing to reset), 1 an unknown group, a workspace that cannot be read,
or a reset declined.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from campaigns import CampaignError, Workspace, load_workspace
from contacts import pacing
from contacts.db import create_db_engine, migrate
from drip.settings import Settings, get_settings
from emails.pacing_report import GroupStatus, group_statuses, in_words, local_time

__all__ = ["app"]

app = typer.Typer(
    help="Pacing by receiving domain: each group's pace and backoff; end a backoff early.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _workspace(settings: Settings) -> Workspace:
    try:
        return load_workspace(settings.workspace)
    except CampaignError as exc:
        _fail(f"the workspace {settings.workspace} has problems:\n{exc}")


def _statuses(settings: Settings, workspace: Workspace, now: datetime) -> list[GroupStatus]:
    config = workspace.config
    engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        return group_statuses(engine, config.deliverability, ZoneInfo(config.timezone), now)
    finally:
        engine.dispose()


def _backoff(group: GroupStatus, now: datetime) -> str:
    until = group.backing_off_until
    if until is None:
        return "no"
    return f"until {local_time(until, now)} ({in_words(until.timestamp() - now.timestamp())})"


@app.command()
def status() -> None:
    """Each group of receiving domains: limit, pace now, backoff, deferrals, in flight."""
    settings = get_settings()
    workspace = _workspace(settings)
    now = datetime.now(UTC)
    groups = _statuses(settings, workspace, now)
    warmup = workspace.config.deliverability.warmup is not None
    table = Table(
        "group",
        "domains",
        "limit",
        "pace now",
        "backing off",
        "deferrals",
        "last reply",
        "in flight",
        *(["warm-up"] if warmup else []),
    )
    for g in groups:
        table.add_row(
            escape(g.group),
            escape(g.domains_text()),
            g.limit_text(),
            g.pace_text(),
            _backoff(g, now),
            str(g.deferrals),
            escape(g.last_reply or ""),
            g.flight_text(),
            *([escape(g.warmup.describe()) if g.warmup else ""] if warmup else []),
        )
    console.print(
        "pacing by receiving domain, shared by every worker "
        f"(times in {escape(workspace.config.timezone)})",
        highlight=False,
    )
    console.print(table)


@app.command()
def reset(
    group: Annotated[str, typer.Argument(help="the group of receiving domains, e.g. google")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """End a group's backoff now: mail it at once, at its full pace (after fixing the cause)."""
    settings = get_settings()
    workspace = _workspace(settings)
    now = datetime.now(UTC)
    groups = {g.group: g for g in _statuses(settings, workspace, now)}
    found = groups.get(group)
    if found is None:
        _fail(f"no group {group!r}; the groups are {', '.join(groups)}")
    if found.backing_off_until is None and found.factor >= 1.0:
        console.print(
            f"{escape(group)} is not backing off and is at its full pace: nothing to reset",
            highlight=False,
        )
        return
    waiting = f"backing off {_backoff(found, now)}" if found.backing_off_until else "not waiting"
    console.print(
        f"{escape(group)}: {waiting}, pace now {found.pace_text()}, "
        f"{found.deferrals} deferral{'s' if found.deferrals != 1 else ''}"
        + (f" (last: {escape(found.last_reply)})" if found.last_reply else ""),
        highlight=False,
        soft_wrap=True,
    )
    if not yes:
        typer.confirm(f"End {group}'s backoff and mail it at its full pace now?", abort=True)
    engine = create_db_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            ended = pacing.end_backoff(conn, group, now=time.time())
    finally:
        engine.dispose()
    if not ended:  # it ended by itself meanwhile
        console.print(f"{escape(group)} was no longer backing off: nothing changed")
        return
    console.print(
        f"{escape(group)}: backoff ended, mailed at its full pace ({found.limit_text()})",
        highlight=False,
    )
