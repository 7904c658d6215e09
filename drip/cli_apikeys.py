"""``drip apikeys``: make, list and revoke keys for the admin API (``/api``).

A key is printed once, when made; only its hash is stored (``contacts.apikeys``), so a lost key
is revoked and replaced, never recovered.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from contacts import apikeys
from contacts.db import create_db_engine, migrate, session_scope
from contacts.errors import NotFound
from drip.settings import get_settings

app = typer.Typer(help="API keys for the admin API (/api).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

_SCOPE_HELP = "repeatable; one of: " + ", ".join(apikeys.SCOPES)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="who or what uses the key, e.g. crm-sync")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help=_SCOPE_HELP)],
) -> None:
    """Make a key and print it (once: only its hash is kept)."""
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            row, key = apikeys.create_key(session, name, scope)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    err.print(
        f"API key {row.id} [bold]{escape(row.name)}[/bold] ({', '.join(row.scopes)}); "
        "store it now, it is not shown again:",
        highlight=False,
        soft_wrap=True,
    )
    print(key)  # alone on stdout, so `KEY=$(drip apikeys create ...)` works


@app.command("list")
def list_keys(
    all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
) -> None:
    """The keys: id, name, prefix, scopes, when made and last used."""
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            rows = apikeys.list_keys(session, include_revoked=all_)
    finally:
        engine.dispose()
    if not rows:
        console.print("no API keys; make one with `drip apikeys create NAME --scope ...`")
        return
    table = Table("id", "name", "prefix", "scopes", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            str(row.id),
            escape(row.name),
            row.prefix,
            " ".join(row.scopes),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@app.command()
def revoke(key: Annotated[str, typer.Argument(help="the key's id or prefix (as listed)")]) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        with session_scope(engine) as session:
            row = apikeys.revoke_key(session, key)
    except (NotFound, ValueError) as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    console.print(f"revoked API key {row.id} {escape(row.name)} ({row.prefix}…)", highlight=False)
