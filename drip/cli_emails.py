"""``drip emails preview|send-test``: see a template as a contact will, before any campaign
sends it. Nothing is tracked and nothing is recorded: previews use the real renderer and MIME
builder, without storing links or outbox rows."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated

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

app = typer.Typer(help="Preview templates and send test emails.", no_args_is_help=True)
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
