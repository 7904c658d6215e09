"""Rendering one email for one contact: subject, HTML, plain text, tracked links.

This runs once per recipient, so everything that does not depend on the contact (MJML, CSS
inlining, UTM parameters, Jinja compilation, the text part's template, the signing key) is
prepared once; per contact there are the Jinja renders (subject, preheader, HTML, text), one regex
pass to rewrite links and one to put the tracked links into the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from contacts.broadcast_events import is_broadcast
from emails._html import Utm
from emails._text import finish_text, html_to_text
from emails.links import (
    insert_pixel,
    open_token,
    pixel_url,
    rewrite_links,
    unsubscribe_token,
    view_token,
)
from emails.templates import Record, RenderBudget, TemplateEngine, render_bounded

if TYPE_CHECKING:
    from campaigns.workspace import Workspace
    from contacts.models import Contact
    from drip.settings import Settings
    from emails.deployed import DeployedTemplate

__all__ = ["RenderedEmail", "Renderer", "template_data"]

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """Everything needed to build the MIME message and record the send.

    ``links`` are the ``(token, position, original_url)`` rows to store before sending, so a
    click can never arrive for a link we do not know; empty when not tracking, as is
    ``open_token``.
    """

    subject: str
    html: str
    text: str
    links: list[tuple[str, int, str]] = field(default_factory=list)
    open_token: str = ""
    unsubscribe_url: str = ""
    preheader: str = ""
    #: the "view in your browser" page, empty when rendering that page itself
    view_url: str = ""


class Renderer:
    """Renders a workspace's templates; one per worker, shared by every send."""

    def __init__(self, workspace: Workspace, settings: Settings) -> None:
        self.workspace = workspace
        self.base_url = settings.public_base_url.rstrip("/")
        # Read once: in dev ``secret()`` reads a file, which has no place on the per-contact path.
        self._secret = settings.secret()
        #: what one render may take (DRIP_TEMPLATE_RENDER_SECONDS, DRIP_TEMPLATE_OUTPUT_CHARS)
        self.budget = RenderBudget.from_settings(settings)
        self._templates = TemplateEngine(
            workspace.templates,
            folder=workspace.root / "emails",
            layout=workspace.config.layout,
            budget=self.budget,
        )
        self._workspace = Record(
            {"name": workspace.config.name, "postal_address": workspace.config.postal_address}
        )

    def render_note(self, text: str, contact: Contact, *, what: str) -> str:
        """A short text for people inside the company (a sales alert), personalised with the
        same sandbox as emails; raises TemplateError like an email would."""
        context = {
            "contact": Record({**contact.fields, "email": contact.email}),
            "workspace": self._workspace,
        }
        return self._templates.render_text(text, context, what=what)

    def unsubscribe_url(self, contact_id: int) -> str:
        return f"{self.base_url}/u/{unsubscribe_token(self._secret, contact_id)}"

    def preferences_url(self, contact_id: int) -> str:
        """The page that confirms an unsubscribe and offers the subscription preferences; the
        same page as the unsubscribe link, which never unsubscribes on a GET."""
        return self.unsubscribe_url(contact_id)

    def view_url(self, message_id: str) -> str:
        """The "view in your browser" page of one sent message."""
        return f"{self.base_url}/m/{view_token(self._secret, message_id)}"

    def render(
        self,
        *,
        template: str,
        subject: str,
        preheader: str,
        contact: Contact,
        message_id: str,
        campaign_id: str,
        step_id: str,
        track: bool,
        for_browser: bool = False,
        utm: Mapping[str, Any] | None = None,
        deployed: DeployedTemplate | None = None,
        literal_subject: bool = False,
        data: Mapping[str, Any] | None = None,
    ) -> RenderedEmail:
        """Render ``template`` for ``contact``; raises TemplateError for anything the template
        (or subject, or preheader) does wrong, never a partial email.

        ``for_browser`` renders the "view in your browser" page of an email already sent: no
        tracking (a page view is not an open) and no link to itself. ``utm`` holds the
        campaign's UTM settings (``source``, ``medium``, ``campaign``, ``content``, ``term``,
        ``domains``), appended to its links. ``deployed`` holds the template's files as its
        campaign version deployed them (``emails.deployed``); without it the workspace's files
        are used. ``literal_subject`` takes ``subject`` as already rendered (the outbox keeps
        what the person received), so contact data in it is never evaluated as a template.
        ``data`` is what a transactional API call gave the template, seen there as ``data``
        (``{{ data.order_id }}``), read-only like ``contact`` (``template_data``).
        """
        if contact.id is None:
            raise ValueError("render needs a stored contact: the unsubscribe link names its id")
        unsubscribe_url = self.unsubscribe_url(contact.id)
        if is_broadcast(campaign_id):
            # names the email, so the unsubscribe is filed under its broadcast (the token alone
            # authorises it; the route checks the message is this contact's)
            unsubscribe_url += f"?m={quote(message_id, safe='')}"
        view_url = "" if for_browser else self.view_url(message_id)
        context: dict[str, Any] = {
            "contact": Record({**contact.fields, "email": contact.email}),
            "workspace": self._workspace,
            "campaign_id": campaign_id,
            "step_id": step_id,
            "unsubscribe_url": unsubscribe_url,
            # the same page as the unsubscribe link (see preferences_url)
            "preferences_url": unsubscribe_url,
            "view_in_browser_url": view_url,
        }
        if data is not None:
            context["data"] = template_data(data)
        track = track and not for_browser
        # Header values must be one line: a newline from contact data would otherwise let a field
        # value inject headers, or make the message unbuildable.
        rendered_subject = _one_line(
            subject
            if literal_subject
            else self._templates.render_text(subject, context, what=f"{template}: subject")
        )
        rendered_preheader = _one_line(
            self._templates.render_text(preheader, context, what=f"{template}: preheader")
        )
        compiled = (
            deployed.compile(Utm.from_mapping(utm))
            if deployed is not None
            else self._templates.email(template, Utm.from_mapping(utm))
        )
        context["subject"] = rendered_subject
        context["preheader"] = rendered_preheader
        html = render_bounded(compiled.html, context, template, self.budget, lines=False)
        links: list[tuple[str, int, str]] = []
        token = ""
        if track:
            html, links = rewrite_links(
                html, message_id=message_id, secret=self._secret, base_url=self.base_url
            )
        # The text part carries the same (tracked) links as the HTML, and never the pixel.
        if compiled.text is not None:
            tracked: dict[str, str] = {}
            for link_token, _, url in links:
                tracked.setdefault(url, f"{self.base_url}/t/c/{link_token}")
            text = finish_text(
                render_bounded(compiled.text, context, f"{template}.txt", self.budget, lines=False),
                tracked,
            )
        else:
            text = html_to_text(html)
        if track:
            token = open_token(self._secret, message_id)
            html = insert_pixel(html, pixel_url(self.base_url, token))
        return RenderedEmail(
            subject=rendered_subject,
            html=html,
            text=text,
            links=links,
            open_token=token,
            unsubscribe_url=unsubscribe_url,
            preheader=rendered_preheader,
            view_url=view_url,
        )


def template_data(value: Any) -> Any:
    """A transactional call's JSON data as templates see it: every object a ``Record``, so
    ``data.order.items`` is the field ``items``, never the dict's method, and the template can
    read the values but call nothing on them (the sandbox refuses the rest)."""
    if isinstance(value, Mapping):
        return Record({str(k): template_data(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return [template_data(v) for v in value]
    return value


def _one_line(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()
