"""``drip messages``: emails whose SMTP transaction was cut off, and resending them on purpose.

drip sends every email at most once: when a send dies between handing the message to the relay
and hearing back (a killed worker, a dropped connection), the email may or may not have arrived,
so it is marked ``interrupted`` and left for a person. ``interrupted`` lists them; ``resend``
sends them again through the worker (``workflows.resend``), after saying plainly that the
recipient may get two copies, and at most once per email, however often it is asked.

Exit codes: 0 done (every resend sent), 1 something was refused, failed or is still queued
(each is listed), 2 nothing done (a wrong option).
"""

from __future__ import annotations

import asyncio
import getpass
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from contacts.db import create_db_engine, migrate, session_scope
from contacts.interrupted import InterruptedMessage, list_interrupted, resend_refusal
from contacts.models import Message, utcnow
from drip._runtime import run_with_temporal
from drip.settings import get_settings
from workflows.client import TemporalUnavailable, connect
from workflows.resend_activity import DUPLICATE_WARNING, ResendOutcome, request_resends

app = typer.Typer(
    help="Emails interrupted mid-send: list them, resend them on purpose.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _usage(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``30m``, ``2w`` back from now, or an ISO 8601 date or time (UTC unless
    it says otherwise)."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: write a duration back from now (30m, 12h, 7d, 2w) or an ISO 8601 date "
            "or time (2026-12-01, 2026-12-01T09:00+01:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _table(rows: list[InterruptedMessage]) -> Table:
    # ids whole, on one line (people copy them into `resend`); the rest folds, never truncates
    headers = ("contact", "campaign / step", "subject")
    table = Table(
        Column("id", no_wrap=True),
        *(Column(h, overflow="fold") for h in headers),
        Column("when (UTC)", no_wrap=True),
    )
    for r in rows:
        table.add_row(
            r.id,
            r.email,
            f"{r.campaign_id} / {r.step_id}",
            r.subject,
            f"{r.created_at:%Y-%m-%d %H:%M:%S}",
        )
    return table


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@app.command()
def interrupted(
    campaign: Annotated[str | None, typer.Option(help="only this campaign's emails")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="only emails from then on: 7d, 12h, 30m, or an ISO 8601 date/time"),
    ] = None,
) -> None:
    """Emails cut off mid-send: they may or may not have arrived, and wait for your decision."""
    start = parse_since(since, utcnow()) if since else None
    engine = create_db_engine(get_settings().database_url)
    migrate(engine)
    with session_scope(engine) as session:
        rows = list_interrupted(session, campaign_id=campaign, since=start)
    engine.dispose()
    if not rows:
        console.print("No interrupted emails: nothing awaits a decision.")
        return
    console.print(_table(rows))
    console.print(
        f"{_plural(len(rows), 'interrupted email')}: each may or may not have reached its "
        "recipient. `drip messages resend ID...` (or `--all-interrupted`) sends it again.",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def resend(
    message_ids: Annotated[
        list[str] | None, typer.Argument(help="ids from `drip messages interrupted`")
    ] = None,
    all_interrupted: Annotated[
        bool, typer.Option("--all-interrupted", help="every interrupted email (see --campaign)")
    ] = False,
    campaign: Annotated[
        str | None, typer.Option(help="with --all-interrupted: only this campaign's")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    wait: Annotated[
        float, typer.Option(help="seconds to wait for the worker to send them", min=0)
    ] = 60.0,
) -> None:
    """Send interrupted emails again, once: the same message (same Message-ID) through the
    worker. The recipient may receive it twice."""
    ids = list(dict.fromkeys(message_ids or []))
    if ids and all_interrupted:
        _usage("give message ids or --all-interrupted, not both")
    if not ids and not all_interrupted:
        _usage("give the ids of the emails to resend, or --all-interrupted")
    if campaign and not all_interrupted:
        _usage("--campaign goes with --all-interrupted")
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    with session_scope(engine) as session:
        if all_interrupted:
            rows = list_interrupted(session, campaign_id=campaign)
            refused: dict[str, str] = {}
        else:
            rows = list_interrupted(session, ids=ids)
            found = {r.id for r in rows}
            refused = {
                mid: resend_refusal(session.get(Message, mid), mid)
                for mid in ids
                if mid not in found
            }
    for mid, why in refused.items():
        err.print(f"[red]{escape(mid)}: not resent: {escape(why)}[/red]", highlight=False)
    if not rows:
        if not refused:
            console.print("No interrupted emails to resend.")
            return
        raise typer.Exit(1)
    console.print(_table(rows))
    err.print(f"[yellow]Warning: {DUPLICATE_WARNING}[/yellow]", highlight=False, soft_wrap=True)
    if not yes:
        typer.confirm(f"Resend {_plural(len(rows), 'email')}?", abort=True)
    by = f"cli ({_user()})"

    async def run() -> list[ResendOutcome]:
        client = await asyncio.wait_for(connect(settings), timeout=10)
        return await request_resends(
            client,
            engine,
            [r.id for r in rows],
            requested_by=by,
            task_queue=settings.temporal_task_queue,
            wait=wait,
        )

    try:
        outcomes = run_with_temporal(run())
    except (TemporalUnavailable, TimeoutError) as exc:
        err.print(
            f"[red]nothing resent: Temporal cannot be reached ({escape(str(exc))})[/red]",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    emails = {r.id: r.email for r in rows}
    for o in outcomes:
        line = f"{o.message_id} ({emails.get(o.message_id, '?')}): {o.state}"
        line += f": {o.detail}" if o.detail else ""
        style = "green" if o.state == "sent" else "red" if o.state != "queued" else "yellow"
        console.print(f"[{style}]{escape(line)}[/{style}]", highlight=False, soft_wrap=True)
    if refused or any(o.state != "sent" for o in outcomes):
        raise typer.Exit(1)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container with an unnamed uid)
        return "unknown user"
