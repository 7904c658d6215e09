"""``drip scores``: why a contact has its score, and the replay that proves the scores right.

- ``show`` prints a contact's score, the fit rules that hold and the latest reasons;
- ``rebuild`` replays every contact's events through the rules of ``sales.yaml`` and stores the
  result: after the rules changed (a new rule, another half-life), or to repair. ``--check``
  changes nothing and exits 1 if any stored score differs from the replay, for CI or a cron;
- ``refresh`` recomputes decayed scores now, what the daily ``drip-score-decay`` schedule does.

Exit codes: 0 done (or, with ``--check``, no difference), 1 differences found or the workspace
cannot be read.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from campaigns import CampaignError, load_workspace
from campaigns.sales import SalesPlan
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import ContactScore, utcnow
from drip.cli_journeys import find_contact, plural
from drip.settings import Settings, get_settings
from workflows.score_decay import decays, refresh_decay
from workflows.score_rebuild import RebuildReport, rebuild_scores
from workflows.scoring import fit_rules, score_reasons, scoring_enabled

__all__ = ["app"]

app = typer.Typer(
    help="Lead scores: why a contact has its score; replay, check and refresh them.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

NO_RULES = "sales.yaml has no scoring rules: contacts keep the score campaigns give them"


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _plan(settings: Settings) -> SalesPlan:
    try:
        return load_workspace(settings.workspace).sales
    except CampaignError as exc:
        _fail(f"the workspace {settings.workspace} has problems:\n{exc}")


def _points(value: float) -> str:
    """Awards are fractions once decay or a cap is involved; one decimal is enough to read."""
    shown = f"{value:+.1f}"
    return shown[:-2] if shown.endswith(".0") else shown


@app.command()
def show(
    contact: Annotated[str, typer.Argument(help="email address or contact id")],
    limit: Annotated[int, typer.Option(help="show at most this many reasons, newest first")] = 20,
) -> None:
    """A contact's score, the fit rules that hold, and the latest reasons."""
    settings = get_settings()
    plan = _plan(settings)
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    try:
        with session_scope(engine) as session:
            found = find_contact(session, contact)
            assert found.id is not None
            fit = fit_rules(session, found, plan, now=utcnow())
            scored = session.get(ContactScore, found.id)
            reasons = score_reasons(session, found.id, limit=limit)
    finally:
        engine.dispose()
    console.print(
        f"{escape(found.email)} (contact {found.id}): score [bold]{found.score}[/bold], "
        f"stage {found.stage}",
        highlight=False,
    )
    if not scoring_enabled(plan):
        console.print(NO_RULES, highlight=False)
    elif scored is None:
        console.print("not scored yet: no event since scoring was set up (drip scores rebuild)")
    if fit:
        console.print(
            "fit: " + ", ".join(f"{escape(rule)} {_points(points)}" for rule, points in fit),
            highlight=False,
        )
    elif plan.scoring.fit:
        console.print("fit: no fit rule holds")
    if not reasons:
        console.print("no score changes recorded")
        return
    table = Table(*(Column(h, overflow="fold") for h in ("when", "rule", "points", "score", "why")))
    for change in reasons:
        table.add_row(
            f"{change.at:%Y-%m-%d %H:%M}",
            escape(change.rule),
            _points(change.points),
            str(change.score),
            escape(change.reason),
        )
    console.print(table)


def _differences(report: RebuildReport) -> Table:
    headers = ("contact", "stored", "replayed", "what differs")
    table = Table(*(Column(h, overflow="fold") for h in headers))
    for d in report.differences:
        table.add_row(
            escape(f"{d.contact_id} {d.email}"), str(d.stored), str(d.rebuilt), escape(d.detail)
        )
    return table


@app.command()
def rebuild(
    contact: Annotated[
        list[str] | None,
        typer.Option("--contact", help="only this contact (id or email), repeatable"),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="compare with the replay, change nothing; exit 1 if any differ"
        ),
    ] = False,
) -> None:
    """Replay contacts' events through sales.yaml's rules and store the scores and reasons."""
    settings = get_settings()
    plan = _plan(settings)
    if not scoring_enabled(plan):
        console.print(NO_RULES, highlight=False)
        return
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    try:
        ids: list[int] | None = None
        if contact:
            with session_scope(engine) as session:
                ids = [find_contact(session, c).id or 0 for c in contact]
        report = rebuild_scores(engine, plan, now=utcnow(), contact_ids=ids, write=not check)
    finally:
        engine.dispose()
    console.print(
        f"{plural(report.contacts, 'contact')}, {plural(report.events, 'event')} replayed; "
        f"{plural(report.changed, 'contact')} differed from the stored score",
        highlight=False,
    )
    if report.differences:
        console.print(_differences(report))
        more = report.changed - len(report.differences)
        if more:
            console.print(f"and {plural(more, 'more contact')}", highlight=False)
    if check:
        if report.changed:
            err.print(
                f"[red]the stored scores of {plural(report.changed, 'contact')} differ from "
                "the replay (drip scores rebuild stores the replay)[/red]",
                highlight=False,
            )
            raise typer.Exit(1)
        console.print("check: every stored score equals the replay")
    else:
        console.print("stored: scores, states and reasons now come from the replay")


@app.command()
def refresh() -> None:
    """Recompute decayed scores now (the daily drip-score-decay schedule does this)."""
    settings = get_settings()
    plan = _plan(settings)
    if not decays(plan):
        console.print(
            NO_RULES
            if not scoring_enabled(plan)
            else "no half_life in sales.yaml: scores do not decay, so there is nothing to refresh",
            highlight=False,
        )
        return
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    try:
        changed = refresh_decay(engine, plan, now=utcnow())
    finally:
        engine.dispose()
    console.print(f"{plural(changed, 'score')} changed", highlight=False)
