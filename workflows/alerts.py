"""Delivering lead alerts to sales: the ``deliver_lead_alert`` activity of the follow-up workflow.

One delivery is one *kind* (the first ``alert`` to the owner, the ``reminder`` to the owner, the
``escalation`` to the team lead with the owner in Cc) on several channels: ``email`` (the
``emails.sales_alert`` email), ``chat`` (a Slack-compatible incoming webhook) and ``crm`` (signed
JSON to the workspace's CRM endpoint, for the first alert only: a CRM wants the lead once, not
our reminders).

Each channel goes out at most once per (alert, kind), as far as we can know: after a channel
succeeded it is recorded on the contact's timeline (a ``sales_alert`` event whose dedupe key
names alert, kind and channel), and a retry of the activity skips what is recorded. A crash
between the send and the record repeats that one channel; receivers can drop the repeat by the
stable Message-ID or ``Idempotency-Key``. Losing an alert is worse than repeating one.

Transient failures (SMTP 4xx or no connection, HTTP 5xx, 429 or timeouts) raise, so Temporal
retries with backoff; permanent ones (SMTP 5xx, a refused URL, HTTP 4xx) and channels that are
not configured are returned as ``problems``, since retrying cannot fix them. A reminder or an
escalation first re-reads the alert: once acknowledged, nothing is sent (``skipped``), even if
the acknowledge signal never reached the workflow.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import parseaddr
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from campaigns.scoring import fit_points
from campaigns.workspace import Workspace
from contacts import alerts as alert_store
from contacts import repository
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import Event, LeadAlert, SalesRep, SalesTeam
from drip.settings import Settings
from emails import domain_of
from emails.errors import PermanentSendError
from emails.links import alert_ack_token
from emails.sales_alert import (
    ALERT_KINDS,
    AlertContent,
    alert_message_id,
    alert_subject,
    build_alert_message,
    render_lead_alert,
)
from emails.sender import Transport
from workflows.facts import contact_facts
from workflows.notify import outbound_policy
from workflows.outbound import OutboundRefused, post_json
from workflows.positions import current_steps
from workflows.sales_types import (
    SIGNAL_ACK,
    AlertAck,
    AlertDeliveryInput,
    AlertDeliveryResult,
    lead_alert_workflow_id,
)

__all__ = [
    "AlertView",
    "SalesActivities",
    "ack_url",
    "chat_payload",
    "crm_payload",
    "load_alert_view",
    "located",
    "running_workflows",
    "signal_alert_ack",
]

#: (display name or None, address)
Person = tuple[str | None, str]
_NAME_ADDR = re.compile(r"(?P<name>[^<>]*)<(?P<address>[^<>]+)>")
#: Slack refuses a section text over 3000 characters.
_CHAT_TEXT = 2900


@dataclass(frozen=True)
class AlertView:
    """An alert with what every channel and the acknowledge page show of it."""

    alert: LeadAlert
    summary: alert_store.LeadSummary
    #: ``sales.yaml`` fit rules holding for the contact now: (rule id, points)
    fit_rules: list[tuple[str, int]]
    owner: Person | None
    team_id: str | None
    team_name: str | None
    team_lead: Person | None

    @property
    def owner_shown(self) -> str | None:
        if self.owner is None:
            return None
        name, address = self.owner
        return f"{name} <{address}>" if name else address

    @property
    def team_shown(self) -> str | None:
        if self.team_id is None:
            return None
        return f"{self.team_name} ({self.team_id})" if self.team_name else self.team_id


def _person(text: str | None) -> Person | None:
    """``Name <addr>`` or a bare address as (name, address); None when there is no address.
    People type names with commas and no quotes (``Shah, Priya <priya@...>``), which RFC 5322
    would read as two addresses, so the angle brackets decide first."""
    if not text:
        return None
    bracketed = _NAME_ADDR.fullmatch(text.strip())
    if bracketed is not None:
        name, address = bracketed.group("name").strip().strip('"').strip(), bracketed["address"]
    else:
        name, address = parseaddr(text)
    address = address.strip()
    return (name or None, address) if "@" in address and " " not in address else None


def load_alert_view(session: Session, workspace: Workspace, alert_id: str) -> AlertView:
    """The alert, its lead's summary, owner and team; NotFound if the alert does not exist.

    Teams and reps are read from the database (``sales.yaml`` synced, plus those added by the
    API), falling back to ``sales.yaml`` itself for a team or rep not synced yet."""
    alert = alert_store.get_alert(session, alert_id)
    summary = alert_store.lead_summary(session, alert.contact_id)
    plan = workspace.sales
    rules: list[tuple[str, int]] = []
    if plan.scoring.fit:
        facts = contact_facts(session, summary.contact, with_events=False)
        rules = fit_points(plan.scoring, facts)
    owner: Person | None = None
    if alert.owner:
        wanted = alert.owner.lower()
        rep = session.exec(select(SalesRep).where(func.lower(SalesRep.email) == wanted)).first()
        named = (r.name for t in plan.teams for r in t.reps if r.email.lower() == wanted)
        owner = ((rep.name if rep is not None else None) or next(named, None), alert.owner)
    team_name = lead = None
    if alert.team_id:
        row = session.get(SalesTeam, alert.team_id)
        planned = next((t for t in plan.teams if t.id == alert.team_id), None)
        team_name = (row.name if row is not None else None) or (planned.name if planned else None)
        lead = (row.lead if row is not None else None) or (planned.lead if planned else None)
    return AlertView(
        alert=alert,
        summary=summary,
        fit_rules=rules,
        owner=owner,
        team_id=alert.team_id,
        team_name=team_name or None,
        team_lead=_person(lead),
    )


def located(view: AlertView, steps: Mapping[str, str] | None) -> AlertView:
    """The view with the step each of the lead's running campaigns is at (from Temporal:
    ``workflows.positions``); unchanged when Temporal could not say (``steps`` None)."""
    if not steps:
        return view
    return replace(view, summary=alert_store.with_steps(view.summary, steps))


def running_workflows(view: AlertView) -> list[str]:
    """The lead's running journeys, whose steps the alert email shows."""
    return [c.workflow_id for c in view.summary.campaigns if c.state == "running"]


