"""``drip campaigns``: validate a workspace before anything is deployed (usable as a CI check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from campaigns import CampaignError, load_workspace
from campaigns.jsonschema import campaign_json_schema_text
from drip.settings import get_settings
from workflows.capabilities import unsupported

app = typer.Typer(help="Validate and inspect campaigns.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@app.command()
def validate(
    workspaces: Annotated[
        list[Path] | None, typer.Argument(help="workspace folders (default: DRIP_WORKSPACE)")
    ] = None,
) -> None:
    """Check every campaign, form and template reference; exit 1 listing every problem."""
    roots = workspaces or [get_settings().workspace]
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
            )
            if missing := unsupported(plan):
                console.print(
                    f"   [yellow]valid, but this engine cannot run it yet: "
                    f"{escape(', '.join(missing))}[/yellow]",
                    highlight=False,
                )
    if failed:
        raise typer.Exit(1)


@app.command("list")
def list_campaigns() -> None:
    """The campaigns of the configured workspace, with their trigger and version."""
    root = get_settings().workspace
    try:
        ws = load_workspace(root)
    except CampaignError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for cid, plan in sorted(ws.plans.items()):
        trigger = (
            f"form {plan.trigger_form}" if plan.trigger_form else f"event {plan.trigger_event}"
        )
        console.print(
            f"{cid:24} {ws.campaigns[cid].status:8} {trigger:24} {plan.version}", highlight=False
        )


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")
    ] = None,
) -> None:
    """Print the JSON Schema of campaign files (for the YAML language server in editors)."""
    text = campaign_json_schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        console.print(f"wrote {output}", highlight=False)
