"""``drip broadcasts``: one email to a whole audience, from the workspace's ``broadcasts/*.yaml``.

The commands are a thin shell over ``workflows.broadcasts`` (the same functions the admin API
calls): a send is a Temporal workflow, so it goes on when this command ends, and ``send``
only follows its progress from the database (``progress``), which is why Ctrl-C or
``--detach`` leave it running and ``status`` finds it again from any machine.

Exit codes: 0 done; 1 refused or failed (already sent, nothing to pause, Temporal unreachable,
a send that ended cancelled or failed, a broken workspace); 2 nothing done because a name or
option is wrong (an unknown broadcast, variant or contact).
"""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.service import RPCError

from campaigns import CampaignError, Workspace, load_workspace
from campaigns.broadcasts import BroadcastPlan
from contacts import repository
from contacts.broadcast_models import BroadcastSend, SendState, broadcast_campaign_id
from contacts.broadcast_reports import ab_result, broadcast_rows, send_report
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import Contact, utcnow
from drip._broadcast_output import duration, follow, status_lines, summary, when
from drip._runtime import run_with_temporal
from drip.cli_emails import SAMPLE
from drip.settings import Settings, get_settings
from emails import Renderer, TemplateError
from emails.lint import SEND_BLOCKERS, lint_workspace
from workflows.broadcasts import (
    BroadcastError,
    cancel_broadcast,
    dry_run,
    latest_send,
    pause_broadcast,
    resume_broadcast,
    start_broadcast,
)
from workflows.client import TemporalUnavailable, connect

T = TypeVar("T")

app = typer.Typer(
    help="Broadcasts: one email to a whole audience (list, preview, send, pause, cancel).",
    no_args_is_help=True,
)
# no emoji codes: a send id "broadcast:ab:1" would print as "broadcast🆎1"
console = Console(emoji=False)
err = Console(stderr=True, emoji=False)

NameArgument = Annotated[str, typer.Argument(help="broadcast id (broadcasts/ID.yaml)")]


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _red(message: str, code: int) -> NoReturn:
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _workspace(settings: Settings) -> Workspace:
    try:
        return load_workspace(settings.workspace)
    except CampaignError as exc:
        _red(f"the workspace {settings.workspace} has problems:\n{exc}", 1)


def _engine(settings: Settings) -> Engine:
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    return engine


def _plan(workspace: Workspace, name: str) -> BroadcastPlan:
    plan = workspace.broadcast_plans.get(name)
    if plan is None:
        known = ", ".join(sorted(workspace.broadcast_plans)) or "none"
        _red(f"no broadcast {name} in {workspace.root}/broadcasts (known: {known})", 2)
    return plan


def _known_send(settings: Settings, engine: Engine, name: str) -> BroadcastSend | None:
    """The latest send of ``name``; exit 2 if the name is neither in the workspace nor ever
    sent (a broadcast whose file was removed keeps its sends, and they stay controllable)."""
    send = latest_send(engine, name)
    if send is not None:
        return send
    try:
        known = load_workspace(settings.workspace).broadcast_plans
    except CampaignError:  # the sends are what counts here; the files may be mid-edit
        known = {}
    if name not in known:
        _red(f"no broadcast {name}: not in the workspace and never sent", 2)
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container with an unnamed uid)
        return "unknown user"


