"""``drip suppressions``: the addresses and domains that get no email, by hand or as CSV.

The list is checked at every send (``contacts.suppressions``), so an entry added here stops the
next email of every journey and the batches of a broadcast not yet started; taking it off lets
the next ones go. Exit codes: 0 done, 1 something was refused (each is listed; in an import,
the good rows were still imported), 2 a wrong option.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import Engine

from contacts import suppression_csv, suppressions
from contacts.db import migrated_engine, session_scope
from contacts.errors import NotFound
from contacts.suppressions import InvalidSuppression, SuppressionKind
from drip.settings import get_settings

app = typer.Typer(
    help="Suppression lists: addresses and whole domains that get no email.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _engine() -> AbstractContextManager[Engine]:
    return migrated_engine(get_settings().database_url)


def _say(console_: Console, message: str) -> None:
    console_.print(escape(message), highlight=False, soft_wrap=True)


@app.command()
def add(
    entries: Annotated[
        list[str], typer.Argument(help="addresses or domains (competitor.com: every address there)")
    ],
    reason: Annotated[str, typer.Option(help="why: shown on every email it stops")] = "",
) -> None:
    """Suppress addresses or whole domains (a domain covers its subdomains). Listing one again
    replaces its reason."""
    refused = 0
    with _engine() as engine:
        for entry in entries:
            try:
                with session_scope(engine) as session:
                    row, created = suppressions.add(session, entry, reason, "cli")
                    value, kind, why = row.value, row.kind, row.reason
            except InvalidSuppression as exc:
                _say(err, f"refused: {exc}")
                refused += 1
                continue
            _say(console, f"{'suppressed' if created else 'updated'} {kind} {value}: {why}")
    if refused:
        raise typer.Exit(1)


@app.command()
def remove(entries: Annotated[list[str], typer.Argument(help="addresses or domains")]) -> None:
    """Take entries off the list: their next emails go out again."""
    refused = 0
    with _engine() as engine:
        for entry in entries:
            try:
                with session_scope(engine) as session:
                    value = suppressions.remove(session, entry).value
            except (InvalidSuppression, NotFound) as exc:
                _say(err, f"refused: {exc}")
                refused += 1
                continue
            _say(console, f"removed {value}")
    if refused:
        raise typer.Exit(1)


@app.command("list")
def list_(
    kind: Annotated[
        SuppressionKind | None, typer.Option(help="only addresses or only domains")
    ] = None,
    search: Annotated[str | None, typer.Option(help="part of the address or domain")] = None,
) -> None:
    """The list, oldest first: entry, kind, reason, source and when it was added (UTC)."""
    with _engine() as engine, session_scope(engine) as session:
        rows = [
            (r.value, r.kind, r.reason, r.source, f"{r.created_at:%Y-%m-%d %H:%M}")
            for r in suppressions.list_entries(session, kind=kind, search=search)
        ]
    if not rows:
        _say(console, "the suppression list is empty" if not (kind or search) else "none match")
        return
    table = Table(
        Column("entry", overflow="fold"),
        "kind",
        Column("reason", overflow="fold"),
        "source",
        Column("added (UTC)", no_wrap=True),
    )
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV: email_or_domain,reason")
    ],
) -> None:
    """Add every good row of a CSV file (a header naming email_or_domain and reason, or a bare
    list of addresses); bad rows are listed by line and the others imported all the same."""
    with _engine() as engine:
        try:
            with session_scope(engine) as session:
                report = suppression_csv.import_csv(
                    session, file.read_bytes(), source=f"csv import: {file.name}"
                )
        except suppression_csv.UnreadableCsv as exc:
            _say(err, f"{file}: nothing imported: {exc}")
            raise typer.Exit(1) from None
    _say(console, f"added {report.added}, updated {report.updated}, bad rows {len(report.invalid)}")
    for problem in report.invalid:
        _say(err, f"{file}:{problem.line}: {problem.problem}")
    if report.invalid:
        raise typer.Exit(1)


@app.command()
def export(
    file: Annotated[
        Path | None, typer.Argument(dir_okay=False, help="where to write it [default: stdout]")
    ] = None,
) -> None:
    """The whole list as CSV (email_or_domain,kind,reason,source,created_at), which `import`
    reads back; cells a spreadsheet would run as formulas start with '."""
    with _engine() as engine, session_scope(engine) as session:
        if file is None:
            for piece in suppression_csv.export_csv(session):
                sys.stdout.write(piece)
            return
        with file.open("w", encoding="utf-8", newline="") as out:
            for piece in suppression_csv.export_csv(session):
                out.write(piece)
        count = len(suppressions.list_entries(session))
    _say(err, f"exported {count} entries to {file}")
