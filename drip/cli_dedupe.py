"""``drip contacts dedupe``: find contacts that are one person, and merge the certain ones.

Exact duplicates (same normalised email, or same ``phone`` in E.164) are merged into the oldest
contact of each group, one transaction per merge (``contacts.hygiene.merge_contacts``); the
merged contacts' running journeys are then cancelled through Temporal, so one running journey
per campaign remains. Name + company look-alikes are only listed as suggestions: merge those
by hand (``POST /api/contacts/{id}/merge``). ``--dry-run`` lists and changes nothing.

Exit codes: 0 done (or nothing to do), 1 merged but some journeys could not be cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from campaigns import CampaignError, load_workspace
from campaigns.sales import SalesPlan
from contacts.db import create_db_engine, migrate, session_scope
from contacts.hygiene import DuplicateGroup, MergeResult, find_duplicates, merge_contacts
from contacts.models import utcnow
from drip._runtime import run_with_temporal
from drip.cli_journeys import plural
from drip.settings import get_settings
from workflows.client import connect
from workflows.operations import control_many
from workflows.scoring import apply_scores

__all__ = ["dedupe"]

console = Console()
err = Console(stderr=True)


def _table(groups: list[DuplicateGroup]) -> Table:
    headers = ("kind", "keep", "duplicates", "why")
    table = Table(*(Column(h, overflow="fold") for h in headers))
    for g in groups:
        table.add_row(
            "exact" if g.kind == "exact" else "[yellow]suggestion[/yellow]",
            escape(f"{g.contact_ids[0]} {g.emails[0]}"),
            escape(
                ", ".join(f"{i} {e}" for i, e in zip(g.contact_ids[1:], g.emails[1:], strict=True))
            ),
            escape(", ".join(g.reasons)),
        )
    return table


def dedupe(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list duplicates and suggestions; change nothing")
    ] = False,
    gmail_rules: Annotated[
        bool,
        typer.Option(
            "--gmail-rules/--no-gmail-rules",
            help="Gmail ignores dots and +tags: a.nn+x@gmail.com is ann@gmail.com",
        ),
    ] = True,
    region: Annotated[
        str, typer.Option(help="country of phone numbers written without +code (ISO 3166)")
    ] = "GB",
) -> None:
    """List duplicate contacts; merge the exact ones into the oldest of each group."""
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    with session_scope(engine) as session:
        groups = find_duplicates(session, gmail_rules=gmail_rules, default_region=region)
    exact = [g for g in groups if g.kind == "exact"]
    suggestions = len(groups) - len(exact)
    if not groups:
        console.print("no duplicates found")
        engine.dispose()
        return
    console.print(_table(groups))
    console.print(
        f"{plural(len(exact), 'exact group')}, {plural(suggestions, 'suggestion')} "
        "(suggestions are never merged automatically)"
    )
    if dry_run or not exact:
        if dry_run:
            console.print("dry run: nothing changed")
        engine.dispose()
        return
    try:
        sales: SalesPlan | None = load_workspace(settings.workspace).sales
    except CampaignError:
        sales = None  # scores are then recomputed by the next event the router sees
    results: list[MergeResult] = []
    for g in exact:
        for merge_id in g.contact_ids[1:]:
            with session_scope(engine) as session:
                result = merge_contacts(session, g.keep_id, merge_id, actor="cli:dedupe")
                if sales is not None:  # the merge dropped both running scores: score again
                    result.score = apply_scores(session, g.keep_id, sales, now=utcnow()).after
                results.append(result)
    for r in results:
        console.print(
            f"merged {r.merge_id} {escape(r.merged_email)} into {r.keep_id}: "
            f"{plural(r.events_moved, 'event')}, {plural(r.messages_moved, 'message')}, "
            f"{plural(len(r.field_conflicts), 'field conflict')} (kept contact's values kept)",
            highlight=False,
        )
    to_end = [w for r in results for w in r.journeys_to_end]
    engine.dispose()
    if not to_end:
        return

    async def cancel() -> dict[str, bool | str]:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        return await control_many(client, to_end, "cancel", "merged into another contact")

    try:
        outcome = run_with_temporal(cancel())
    except Exception as exc:
        err.print(
            f"[red]Temporal unreachable ({escape(str(exc))}): these journeys of merged contacts "
            f"still run (they send nothing, the contacts are unsubscribed tombstones): "
            f"{escape(', '.join(to_end))}[/red]",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    failed = {w: o for w, o in outcome.items() if o is not True and o is not False}
    console.print(f"{plural(len(outcome) - len(failed), 'journey')} of merged contacts ended")
    if failed:
        for w, o in failed.items():
            err.print(f"[red]not cancelled: {escape(w)}: {escape(str(o))}[/red]")
        raise typer.Exit(1)