def _with_temporal(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work(client)``; a refusal or an unreachable Temporal is one red line, exit 1."""

    async def run() -> T:
        client = await asyncio.wait_for(connect(settings), timeout=10)
        return await work(client)

    try:
        return run_with_temporal(run())
    except BroadcastError as exc:
        _red(str(exc), 1)
    except (TemporalUnavailable, TimeoutError) as exc:
        _red(f"nothing done: Temporal cannot be reached ({exc})", 1)
    except RPCError as exc:  # reached, then lost mid-call
        _red(f"Temporal did not answer: {exc}", 1)


@app.command("list")
def list_broadcasts() -> None:
    """The workspace's broadcasts (and sent ones whose file is gone) with their latest send."""
    settings = get_settings()
    workspace = _workspace(settings)
    engine = _engine(settings)
    with session_scope(engine) as session:
        latest = {row.report.broadcast_id: row for row in broadcast_rows(session, now=utcnow())}
    engine.dispose()
    table = Table(
        Column("broadcast", overflow="fold"),
        Column("name", overflow="fold"),
        Column("send at", overflow="fold"),
        Column("last send", overflow="fold"),
        Column("state"),
        Column("sent", justify="right"),
        Column("audience", justify="right"),
    )
    for bid in sorted(set(workspace.broadcast_plans) | set(latest)):
        plan = workspace.broadcast_plans.get(bid)
        row = latest.get(bid)
        report = row.report if row is not None else None
        if plan is not None:
            name = plan.name
            due = (plan.send_at or "now") + (" local" if plan.local_time else "")
        else:
            name, due = f"{report.name if report else bid} (file removed)", "-"
        table.add_row(
            bid,
            name,
            due,
            "-" if report is None else f"#{report.number} {when(report.created_at)}",
            "never sent" if report is None else report.state,
            "-" if report is None else f"{report.sent:,}",
            "-" if report is None or report.audience is None else f"{report.audience:,}",
        )
    console.print(table)


@app.command()
def validate() -> None:
    """Load the workspace and check each broadcast and its email; exit 1 listing every problem.

    A broadcast is part of its workspace (templates, topics), so the whole workspace is loaded,
    as ``drip campaigns validate`` does (which checks the broadcasts too, with the campaigns);
    the templates the broadcasts send are then rendered for a sample contact with their
    subjects, so one that would fail every send fails here, at its file and line."""
    settings = get_settings()
    root = settings.workspace
    try:
        workspace = load_workspace(root)
    except CampaignError as exc:
        for problem in exc.problems:
            err.print(f"[red]{escape(str(problem))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for bid, plan in sorted(workspace.broadcast_plans.items()):
        ab = f", A/B test of {len(plan.variants)} variants" if plan.variants else ""
        console.print(
            f"[green]ok[/green] {escape(str(root))}/broadcasts/{bid}.yaml "
            f"(broadcast{ab}, version {plan.version})",
            highlight=False,
            soft_wrap=True,
        )
    if not workspace.broadcast_plans:
        console.print(f"no broadcasts in {escape(str(root))}/broadcasts", highlight=False)
    sent = sorted({name for b in workspace.broadcasts.values() for name in b.templates()})
    campaigns = (workspace.root / "campaigns").resolve()
    findings = [
        f
        for f in lint_workspace(workspace, settings, [n for n in sent if n in workspace.templates])
        if f.severity == "error"
        and f.rule in SEND_BLOCKERS
        # a campaign's subject is the campaigns' problem (drip campaigns validate)
        and not Path(f.path).resolve().is_relative_to(campaigns)
    ]
    for finding in findings:
        err.print(f"[red]{escape(str(finding))}[/red]", highlight=False, soft_wrap=True)
    if findings:
        raise typer.Exit(1)


def _variant_ids(plan: BroadcastPlan) -> list[str]:
    return [v["id"] for v in plan.variants]


def _sample_contact() -> Contact:
    return Contact(id=0, email="alex.sample@example.com", fields=SAMPLE)


def _render(renderer: Renderer, plan: BroadcastPlan, variant: str, contact: Contact) -> Any:
    """The email ``contact`` would get (variant ``variant``, "" for the plain email), untracked."""
    chosen = next((v for v in plan.variants if v["id"] == variant), None)
    return renderer.render(
        template=chosen["template"] if chosen else plan.template,
        subject=chosen["subject"] if chosen else plan.subject,
        preheader=chosen["preheader"] if chosen else plan.preheader,
        contact=contact,
        message_id=f"preview-{uuid.uuid4().hex}",
        campaign_id=broadcast_campaign_id(plan.broadcast_id),
        step_id=variant or "email",
        track=False,
        utm=plan.utm_for(variant) or None,
    )


@app.command()
def preview(
    name: NameArgument,
    contact: Annotated[
        str | None,
        typer.Option("--contact", help="render for this stored contact (email); default: a sample"),
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="an A/B test variant's id (default: the first one)")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="also write the HTML part to this file")] = None,
) -> None:
    """Print the email as one contact would get it (subject, from, text part); sends nothing."""
    settings = get_settings()
    workspace = _workspace(settings)
    plan = _plan(workspace, name)
    ids = _variant_ids(plan)
    if variant is not None and variant not in ids:
        _red(f"{name} has no variant {variant} (variants: {', '.join(ids) or 'none'})", 2)
    chosen = variant or (ids[0] if ids else "")
    who = _sample_contact()
    if contact is not None:
        engine = _engine(settings)
        with session_scope(engine) as session:
            found = repository.get_contact_by_email(session, contact)
        engine.dispose()
        if found is None:
            _red(f"no contact {contact}", 2)
        who = found
    try:
        rendered = _render(Renderer(workspace, settings), plan, chosen, who)
    except TemplateError as exc:
        _red(str(exc), 1)
    sender = plan.from_addr or workspace.config.from_
    reply_to = plan.reply_to or workspace.config.reply_to
    lines = [f"subject: {rendered.subject}", f"from: {sender}"]
    if reply_to:
        lines.append(f"reply-to: {reply_to}")
    lines.append(f"to: {who.email}")
    if rendered.preheader:
        lines.append(f"preheader: {rendered.preheader}")
    if chosen:
        lines.append(f"variant: {chosen}")
    for line in lines:
        console.print(escape(line), highlight=False, soft_wrap=True)
    console.print()
    console.print(Text(rendered.text), soft_wrap=True)
    if html is not None:
        html.write_text(rendered.html)
        console.print(f"wrote {html}", highlight=False)


