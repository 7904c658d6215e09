"""``drip contacts``: change a contact from the command line, as an admin would.

Every change is recorded as an event and routed at once, so adding a tag starts the campaigns
triggered by it and ends journeys whose exit rule now holds, exactly as a journey's own
``update_contact`` step would. With Temporal unreachable the change is kept and the worker's
sweep routes it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from contacts import cleaning, repository
from contacts.db import create_db_engine, migrate, session_scope
from drip._runtime import run_with_temporal
from drip.cli_dedupe import dedupe
from drip.cli_journeys import find_contact, plural, workspace_router
from drip.settings import get_settings
from workflows.client import connect

app = typer.Typer(
    help="Change contacts (tags, fields, score); find and merge duplicates.", no_args_is_help=True
)
console = Console()
app.command()(dedupe)


def _field(text: str) -> tuple[str, object]:
    """``name=value``; the value is JSON when it parses (42, true, "x"), else plain text."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"{text!r}: write --set name=value")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    # the rules every door applies (contacts.cleaning): 1e999 is not a number drip stores
    found = cleaning.json_problems({name: value})
    if found:
        raise typer.BadParameter(f"{text!r}: {found[0][0]} {found[0][1]}")
    return name, value


@app.command()
def update(
    contact: Annotated[str, typer.Argument(help="email address or contact id")],
    add_tag: Annotated[list[str] | None, typer.Option("--add-tag", help="repeatable")] = None,
    remove_tag: Annotated[list[str] | None, typer.Option("--remove-tag", help="repeatable")] = None,
    set_field: Annotated[
        list[str] | None, typer.Option("--set", help="name=value, repeatable")
    ] = None,
) -> None:
    """Add or remove tags and set fields; campaigns triggered by the change start at once."""
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    fields = dict(_field(f) for f in set_field or [])
    for tag in add_tag or []:
        if reason := cleaning.text_problem(tag):
            raise typer.BadParameter(f"{tag!r} {reason}", param_hint="--add-tag")
    recorded: list[int] = []
    with session_scope(engine) as session:
        found = find_contact(session, contact)
        assert found.id is not None
        repository.update_contact(
            session,
            found.id,
            add_tags=add_tag or [],
            remove_tags=remove_tag or [],
            set_fields=fields,
            source="cli",
            recorded=recorded,
        )
    console.print(f"{escape(found.email)}: {plural(len(recorded), 'change')} recorded")

    async def route() -> str:
        try:
            client = await asyncio.wait_for(connect(settings), timeout=5)
        except Exception as exc:
            return f"Temporal unreachable ({exc}); the worker's sweep will route the changes"
        router = workspace_router(client, engine, settings)
        for event_id in recorded:
            await router.route(event_id)
        return "routed: campaigns triggered by the change have started"

    if recorded:
        console.print(run_with_temporal(route()), highlight=False)
    engine.dispose()