def ack_url(settings: Settings, alert_id: str, *, secret: bytes | None = None) -> str:
    """The signed acknowledge link of an alert (``GET`` shows the lead, ``POST`` acknowledges)."""
    token = alert_ack_token(secret if secret is not None else settings.secret(), alert_id)
    return f"{settings.public_base_url.rstrip('/')}/sales/ack/{token}"


async def signal_alert_ack(client: Client, alert_id: str, by: str) -> bool:
    """Tell the alert's follow-up workflow it was acknowledged; False if it has ended (or never
    started). The database is written first, so a lost signal only costs a skipped reminder."""
    handle = client.get_workflow_handle(lead_alert_workflow_id(alert_id))
    try:
        await handle.signal(SIGNAL_ACK, AlertAck(by=by))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


def _slack(text: str) -> str:
    """Slack's mrkdwn treats ``<``, ``>`` and ``&`` as control characters: contact data must not
    make links or mentions (``<!channel>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_payload(view: AlertView, kind: str, link: str) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook message: ``text`` for notifications and clients
    without blocks, ``blocks`` with the lead and an Acknowledge button."""
    s = view.summary
    headline = _slack(alert_subject(kind, s))
    facts = [x for x in (s.email, s.title, s.country, s.phone) if x]
    reason = " ".join(view.alert.reason.split())
    lines = [
        f"*{headline}*",
        _slack(" · ".join(facts)),
        f"Why: {_slack(reason[:600])}",
        f"Stage {_slack(s.contact.stage)} · owner {_slack(view.owner_shown or 'team inbox')}"
        + (f" · team {_slack(view.team_shown)}" if view.team_shown else ""),
    ]
    why = ", ".join(f"{r.points:+g} {r.rule}" for r in s.reasons[:5])
    if why:
        lines.append(f"Latest score changes: {_slack(why)}")
    text = "\n".join(lines)[:_CHAT_TEXT]
    return {
        "text": f"{headline}\n{_slack(reason[:300])}\nAcknowledge: {link}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": text},
                "accessory": {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Acknowledge"},
                    "url": link,
                    "action_id": "drip-acknowledge",
                    "style": "primary",
                },
            }
        ],
    }