def _print_dry_run(name: str, plan: BroadcastPlan, engine: Engine, workspace: Workspace) -> int:
    """Print who a send would reach now; return how many it would send to."""
    found = dry_run(engine, workspace, name, sample=5)
    audience = _plural(found.audience, "contact")
    console.print(
        f"[bold]{escape(plan.name)}[/bold] ({escape(name)}): audience {audience}", highlight=False
    )
    console.print(f"  would send: {found.would_send:,}", highlight=False)
    suppressed = sum(found.suppressed_by_reason.values())
    console.print(f"  suppressed: {suppressed:,}", highlight=False)
    for reason, count in sorted(found.suppressed_by_reason.items(), key=lambda kv: -kv[1]):
        console.print(f"    {escape(reason)}: {count:,}", highlight=False)
    if found.sample:
        console.print(
            f"  sample: {escape(', '.join(found.sample))}", highlight=False, soft_wrap=True
        )
    return found.would_send


@app.command()
def send(
    name: NameArgument,
    dry_run_only: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="print the audience, the suppressed and a sample; send nothing"
        ),
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="send once more although an earlier send completed")
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="start it and return; the send goes on in Temporal")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Send a broadcast to its audience, with a progress bar (Ctrl-C leaves it running)."""
    settings = get_settings()
    workspace = _workspace(settings)
    plan = _plan(workspace, name)
    engine = _engine(settings)
    if dry_run_only:
        _print_dry_run(name, plan, engine, workspace)
        console.print("nothing sent (dry run)")
        return
    if not yes:
        count = _print_dry_run(name, plan, engine, workspace)
        typer.confirm(f"Send {plan.name!r} to {_plural(count, 'contact')}?", abort=True)
    by = f"cli ({_user()})"

    async def start(client: Client) -> BroadcastSend:
        return await start_broadcast(
            client, engine, workspace, name, settings=settings, started_by=by, again=again
        )

    started = _with_temporal(settings, start)
    console.print(
        f"started send #{started.number} of [bold]{escape(name)}[/bold] "
        f"[dim]{escape(started.id)}[/dim]",
        highlight=False,
    )
    due = _due_later(plan)
    if detach or due:
        if due:
            console.print(f"it is due {due}; the worker sends it then", highlight=False)
        _how_to_follow(name)
        return
    final = follow(engine, started, console)
    engine.dispose()
    if final is None:
        console.print("[yellow]left running[/yellow]: the send goes on in Temporal")
        _how_to_follow(name)
        return
    summary(final, console)
    if final.state == SendState.testing:
        wait = duration(plan.ab_wait_seconds)
        console.print(
            f"the A/B test's sample is out; the winner is picked in {wait} and sent to the rest",
            highlight=False,
        )
        _how_to_follow(name)
    elif final.state != SendState.completed:
        raise typer.Exit(1)


def _due_later(plan: BroadcastPlan) -> str:
    """When a send at a later time is due ("" if now): no point watching a bar that waits."""
    if not plan.send_at:
        return ""
    if plan.local_time:
        return f"at {plan.send_at} in each contact's time zone"
    at = datetime.fromisoformat(plan.send_at)
    return f"at {when(at)}" if at > datetime.now(UTC) else ""


def _how_to_follow(name: str) -> None:
    console.print(
        f"follow it with `drip broadcasts status {name}`; `drip broadcasts pause {name}` "
        f"or `cancel {name}` stop it",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def status(name: NameArgument) -> None:
    """The latest send: state, outbox counts, suppressed by reason, rate, times, A/B result."""
    settings = get_settings()
    engine = _engine(settings)
    send = _known_send(settings, engine, name)
    if send is None:
        console.print(f"{escape(name)}: never sent; `drip broadcasts send {escape(name)}`")
        return
    with session_scope(engine) as session:
        report = send_report(session, send.id, now=utcnow())
        ab = ab_result(session, send.id)
    engine.dispose()
    assert report is not None  # the send was just read
    for line in status_lines(report, ab):
        console.print(line, highlight=False, soft_wrap=True)


_CONTROLLED = {
    "pause": "paused {send}: the batches in flight finish; `drip broadcasts resume {name}` "
    "goes on from there",
    "resume": "resumed {send}",
    "cancel": "cancelled {send}: the batches in flight finish, the rest of the audience gets "
    "nothing",
}


def _control(name: str, action: str) -> None:
    settings = get_settings()
    engine = _engine(settings)
    if _known_send(settings, engine, name) is None:
        _red(f"{name} was never sent: nothing to {action}", 1)
    by = f"cli ({_user()})"
    do = {"pause": pause_broadcast, "resume": resume_broadcast, "cancel": cancel_broadcast}[action]

    async def work(client: Client) -> BroadcastSend:
        return await do(client, engine, name, by=by)

    send = _with_temporal(settings, work)
    engine.dispose()
    label = f"send #{send.number} of {name}"
    console.print(
        escape(_CONTROLLED[action].format(send=label, name=name)), highlight=False, soft_wrap=True
    )


@app.command()
def pause(name: NameArgument) -> None:
    """Stop the running send after the batch in hand; `resume` goes on from there."""
    _control(name, "pause")


@app.command()
def resume(name: NameArgument) -> None:
    """Go on with a paused send where it stopped."""
    _control(name, "resume")


@app.command()
def cancel(
    name: NameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Stop the send for good after the batch in hand; the rest of the audience gets nothing."""
    if not yes:
        typer.confirm(
            f"Cancel the send of {name}? The recipients not reached yet get nothing", abort=True
        )
    _control(name, "cancel")
