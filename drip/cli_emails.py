"""``drip emails preview|send-test``: see a template as a contact will, before any campaign
sends it. Nothing is tracked and nothing is recorded: previews use the real renderer and MIME
builder, without storing links or outbox rows. ``drip emails lint`` checks every template for
what would hurt in the inbox or at send time (``emails.lint``), for CI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from campaigns import CampaignError, load_workspace
from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import Contact
from drip.settings import Settings, get_settings
from emails import (
    RenderedEmail,
    Renderer,
    SendError,
    SmtpTransport,
    TemplateError,
    build_message,
    domain_of,
)
from emails.lint import Finding, lint_workspace

app = typer.Typer(help="Preview and lint templates, send test emails.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

#: Who a preview is for when no real contact is named: every common field filled in.
SAMPLE = {
    "first_name": "Alex",
    "last_name": "Sample",
    "company": "Sample Ltd",
    "interest": "hiking",
}

ContactOption = Annotated[
    str | None,
    typer.Option("--contact", help="render for this stored contact (email); default: a sample"),
]
SubjectOption = Annotated[
    str | None,
    typer.Option(help="subject line (Jinja); default: the first campaign step using it"),
]


def _workspace(settings: Settings) -> Workspace:
    try:
        return load_workspace(settings.workspace)
    except CampaignError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None


def _contact(settings: Settings, email: str | None) -> Contact:
    if email is None:
        return Contact(id=0, email="alex.sample@example.com", fields=SAMPLE)
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    with session_scope(engine) as session:
        found = repository.get_contact_by_email(session, email)
    engine.dispose()
    if found is None:
        err.print(f"[red]no contact {escape(email)}[/red]", highlight=False)
        raise typer.Exit(1)
    return found


def _subject(workspace: Workspace, template: str, given: str | None) -> tuple[str, str]:
    """(subject, preheader): as given, else from the first step that sends this template."""
    if given is not None:
        return given, ""
    for plan in workspace.plans.values():
        for step in plan.steps.values():
            if step.kind == "send_email" and step.template == template:
                return step.subject, step.preheader
    return f"Preview: {template}", ""


def _render(
    settings: Settings, template: str, contact: str | None, subject: str | None
) -> tuple[Workspace, Contact, RenderedEmail]:
    workspace = _workspace(settings)
    if template not in workspace.templates:
        known = ", ".join(sorted(workspace.templates))
        err.print(f"[red]no template {escape(template)} (known: {escape(known)})[/red]")
        raise typer.Exit(1)
    who = _contact(settings, contact)
    line, preheader = _subject(workspace, template, subject)
    try:
        rendered = Renderer(workspace, settings).render(
            template=template,
            subject=line,
            preheader=preheader,
            contact=who,
            message_id=f"preview-{uuid.uuid4().hex}",
            campaign_id="preview",
            step_id=template,
            track=False,
        )
    except TemplateError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None
    return workspace, who, rendered


@app.command()
def preview(
    template: Annotated[str, typer.Argument(help="template name (emails/NAME.mjml)")],
    contact: ContactOption = None,
    subject: SubjectOption = None,
    out: Annotated[
        Path | None, typer.Option(help="folder for NAME.html and NAME.txt (default .drip/preview)")
    ] = None,
) -> None:
    """Write the rendered HTML and text parts and print the subject."""
    settings = get_settings()
    _, who, rendered = _render(settings, template, contact, subject)
    folder = out or settings.home / "preview"
    folder.mkdir(parents=True, exist_ok=True)
    html, text = folder / f"{template}.html", folder / f"{template}.txt"
    html.write_text(rendered.html)
    text.write_text(rendered.text)
    console.print(f"subject: {escape(rendered.subject)}", highlight=False)
    if rendered.preheader:
        console.print(f"preheader: {escape(rendered.preheader)}", highlight=False)
    console.print(f"for: {escape(who.email)}\nwrote {html}\nwrote {text}", highlight=False)


@app.command("send-test")
def send_test(
    template: Annotated[str, typer.Argument(help="template name (emails/NAME.mjml)")],
    to: Annotated[str, typer.Option(help="where the test goes")],
    contact: ContactOption = None,
    subject: SubjectOption = None,
) -> None:
    """Send one test email through the configured SMTP relay (subject prefixed [TEST])."""
    settings = get_settings()
    workspace, _, rendered = _render(settings, template, contact, subject)
    rendered = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
    config = workspace.config
    message_id = f"test-{uuid.uuid4().hex}"
    data = build_message(
        rendered,
        from_addr=config.from_,
        to_addr=to,
        reply_to=config.reply_to,
        message_id=message_id,
        domain=domain_of(config.from_),
        unsubscribe_mailto=config.unsubscribe_mailto,
    )

    async def send() -> None:
        transport = SmtpTransport(settings)
        try:
            await transport.send(
                sender=parseaddr(config.from_)[1], recipients=[parseaddr(to)[1]], data=data
            )
        finally:
            await transport.close()

    try:
        asyncio.run(send())
    except SendError as exc:
        err.print(f"[red]not sent: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None
    console.print(
        f"sent {escape(rendered.subject)} to {escape(to)} via "
        f"{settings.smtp_host}:{settings.smtp_port}",
        highlight=False,
    )


@app.command()
def lint(
    templates: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="TEMPLATE",
            help="template names or emails/NAME.mjml files (default: all)",
            show_default=False,
        ),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="workspace folder [default: DRIP_WORKSPACE]",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Literal["text", "json"], typer.Option("--format", help="text or json")
    ] = "text",
    strict: Annotated[bool, typer.Option(help="exit 1 on warnings too")] = False,
) -> None:
    """Check templates for what would fail at send time or hurt in the inbox.

    Alt text, the postal address, unresolved variables, contact fields that may be missing,
    http links and images, Gmail's 102 KB clipping limit: one finding a line, as
    path:line: severity rule: message.

    Exit 1 on any error (with --strict, on any warning too), 2 if it cannot lint."""
    settings = get_settings()
    root = workspace or settings.workspace
    try:
        ws = load_workspace(root)
    except CampaignError as exc:
        err.print(f"[red]the workspace {escape(str(root))} has problems:[/red]", highlight=False)
        for problem in exc.problems:
            err.print(f"[red]{escape(str(problem))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    names = _lint_names(ws, templates or [])
    findings = lint_workspace(ws, settings, names)
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    count = len(names) if names is not None else len(ws.templates)
    if output == "json":
        report = {
            "templates": count,
            "errors": errors,
            "warnings": warnings,
            "findings": [dataclasses.asdict(f) for f in findings],
        }
        typer.echo(json.dumps(report, indent=2))
    else:
        for finding in findings:
            console.print(_finding_line(finding), highlight=False, soft_wrap=True)
        console.print(_lint_summary(count, errors, warnings), highlight=False)
    if errors or (strict and warnings):
        raise typer.Exit(1)


def _lint_names(workspace: Workspace, given: list[str]) -> list[str] | None:
    """Template names from names or file paths; None for all of them."""
    if not given:
        return None
    by_file = {path.resolve(): name for name, path in workspace.templates.items()}
    names: list[str] = []
    for item in given:
        name = by_file.get(Path(item).resolve()) if item.endswith(".mjml") else item
        if name is None or name not in workspace.templates:
            known = ", ".join(sorted(workspace.templates))
            err.print(
                f"[red]no template {escape(item)} in {escape(str(workspace.root))} "
                f"(known: {escape(known)})[/red]",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        names.append(name)
    return list(dict.fromkeys(names))


def _finding_line(finding: Finding) -> str:
    colour = "red" if finding.severity == "error" else "yellow"
    where = f"{finding.path}:{finding.line}" if finding.line > 0 else finding.path
    return (
        f"{escape(where)}: [{colour}]{finding.severity}[/{colour}] {escape(finding.rule)}: "
        f"{escape(finding.message)}"
    )


def _lint_summary(templates: int, errors: int, warnings: int) -> str:
    checked = f"{templates} template{'s' if templates != 1 else ''}"
    if not errors and not warnings:
        return f"{checked}: [green]no problems[/green]"
    parts = [f"{errors} error{'s' if errors != 1 else ''}"] if errors else []
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return f"{checked}: {', '.join(parts)}"
