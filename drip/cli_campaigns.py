"""``drip campaigns``: validate, diff and deploy a workspace's campaigns, describe them, and
pause, resume or cancel a deployed one with all its running journeys."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.engine import Engine

from campaigns import CampaignError, Workspace, load_workspace
from campaigns.errors import hint
from campaigns.graph import to_mermaid, to_svg
from campaigns.jsonschema import broadcast_json_schema_text, campaign_json_schema_text
from contacts import deploys
from contacts.db import create_db_engine, migrate, session_scope
from drip._runtime import run_with_temporal
from drip.cli_journeys import plural
from drip.settings import get_settings
from emails.lint import send_errors
from workflows.bulk import BulkError
from workflows.capabilities import unsupported
from workflows.client import TemporalUnavailable, connect
from workflows.deploy import Deployment, deploy_workspace
from workflows.operations import control_campaign

app = typer.Typer(help="Validate and inspect campaigns.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _workspace_of(path: Path) -> Path:
    """The workspace a path belongs to: itself if a folder, else the folder holding
    workspace.yaml above the file (campaigns/x.yaml, forms/y.yaml, emails/z.mjml)."""
    if path.is_dir():
        return path
    for parent in path.resolve().parents:
        if (parent / "workspace.yaml").is_file():
            return parent
    return path.parent


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="workspace folders, or files in them (default: DRIP_WORKSPACE)", show_default=False
        ),
    ] = None,
) -> None:
    """Check every campaign, broadcast, form and template reference; exit 1 listing every
    problem.

    Files are checked as part of their workspace (a campaign's templates and forms live beside
    it), so a pre-commit hook can pass the changed files as they are."""
    roots = list(dict.fromkeys(_workspace_of(p) for p in paths or [get_settings().workspace]))
    failed = False
    for root in roots:
        try:
            ws = load_workspace(root)
        except CampaignError as exc:
            failed = True
            for problem in exc.problems:
                err.print(f"[red]{escape(str(problem))}[/red]", highlight=False, soft_wrap=True)
            continue
        for plan in ws.plans.values():
            console.print(
                f"[green]ok[/green] {root}/campaigns/{plan.campaign_id}.yaml "
                f"({len(plan.steps)} steps, version {plan.version})",
                highlight=False,
                soft_wrap=True,
            )
            if missing := unsupported(plan):
                console.print(
                    f"   [yellow]valid, but this engine cannot run it yet: "
                    f"{escape(', '.join(missing))}[/yellow]",
                    highlight=False,
                    soft_wrap=True,
                )
        for bplan in ws.broadcast_plans.values():
            console.print(
                f"[green]ok[/green] {root}/broadcasts/{bplan.broadcast_id}.yaml "
                f"(broadcast{_ab(len(bplan.variants))}, version {bplan.version})",
                highlight=False,
                soft_wrap=True,
            )
        # Templates the campaigns and broadcasts send, rendered for a sample contact: one that
        # fails every send (a syntax error, a render over its budget) is a problem of theirs too.
        for finding in send_errors(ws, get_settings()):
            failed = True
            err.print(f"[red]{escape(str(finding))}[/red]", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _ab(variants: int) -> str:
    return f", A/B test of {variants} variants" if variants else ""


def _workspace() -> Workspace:
    root = get_settings().workspace
    try:
        return load_workspace(root)
    except CampaignError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _engine() -> Engine:
    """The contact database, migrated: deploy records live there."""
    engine = create_db_engine(get_settings().database_url)
    migrate(engine)
    return engine


@app.command("list")
def list_campaigns() -> None:
    """The workspace's campaigns: trigger, status, the version in the files and the one live."""
    ws = _workspace()
    engine = _engine()
    with session_scope(engine) as session:
        live = deploys.current_versions(session)
        table = Table(
            *(
                Column(h, overflow="fold")
                for h in ("campaign", "trigger", "status", "workspace", "deployed")
            )
        )
        for cid, plan in sorted(ws.plans.items()):
            row = live.get(cid)
            deployed = "-" if row is None else f"{row.version} ({row.status})"
            if row is not None and (row.version, row.status) != (
                plan.version,
                ws.campaigns[cid].status,
            ):
                deployed += " [yellow]differs[/yellow]"
            table.add_row(
                cid,
                f"{plan.trigger_kind} {plan.trigger_value}".strip(),
                ws.campaigns[cid].status,
                plan.version,
                deployed,
            )
    console.print(table)


