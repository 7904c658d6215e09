"""The lead-alert email to sales: who the lead is, why it scored, what it did, one button.

This is an internal email to colleagues, not marketing: no unsubscribe link, no postal address,
no tracking (an alert's opens and clicks are not a lead's). It still goes through the emails
pipeline: the built-in MJML document (``emails/sales/lead-alert.mjml``) is compiled once, its
HTML rendered by the same Jinja sandbox as every campaign email (autoescape, no globals, bounded
output and time), because everything in it but our own words comes from the contact: a lead who
calls themselves ``<script>`` is shown that text, never run. The text part is derived from the
rendered HTML, so both say the same.

The message is built by ``emails.message.build_message`` with a few headers of its own:
``Auto-Submitted: auto-generated`` (RFC 3834: out-of-office replies stay away), ``Cc`` for the
owner on an escalation, and ``In-Reply-To``/``References`` on reminders and escalations, so a
mail client threads them under the original alert. The Message-ID derives from (alert, kind)
alone, so a delivery repeated after a crash is recognisably the same message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formataddr, parseaddr
from functools import cache
from importlib.resources import files
from zoneinfo import ZoneInfo

import jinja2
import mjml

from contacts.alerts import LeadSummary
from emails._html import fold_tags
from emails._text import html_to_text
from emails.errors import TemplateError
from emails.message import build_message
from emails.render import RenderedEmail

# the pipeline's HTML sandbox, shared rather than copied, so alerts obey the rules every email does
from emails.templates import _HTML as _SANDBOX
from emails.templates import render_bounded

__all__ = [
    "ALERT_KINDS",
    "AlertContent",
    "alert_message_id",
    "alert_subject",
    "build_alert_message",
    "render_lead_alert",
]

ALERT_KINDS = ("alert", "reminder", "escalation")
TEMPLATE = "sales/lead-alert.mjml"
_WHITESPACE = re.compile(r"\s+")
_LABELS = {"alert": "New lead", "reminder": "Reminder", "escalation": "Escalation"}
#: Longest contact value put into a subject line, so the score still shows in an inbox list.
_SUBJECT_PART = 80


@dataclass(frozen=True)
class AlertContent:
    """What the alert says beyond the lead itself: set by the caller, which knows the workspace
    (fit rules, the teams' names) and the link."""

    kind: str
    reason: str
    ack_url: str
    workspace_name: str
    #: the owner as shown (``Tom Baker <tom@...>``), or None for the team inbox
    owner: str | None
    team: str | None
    raised_at: datetime
    #: ``sales.yaml`` fit rules that hold for the contact: (rule id, points)
    fit_rules: Sequence[tuple[str, int]] = field(default_factory=tuple)
    #: times are shown in this zone (the workspace's)
    timezone: str = "UTC"


def _one_line(text: str, limit: int | None = None) -> str:
    flat = _WHITESPACE.sub(" ", text).strip()
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


def alert_subject(kind: str, summary: LeadSummary) -> str:
    """``New lead: Jane Doe (Acme Ltd), score 42``; ``Reminder: ...``; ``Escalation: ... not
    acknowledged``. One line whatever the contact's fields hold (no header injection)."""
    who = _one_line(summary.display_name, _SUBJECT_PART)
    if summary.company:
        who += f" ({_one_line(summary.company, _SUBJECT_PART)})"
    lead = f"{who}, score {summary.contact.score}"
    if kind == "reminder":
        return f"Reminder: {lead}, waiting for you"
    if kind == "escalation":
        return f"Escalation: {lead}, not acknowledged"
    return f"New lead: {lead}"


def alert_message_id(alert_id: str, kind: str) -> str:
    """The left part of the Message-ID of one delivery of one alert: the same on every retry."""
    digest = hashlib.sha256(f"{alert_id}\x00{kind}".encode()).hexdigest()[:32]
    return f"sales-alert-{digest}"


@cache
def _template() -> jinja2.Template:
    """The MJML document compiled to HTML once, then to a sandboxed Jinja template."""
    source = files("emails").joinpath(TEMPLATE).read_text(encoding="utf-8")
    try:
        html = str(mjml.mjml2html(source))
    except Exception as exc:  # mjml-python raises ValueError; any failure is the template's
        raise TemplateError(f"MJML error: {exc}", template=TEMPLATE) from None
    return _SANDBOX.from_string(fold_tags(html))


def _when(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%d %b %Y %H:%M")


def _points(points: float) -> str:
    return f"{points:+.0f}" if float(points).is_integer() else f"{points:+.1f}"


def render_lead_alert(summary: LeadSummary, content: AlertContent) -> RenderedEmail:
    """The alert email for ``summary``; raises TemplateError only if the built-in template is
    broken (contact data cannot break it: every value is escaped text)."""
    if content.kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {content.kind!r}")
    zone = ZoneInfo(content.timezone)
    subject = alert_subject(content.kind, summary)
    name = summary.display_name
    contact = summary.contact
    who = [{"label": "Name", "value": summary.name or "(not given)", "href": ""}]
    who.append({"label": "Email", "value": contact.email, "href": f"mailto:{contact.email}"})
    for label, value in (
        ("Company", summary.company),
        ("Title", summary.title),
        ("Country", summary.country),
        ("Phone", summary.phone),
    ):
        if value:
            who.append({"label": label, "value": value, "href": ""})
    owner = content.owner or "nobody yet: this went to the team inbox"
    intro = {
        "alert": f"{name} has qualified as a lead for sales. Please get in touch while the "
        "interest is fresh.",
        "reminder": f"Nobody has acknowledged {name} yet. Please get in touch, or acknowledge "
        "so the team knows it is in hand.",
        "escalation": f"{name} was alerted to {owner} on "
        f"{_when(content.raised_at, zone)} and has not been acknowledged. Please make sure "
        "somebody follows up.",
    }[content.kind]
    preheader = _one_line(content.reason, 150)
    context = {
        "subject": subject,
        "preheader": preheader,
        "workspace_name": content.workspace_name,
        "label": _LABELS[content.kind],
        "kind": content.kind,
        "headline": {
            "alert": f"New lead: {name}",
            "reminder": f"Still waiting: {name}",
            "escalation": f"Not acknowledged: {name}",
        }[content.kind],
        "intro": intro,
        "reason_lines": [line for line in content.reason.splitlines() if line.strip()][:10],
        "ack_url": content.ack_url,
        "who": who,
        "score": contact.score,
        "stage": contact.stage,
        "stage_reason": summary.stage_reason or "",
        "fit_points": summary.fit_points,
        "fit_rules": [{"rule": rule, "points": _points(pts)} for rule, pts in content.fit_rules],
        "reasons": [
            {
                "points": _points(r.points),
                "rule": r.rule,
                "reason": r.reason,
                "when": _when(r.at, zone),
            }
            for r in summary.reasons
        ],
        "events": [
            {
                "when": _when(e.at, zone),
                "what": f"{e.type} {e.name}".strip(),
                "detail": e.detail,
            }
            for e in summary.events
        ],
        "campaigns": [
            {"campaign": c.campaign_id, "state": c.state, "step": c.current_step or ""}
            for c in summary.campaigns
        ],
        "owner": owner,
        "team": content.team or "none",
        "raised": f"{_when(content.raised_at, zone)} ({content.timezone})",
    }
    html = render_bounded(_template(), context, TEMPLATE)
    return RenderedEmail(
        subject=subject,
        html=html,
        text=html_to_text(html),
        preheader=preheader,
    )


def _address(name: str | None, address: str) -> str:
    """``Name <address>`` quoted as RFC 5322 needs (a comma in a name is not two addresses)."""
    return formataddr((_one_line(name), address)) if name and name.strip() else address


def build_alert_message(
    rendered: RenderedEmail,
    *,
    from_addr: str,
    to: tuple[str | None, str],
    cc: Sequence[tuple[str | None, str]] = (),
    message_id: str,
    domain: str,
    in_reply_to: str | None = None,
) -> bytes:
    """The alert as CRLF bytes for SMTP. ``to`` and ``cc`` are (display name, address);
    ``in_reply_to`` is the left part of the original alert's Message-ID (threads a reminder)."""
    body = build_message(
        rendered,
        from_addr=from_addr,
        to_addr=_address(*to),
        reply_to=None,
        message_id=message_id,
        domain=domain,
        unsubscribe_mailto=None,
    )
    extra = ["Auto-Submitted: auto-generated", "X-Auto-Response-Suppress: All"]
    if cc:
        # one folded line per address keeps each line short, whatever the names
        extra.append("Cc: " + ",\r\n ".join(_header_address(n, a) for n, a in cc))
    if in_reply_to:
        ref = f"<{in_reply_to}@{domain}>"
        extra += [f"In-Reply-To: {ref}", f"References: {ref}"]
    # header order carries no meaning (RFC 5322 3.6), so ours go first
    return ("\r\n".join(extra) + "\r\n").encode("ascii") + body


def _header_address(name: str | None, address: str) -> str:
    """An address for a header we write ourselves: ASCII only (a non-ASCII name becomes an
    RFC 2047 encoded word; an address that is not plain ASCII is refused)."""
    _, plain = parseaddr(address)
    if not plain or plain != address.strip() or not plain.isascii() or "\n" in address:
        raise ValueError(f"not an address for a header: {address!r}")
    text = _address(name, plain)
    if not text.isascii():
        raise ValueError(f"cannot write {text!r} in a header")
    return text
