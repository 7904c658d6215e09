"""``drip journeys``: where each contact is in each campaign (asked of Temporal itself), enrolling
many contacts at once, and pausing, resuming or cancelling one contact's journeys.

Exit codes: 0 done, 1 done with failures (listed), 2 nothing done (a wrong campaign, file or
option: the message says which).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from campaigns import CampaignError, load_workspace
from contacts import repository
from contacts.db import create_db_engine, migrate, session_scope
from contacts.errors import ContactError, NotFound
from contacts.models import Contact, Enrolment, EnrolmentState, Event, Message
from drip._runtime import run_with_temporal
from drip.settings import Settings, get_settings
from workflows.bulk import (
    BulkError,
    BulkProgress,
    BulkResult,
    Problem,
    Target,
    enrol_many,
    live_campaign,
    new_import_id,
    read_csv,
    select_contacts,
)
from workflows.client import TemporalUnavailable, connect, journey_state
from workflows.operations import control_many
from workflows.router import EventRouter
from workflows.types import JourneyState

T = TypeVar("T")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


app = typer.Typer(
    help="Inspect, enrol, pause, resume and cancel contacts' journeys.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)


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
        found = find_contact(s, contact)
        assert found.id is not None
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
    states = run_with_temporal(_states([e.workflow_id for e in enrolments if e.state == "running"]))
    for enrolment in enrolments:
        console.print(
            f"\n[bold]{enrolment.campaign_id}[/bold] ({enrolment.campaign_version}) "
            f"{enrolment.state}"
            + (f" ({escape(enrolment.end_reason)})" if enrolment.end_reason else "")
            + f"  [dim]{enrolment.workflow_id}[/dim]"
        )
        state = states.get(enrolment.workflow_id)
        if isinstance(state, str):
            console.print(f"  [yellow]live state unavailable: {state}[/yellow]")
        elif state is not None:
            console.print(f"  path: {' -> '.join(state.visited)}")
            if state.paused:
                console.print(
                    f"  now at: {state.current_step}, [yellow]paused by an operator[/yellow] "
                    f"(its timers keep running; `drip journeys resume {found.email}` releases it)"
                )
            else:
                console.print(
                    f"  now at: {state.current_step}"
                    + (f", waiting for {state.waiting_for}" if state.waiting_for else "")
                )
            if state.outcome and not state.finished:
                console.print(f"  ending: {state.outcome}")
        opened = {e.message_id for e in events if e.type == "open"}
        clicked = {e.message_id for e in events if e.type == "click"}
        for m in messages:
            if m.workflow_id == enrolment.workflow_id:
                marks = [
                    x
                    for x, hit in (("opened", m.id in opened), ("clicked", m.id in clicked))
                    if hit
                ]
                # the subject as the contact received it (contact data: never rich markup)
                console.print(
                    f"  email {m.step_id}: {m.state}"
                    + (f" ({', '.join(marks)})" if marks else "")
                    + (f' "{escape(m.subject)}"' if m.subject else "")
                    + (f" [red]{escape(m.error)}[/red]" if m.error else ""),
                    highlight=False,
                )


def find_contact(session: Session, text: str) -> Contact:
    """The contact an operator named by address or id; exit 1 saying so if there is none."""
    try:
        found = (
            repository.get_contact(session, int(text))
            if text.isdigit()
            else repository.get_contact_by_email(session, text)
        )
    except NotFound:
        found = None
    except ContactError as exc:
        raise typer.BadParameter(str(exc)) from None
    if found is None or found.id is None:
        err.print(f"[red]no contact {escape(text)}[/red]", highlight=False)
        raise typer.Exit(1)
    return found


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


def _usage(message: str) -> NoReturn:
    """Nothing was done: a wrong campaign, file or option (exit 2, like a usage error)."""
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def workspace_router(client: Client, engine: Engine, settings: Settings) -> EventRouter:
    """A router configured as the worker's: the workspace's time zone for journeys and its
    sales.yaml for scores, stages and alerts; UTC and no sales rules if it is unreadable."""
    try:
        workspace = load_workspace(settings.workspace)
    except CampaignError as exc:
        err.print(
            f"[yellow]the workspace {settings.workspace} has problems; journeys get UTC as "
            f"their default time zone and scores are not updated now "
            f"({escape(str(exc).splitlines()[0])})[/yellow]",
            highlight=False,
            soft_wrap=True,
        )
        return EventRouter(client=client, engine=engine, settings=settings)
    return EventRouter(
        client=client,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )


@app.command()
def enrol(
    campaign: Annotated[str, typer.Argument(help="campaign id (deployed and active)")],
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="a CSV file with an 'email' column; other columns become contact fields"
        ),
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(help="every subscribed contact for which this condition holds"),
    ] = None,
    email: Annotated[
        list[str] | None, typer.Option("--email", help="an address (repeat for more)")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=500, help="contacts enrolled at the same time")
    ] = 20,
    import_id: Annotated[
        str | None,
        typer.Option(
            help="name this import; running it again under the same id enrols no one twice"
        ),
    ] = None,
) -> None:
    """Enrol many contacts into a campaign: from a CSV file, a condition, or addresses.

    Each enrolment goes through the campaign's rules (audience, re-entry) as a form post would.
    New addresses become contacts. Exit 1 if some could not be enrolled (each listed), 2 if
    nothing was done (unknown or inactive campaign, unreadable file, bad condition)."""
    given = [name for name, v in (("--csv", csv_file), ("--where", where), ("--email", email)) if v]
    if len(given) != 1:
        _usage(f"give exactly one of --csv, --where or --email (got {', '.join(given) or 'none'})")
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    try:
        live_campaign(engine, campaign)
        problems: list[Problem] = []
        if csv_file is not None:
            targets, problems = read_csv(csv_file)
        elif where is not None:
            targets = [Target(contact_id=i) for i in select_contacts(engine, where)]
        else:
            targets = [Target(email=e) for e in email or []]
    except BulkError as exc:
        _usage(str(exc))
    import_id = import_id or new_import_id()
    console.print(
        f"enrolling {plural(len(targets), 'contact')} into [bold]{escape(campaign)}[/bold], import "
        f"[bold]{escape(import_id)}[/bold] (run again with --import-id {escape(import_id)} to "
        "finish an interrupted import without enrolling anyone twice)",
        highlight=False,
    )
    try:
        result = run_with_temporal(
            _enrol(
                settings,
                engine,
                campaign,
                targets,
                import_id,
                concurrency,
            )
        )
    except BulkError as exc:
        _usage(str(exc))
    except TemporalUnavailable as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    result.failed[:0] = problems
    _summary(result)
    if result.failed:
        raise typer.Exit(1)


async def _enrol(
    settings: Settings,
    engine: Engine,
    campaign: str,
    targets: list[Target],
    import_id: str,
    concurrency: int,
) -> BulkResult:
    client = await connect(settings)
    router = workspace_router(client, engine, settings)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("enrolling", total=len(targets))

        def update(p: BulkProgress) -> None:
            progress.update(
                task,
                completed=p.done,
                description=f"{p.enrolled} enrolled, {p.skipped} skipped, {p.failed} failed",
            )

        return await enrol_many(
            router,
            campaign,
            targets,
            import_id=import_id,
            concurrency=concurrency,
            on_progress=update,
            source="drip journeys enrol",
        )


#: failures listed one by one, up to this many; skips are counted by reason
_LISTED = 50


def _summary(result: BulkResult) -> None:
    colour = "red" if result.failed else "green"
    console.print(
        f"[{colour}]enrolled {result.enrolled}, skipped {len(result.skipped)}, "
        f"failed {len(result.failed)}[/{colour}] (import {escape(result.import_id)})",
        highlight=False,
    )
    for reason, count in Counter(p.reason for p in result.skipped).most_common():
        console.print(f"  skipped {count}: {escape(reason)}", highlight=False)
    for problem in result.failed[:_LISTED]:
        err.print(f"  [red]failed[/red] {escape(str(problem))}", highlight=False, soft_wrap=True)
    if len(result.failed) > _LISTED:
        err.print(f"  … and {len(result.failed) - _LISTED} more failures", highlight=False)


CampaignOption = Annotated[
    str | None, typer.Option("--campaign", help="only the journey in this campaign")
]
ReasonOption = Annotated[
    str | None, typer.Option(help="why, kept with the journey's end (cancel) and in its log")
]


@app.command()
def pause(
    contact: Annotated[str, typer.Argument(help="email address or contact id")],
    campaign: CampaignOption = None,
    reason: ReasonOption = None,
) -> None:
    """Hold a contact's running journeys before their next step.

    Timers keep running: a wait that ends while paused sends nothing until `drip journeys
    resume`."""
    _control(contact, "pause", campaign, reason or "")


@app.command()
def resume(
    contact: Annotated[str, typer.Argument(help="email address or contact id")],
    campaign: CampaignOption = None,
    reason: ReasonOption = None,
) -> None:
    """Release a contact's paused journeys: each goes on where it stopped."""
    _control(contact, "resume", campaign, reason or "")


