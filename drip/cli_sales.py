"""``drip sales``: the sales directory from the command line: teams, reps, who is away, and
assigning a lead now.

Reps and teams come from ``sales.yaml`` (``drip sales sync`` copies them into the database, as
the worker does on start) or from the API. Away dates and deactivation are the database's, so
``drip sales away`` holds across syncs. Assignment is ``workflows.assignment``: the territory's
team, then the eligible rep whose weighted turn it is; ``drip sales assign`` does exactly what
a lead qualifying does, minus the alert.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Annotated, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from campaigns import CampaignError
from campaigns.sales import SalesPlan, load_sales_plan
from contacts.db import migrated_engine, session_scope
from contacts.models import SalesRep, SalesTeam, utcnow
from drip.cli_journeys import find_contact, plural
from drip.settings import get_settings
from workflows.assignment import RepView, assign_owner, find_rep, list_reps, sync_sales_directory

__all__ = ["app"]

app = typer.Typer(
    help="Sales teams and reps: who is away, syncing sales.yaml, assigning leads.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _engine() -> AbstractContextManager[Engine]:
    return migrated_engine(get_settings().database_url)


def _plan() -> SalesPlan:
    path = get_settings().workspace / "sales.yaml"
    try:
        return load_sales_plan(path)
    except CampaignError as exc:
        _fail(f"{path} has problems:\n{exc}")


def _rep(session: Session, email: str) -> SalesRep:
    rep = find_rep(session, email)
    if rep is None:
        _fail(f"no sales rep {email} (see `drip sales reps`)")
    return rep


def _away(rep: SalesRep, now: datetime) -> str:
    if not rep.active:
        return "[yellow]inactive[/yellow]"
    if rep.away_until is not None and rep.away_until > now:
        return f"until {rep.away_until:%Y-%m-%d %H:%M} UTC"
    return ""


def _reps_table(views: list[RepView]) -> Table:
    headers = ("email", "team", "weight", "capacity", "open leads", "assigned", "away")
    table = Table(*(Column(h, overflow="fold") for h in headers))
    now = utcnow()
    for v in views:
        table.add_row(
            escape(v.rep.email),
            escape(v.rep.team_id),
            str(v.rep.weight),
            "-" if v.rep.capacity is None else str(v.rep.capacity),
            str(v.open_leads),
            str(v.rep.assigned),
            _away(v.rep, now),
        )
    return table


@app.command()
def teams() -> None:
    """The teams: id, name, lead, reps (active of all) and where they come from."""
    with _engine() as engine, session_scope(engine) as s:
        rows = s.exec(select(SalesTeam).order_by(col(SalesTeam.id))).all()
        views = list_reps(s)
    if not rows:
        console.print("no sales teams; add them to sales.yaml and run `drip sales sync`")
        return
    table = Table(*(Column(h, overflow="fold") for h in ("id", "name", "lead", "reps", "source")))
    for t in rows:
        mine = [v.rep for v in views if v.rep.team_id == t.id]
        table.add_row(
            escape(t.id),
            escape(t.name),
            escape(t.lead or ""),
            f"{sum(r.active for r in mine)}/{len(mine)}",
            t.source,
        )
    console.print(table)


@app.command()
def reps(
    team: Annotated[str | None, typer.Option(help="only this team")] = None,
) -> None:
    """The reps: team, weight, capacity, open leads (mql, sql), leads assigned, away."""
    with _engine() as engine, session_scope(engine) as s:
        views = list_reps(s, team_id=team)
    if not views:
        console.print("no sales reps; add them to sales.yaml and run `drip sales sync`")
        return
    console.print(_reps_table(views))


def _sales_zone() -> ZoneInfo:
    """Dates without a zone are the sales team's (sales.yaml working hours), else UTC."""
    try:
        plan = load_sales_plan(get_settings().workspace / "sales.yaml")
    except CampaignError:
        return ZoneInfo("UTC")
    return ZoneInfo(plan.follow_up.working_hours.timezone)


@app.command()
def away(
    email: Annotated[str, typer.Argument(help="the rep's email")],
    until: Annotated[
        datetime,
        typer.Option(
            formats=DATE_FORMATS,
            help="back on this day (or at this time), in the sales team's time zone",
        ),
    ],
) -> None:
    """Take a rep out of the round-robin until a date; their leads stay theirs."""
    zone = _sales_zone()
    back_at = until.replace(tzinfo=zone) if until.tzinfo is None else until
    if back_at <= utcnow():
        _fail(f"{until:%Y-%m-%d %H:%M} has passed; to bring a rep back: drip sales back {email}")
    with _engine() as engine, session_scope(engine) as s:
        rep = _rep(s, email)
        rep.away_until = back_at
        s.add(rep)
    console.print(
        f"{escape(rep.email)} is away until {back_at:%Y-%m-%d %H:%M} {zone.key}: "
        "no new leads until then",
        highlight=False,
    )


@app.command()
def back(email: Annotated[str, typer.Argument(help="the rep's email")]) -> None:
    """Put a rep back in the round-robin now (also an inactive one)."""
    with _engine() as engine, session_scope(engine) as s:
        rep = _rep(s, email)
        rep.away_until = None
        rep.active = True
        s.add(rep)
    console.print(f"{escape(rep.email)} is back: they get leads again", highlight=False)


@app.command()
def sync() -> None:
    """Copy sales.yaml's teams and reps into the database (the worker does it on start too)."""
    plan = _plan()
    with _engine() as engine:
        with session_scope(engine) as s:
            sync_sales_directory(s, plan)
        with session_scope(engine) as s:
            views = list_reps(s)
    in_file = sum(len(t.reps) for t in plan.teams)
    console.print(
        f"synced {plural(len(plan.teams), 'team')} and {plural(in_file, 'rep')} from sales.yaml",
        highlight=False,
    )
    if views:
        console.print(_reps_table(views))


@app.command()
def assign(
    contact: Annotated[str, typer.Argument(help="email address or contact id")],
    reassign: Annotated[
        bool, typer.Option("--reassign", help="clear the current owner first")
    ] = False,
) -> None:
    """Assign the contact an owner now (territory, then the rep whose turn it is) and say why.
    Nobody is alerted; a contact with an owner keeps it unless --reassign."""
    plan = _plan()
    with _engine() as engine, session_scope(engine) as s:
        found = find_contact(s, contact)
        if reassign:
            found.owner = None
        result = assign_owner(s, found, plan, now=utcnow())
        s.add(found)
    who = result.owner or "nobody"
    team = f" (team {result.team_id})" if result.team_id else ""
    verb = "assigned to" if result.new else "kept by"
    console.print(
        f"contact {found.id} {escape(found.email)}: {verb} {escape(who)}{escape(team)}",
        highlight=False,
    )
    console.print(escape(result.reason), highlight=False, soft_wrap=True)
