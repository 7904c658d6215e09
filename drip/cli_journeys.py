"""``drip journeys``: where each contact is in each campaign, asked of Temporal itself."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table
from sqlmodel import col, select

from contacts import repository
from contacts.db import create_db_engine, session_scope
from contacts.errors import ContactError
from contacts.models import Contact, Enrolment, Event, Message
from drip.settings import get_settings
from workflows.client import connect, journey_state
from workflows.types import JourneyState

app = typer.Typer(help="Inspect contacts' journeys.", no_args_is_help=True)
console = Console()


@app.command("list")
def list_journeys(
    limit: Annotated[int, typer.Option(help="show at most this many, newest first")] = 50,
) -> None:
    """Enrolments with their contact, campaign version and state."""
    engine = create_db_engine(get_settings().database_url)
    # fold, not truncate: ids and addresses are what people copy from this table
    headers = ("contact", "campaign", "version", "state", "started", "workflow id")
    table = Table(*(Column(h, overflow="fold") for h in headers))
    with session_scope(engine) as s:
        rows = s.exec(
            select(Enrolment, Contact).join(Contact).order_by(col(Enrolment.id).desc()).limit(limit)
        ).all()
        for enrolment, contact in rows:
            table.add_row(
                contact.email,
                enrolment.campaign_id,
                enrolment.campaign_version,
                enrolment.state,
                f"{enrolment.started_at:%Y-%m-%d %H:%M:%S}",
                enrolment.workflow_id,
            )
    console.print(table)


@app.command()
def show(contact: Annotated[str, typer.Argument(help="email address or contact id")]) -> None:
    """Each journey of one contact: the steps taken, the current step, what it waits for."""
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    with session_scope(engine) as s:
        try:
            found = (
                repository.get_contact(s, int(contact))
                if contact.isdigit()
                else repository.get_contact_by_email(s, contact)
            )
        except ContactError as exc:
            raise typer.BadParameter(str(exc)) from None
        if found is None or found.id is None:
            console.print(f"[red]no contact {contact}[/red]")
            raise typer.Exit(1)
        enrolments = repository.list_enrolments(s, contact_id=found.id)
        messages = s.exec(
            select(Message).where(Message.contact_id == found.id).order_by(col(Message.created_at))
        ).all()
        events = s.exec(
            select(Event).where(Event.contact_id == found.id).order_by(col(Event.id))
        ).all()
    console.print(
        f"[bold]{found.email}[/bold]  status {found.status}  tags {', '.join(found.tags) or '-'}"
    )
    states = asyncio.run(_states([e.workflow_id for e in enrolments if e.state == "running"]))
    for enrolment in enrolments:
        console.print(
            f"\n[bold]{enrolment.campaign_id}[/bold] ({enrolment.campaign_version}) "
            f"{enrolment.state}  [dim]{enrolment.workflow_id}[/dim]"
        )
        state = states.get(enrolment.workflow_id)
        if isinstance(state, str):
            console.print(f"  [yellow]live state unavailable: {state}[/yellow]")
        elif state is not None:
            console.print(f"  path: {' -> '.join(state.visited)}")
            console.print(
                f"  now at: {state.current_step}"
                + (f", waiting for {state.waiting_for}" if state.waiting_for else "")
            )
        opened = {e.message_id for e in events if e.type == "open"}
        clicked = {e.message_id for e in events if e.type == "click"}
        for m in messages:
            if m.workflow_id == enrolment.workflow_id:
                marks = [
                    x
                    for x, hit in (("opened", m.id in opened), ("clicked", m.id in clicked))
                    if hit
                ]
                console.print(
                    f"  email {m.step_id}: {m.state}"
                    + (f" ({', '.join(marks)})" if marks else "")
                    + (f" [red]{m.error}[/red]" if m.error else "")
                )


async def _states(workflow_ids: list[str]) -> dict[str, JourneyState | str]:
    if not workflow_ids:
        return {}
    settings = get_settings()
    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
    except Exception as exc:  # Temporal down: show what the database knows
        return dict.fromkeys(workflow_ids, f"Temporal unreachable ({exc})")
    out: dict[str, JourneyState | str] = {}
    for wid in workflow_ids:
        try:
            out[wid] = await journey_state(client, wid)
        except Exception as exc:
            out[wid] = str(exc)
    return out