def crm_payload(view: AlertView) -> dict[str, Any]:
    """What a CRM gets for a qualified lead (signed with ``Drip-Signature``)."""
    alert, contact = view.alert, view.summary.contact
    return {
        "type": "lead.qualified",
        "alert": {
            "id": alert.id,
            "reason": alert.reason,
            "created_at": alert.created_at.isoformat(),
            "owner": alert.owner,
            "team": alert.team_id,
        },
        "contact": {
            "id": contact.id,
            "email": contact.email,
            "fields": contact.fields,
            "tags": contact.tags,
            "score": contact.score,
            "stage": contact.stage,
            "owner": contact.owner,
        },
    }


def _idempotency_key(*parts: str) -> str:
    return "-".join(parts).encode("ascii", "replace").decode().replace(" ", "_").replace("?", "_")


class SalesActivities:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        workspace: Workspace,
        transport: Transport,
        client: Client | None = None,
    ) -> None:
        #: to read the step the lead's running journeys are at; without one the alert
        #: lists the campaigns without their step
        self.client = client
        self.settings = settings
        self.engine = engine
        self.workspace = workspace
        self.transport = transport
        self.policy = outbound_policy(settings, workspace)
        self.secret = settings.secret()

    def all(self) -> list[Any]:
        return [self.deliver_lead_alert]

    def _load(self, alert_id: str) -> tuple[AlertView, set[str]]:
        with session_scope(self.engine) as session:
            view = load_alert_view(session, self.workspace, alert_id)
            done = session.exec(
                select(Event.dedupe_key).where(
                    Event.contact_id == view.alert.contact_id, Event.type == "sales_alert"
                )
            ).all()
            return view, set(done)

    def _record(self, view: AlertView, kind: str, channel: str, key: str) -> None:
        with session_scope(self.engine) as session:
            repository.record_event(
                session,
                contact_id=view.alert.contact_id,
                type="sales_alert",
                name=channel,
                dedupe_key=key,
                properties={"kind": kind, "alert": view.alert.id, "owner": view.alert.owner},
                source="sales",
            )

    def _followed_up(self, alert_id: str, kind: str) -> None:
        with session_scope(self.engine) as session:
            alert_store.mark_followed_up(session, alert_id, kind)

    @activity.defn(name="deliver_lead_alert")
    async def deliver_lead_alert(self, inp: AlertDeliveryInput) -> AlertDeliveryResult:
        """Deliver one kind of an alert on its channels, once each (see the module docstring)."""
        if inp.kind not in ALERT_KINDS:
            raise ApplicationError(f"unknown alert kind {inp.kind!r}", non_retryable=True)
        try:
            view, done = await asyncio.to_thread(self._load, inp.alert_id)
        except NotFound as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None
        if inp.kind != "alert" and view.alert.state != "open":
            return AlertDeliveryResult(skipped=True)
        if self.client is not None:
            view = located(view, await current_steps(self.client, running_workflows(view)))
        result = AlertDeliveryResult()
        link = ack_url(self.settings, view.alert.id, secret=self.secret)
        for channel in dict.fromkeys(inp.channels):
            if channel == "crm" and inp.kind != "alert":
                continue  # the CRM hears of the lead once
            key = f"sales-alert:{view.alert.id}:{inp.kind}:{channel}"
            if key in done:
                result.delivered.append(channel)
                continue
            if channel == "email":
                problem = await self._email(view, inp.kind, link)
            elif channel in ("chat", "crm"):
                problem = await self._post(view, inp.kind, channel, link)
            else:
                problem = f"unknown alert channel {channel!r} (email, chat or crm)"
            if problem:
                result.problems.append(problem)
                continue
            await asyncio.to_thread(self._record, view, inp.kind, channel, key)
            result.delivered.append(channel)
        if result.delivered and inp.kind != "alert":
            await asyncio.to_thread(self._followed_up, view.alert.id, inp.kind)
        return result

    def _recipients(self, view: AlertView, kind: str) -> tuple[Person, list[Person]] | str:
        """(To, Cc) for this kind, or the problem why there is nobody to send to."""
        inbox = _person(self.workspace.config.sales.email)
        if kind == "escalation":
            to = view.team_lead or inbox
            if to is None:
                return (
                    f"no team lead for team {view.team_id or '(none)'} (sales.yaml: teams[].lead) "
                    "and no sales email (workspace.yaml: sales.email) to escalate to"
                )
            owner = view.owner
            cc = [owner] if owner is not None and owner[1].lower() != to[1].lower() else []
            return to, cc
        to = view.owner or inbox
        if to is None:
            return "no sales email is configured (workspace.yaml: sales.email) for an unowned alert"
        return to, []

    async def _email(self, view: AlertView, kind: str, link: str) -> str | None:
        recipients = self._recipients(view, kind)
        if isinstance(recipients, str):
            return recipients
        to, cc = recipients
        config = self.workspace.config
        content = AlertContent(
            kind=kind,
            reason=view.alert.reason,
            ack_url=link,
            workspace_name=config.name,
            owner=view.owner_shown,
            team=view.team_shown,
            raised_at=view.alert.created_at,
            fit_rules=view.fit_rules,
            timezone=config.timezone,
        )
        try:
            rendered = render_lead_alert(view.summary, content)
            data = build_alert_message(
                rendered,
                from_addr=config.from_,
                to=to,
                cc=cc,
                message_id=alert_message_id(view.alert.id, kind),
                domain=domain_of(config.from_),
                in_reply_to=alert_message_id(view.alert.id, "alert") if kind != "alert" else None,
            )
        except ValueError as exc:  # an address that cannot go in a header
            return f"sales {kind} email cannot be built: {exc}"
        try:
            await self.transport.send(
                sender=parseaddr(config.from_)[1],
                recipients=[to[1], *(address for _, address in cc)],
                data=data,
            )
        except PermanentSendError as exc:  # transient errors raise: Temporal retries
            return f"sales {kind} email to {to[1]} refused: {exc}"
        return None

    async def _post(self, view: AlertView, kind: str, channel: str, link: str) -> str | None:
        setting = "chat_webhook" if channel == "chat" else "crm_webhook"
        url = getattr(self.workspace.config.sales, setting)
        if not url:
            return f"no sales {channel} is configured (workspace.yaml: sales.{setting})"
        if channel == "chat":
            payload = chat_payload(view, kind, link)
            key = _idempotency_key("sales-alert", view.alert.id, kind, "chat")
        else:
            payload = crm_payload(view)
            key = _idempotency_key(view.alert.id)
        try:
            delivery = await post_json(
                str(url), payload, policy=self.policy, idempotency_key=key, secret=self.secret
            )
        except OutboundRefused as exc:  # OutboundRetryable raises on: Temporal retries
            return f"sales {channel} refused (workspace.yaml: sales.{setting}): {exc}"
        except (TypeError, ValueError) as exc:  # contact fields that are not JSON
            return f"sales {channel} payload cannot be sent: {exc}"
        if not delivery.ok:
            return f"sales {channel} answered {delivery.status}: {delivery.error}"
        return None