@app.command()
def cancel(
    contact: Annotated[str, typer.Argument(help="email address or contact id")],
    campaign: CampaignOption = None,
    reason: ReasonOption = None,
) -> None:
    """End a contact's running journeys now (enrolment state: cancelled)."""
    _control(contact, "cancel", campaign, reason or "")


_DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def _control(contact: str, action: str, campaign: str | None, reason: str) -> None:
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    with session_scope(engine) as s:
        found = find_contact(s, contact)
        running = [
            e
            for e in repository.list_enrolments(s, contact_id=found.id)
            if e.state == EnrolmentState.running and campaign in (None, e.campaign_id)
        ]
    if not running:
        where = f" in {campaign}" if campaign else ""
        err.print(f"[red]{escape(found.email)} has no running journey{escape(where)}[/red]")
        raise typer.Exit(1)

    async def signal() -> dict[str, bool | str]:
        client = await connect(settings)
        return await control_many(client, [e.workflow_id for e in running], action, reason)

    try:
        results = run_with_temporal(signal())
    except TemporalUnavailable as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    failed = False
    for e in running:
        outcome = results[e.workflow_id]
        label = f"{escape(e.campaign_id)} [dim]{escape(e.workflow_id)}[/dim]"
        if outcome is True:
            console.print(f"{_DONE[action]} {label}", highlight=False)
        elif outcome is False:
            console.print(f"already finished: {label}", highlight=False)
        else:
            failed = True
            err.print(f"[red]not {_DONE[action]}: {label}: {escape(outcome)}[/red]")
    if failed:
        raise typer.Exit(1)