def _show(deployments: list[Deployment], *, verb: str) -> None:
    for d in deployments:
        if not d.changed:
            console.print(f"[dim]= {d.campaign_id}: {d.new_version}, unchanged[/dim]")
            continue
        old = f"{d.old_version} ({d.old_status})" if d.old_version else "nothing"
        console.print(
            f"[bold]{escape(d.campaign_id)}[/bold]: {old} -> {d.new_version} ({d.new_status}) "
            f"{verb}",
            highlight=False,
        )
        if d.old_status is not None and d.old_status != d.new_status:
            console.print(f"  ~ status: {d.old_status} -> {d.new_status}", highlight=False)
        for change in d.changes:
            colour = {"added": "green", "removed": "red", "changed": "yellow"}[change.kind]
            console.print(f"  [{colour}]{escape(str(change))}[/{colour}]", highlight=False)


@app.command()
def diff() -> None:
    """What `drip campaigns deploy` would change, step by step; exit 1 if anything."""
    deployments = deploy_workspace(_engine(), _workspace(), dry_run=True)
    _show(deployments, verb="(not deployed)")
    if any(d.changed for d in deployments):
        raise typer.Exit(1)


@app.command()
def deploy(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only show the changes")] = False,
) -> None:
    """Make the workspace's campaigns the versions new enrolments get. Running journeys keep
    their version; deploying an unchanged workspace does nothing."""
    deployments = deploy_workspace(
        _engine(),
        _workspace(),
        dry_run=dry_run,
        source=f"drip campaigns deploy ({getpass.getuser()})",
    )
    _show(deployments, verb="(dry run)" if dry_run else "deployed")


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")
    ] = None,
    broadcast: Annotated[
        bool, typer.Option("--broadcast", help="the schema of broadcast files instead")
    ] = False,
) -> None:
    """Print the JSON Schema of campaign files, or with --broadcast of broadcast files (for the
    YAML language server in editors)."""
    text = broadcast_json_schema_text() if broadcast else campaign_json_schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        console.print(f"wrote {output}", highlight=False)


@app.command()
def graph(
    name: Annotated[str, typer.Argument(help="campaign id")],
    svg: Annotated[Path | None, typer.Option(help="also write an SVG picture to this file")] = None,
) -> None:
    """Draw a campaign: Mermaid text on stdout (paste into GitHub, GitLab or mermaid.live) and,
    with --svg, a standalone picture."""
    ws = _workspace()
    plan = ws.plans.get(name)
    if plan is None:
        err.print(
            f"[red]no campaign {escape(name)!r}{escape(hint(name, ws.plans))}[/red]",
            highlight=False,
        )
        raise typer.Exit(1)
    typer.echo(to_mermaid(plan), nl=False)
    if svg is not None:
        svg.parent.mkdir(parents=True, exist_ok=True)
        svg.write_text(to_svg(plan))
        err.print(f"wrote {svg}", highlight=False)


ReasonOption = Annotated[
    str | None, typer.Option(help="why, kept with each journey's end (cancel) and in its log")
]


@app.command()
def pause(
    campaign: Annotated[str, typer.Argument(help="campaign id")],
    reason: ReasonOption = None,
) -> None:
    """Stop new enrolments and hold every running journey before its next step.

    The campaign's status becomes paused (the same plan), until `drip campaigns resume`."""
    _control(campaign, "pause", reason or "")


@app.command()
def resume(
    campaign: Annotated[str, typer.Argument(help="campaign id")],
    reason: ReasonOption = None,
) -> None:
    """Make a paused campaign active again and release its paused journeys."""
    _control(campaign, "resume", reason or "")


@app.command()
def cancel(
    campaign: Annotated[str, typer.Argument(help="campaign id")],
    reason: ReasonOption = None,
) -> None:
    """End every running journey of the campaign now, and stop new enrolments.

    Journeys end as cancelled; the campaign's status becomes paused (the same plan)."""
    _control(campaign, "cancel", reason or "")


_DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def _control(campaign: str, action: str, reason: str) -> None:
    settings = get_settings()
    engine = _engine()
    source = f"drip campaigns {action} ({getpass.getuser()})"

    async def run() -> dict[str, bool | str]:
        client = await connect(settings)
        return await control_campaign(client, engine, campaign, action, reason, source=source)

    try:
        results = run_with_temporal(run())
    except BulkError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except TemporalUnavailable as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    with session_scope(engine) as session:
        status = deploys.current_versions(session)[campaign].status
    signalled = sum(1 for r in results.values() if r is True)
    finished = sum(1 for r in results.values() if r is False)
    console.print(
        f"[bold]{escape(campaign)}[/bold] is {status}; "
        f"{plural(signalled, 'running journey')} {_DONE[action]}"
        + (f" ({finished} had already finished)" if finished else ""),
        highlight=False,
    )
    if action != "resume":
        console.print(
            "[dim]`drip campaigns deploy` applies the status in the YAML file again[/dim]",
            highlight=False,
        )
    failures = {w: r for w, r in results.items() if isinstance(r, str)}
    for workflow_id, problem in failures.items():
        err.print(f"[red]not {_DONE[action]}: {escape(workflow_id)}: {escape(problem)}[/red]")
    if failures:
        raise typer.Exit(1)
