"""Activities that reach people and systems outside the contact's inbox: the sales team
(``notify_sales``) and other systems (``call_webhook``).

Both are at-least-once: a delivery is recorded on the contact's timeline after it succeeded, and
a retry skips what is recorded; a crash between the two repeats one alert, which receivers can
drop by the ``Idempotency-Key`` header (webhooks) or the stable Message-ID (email). Losing a
sales alert is worse than repeating one. The full sales workflow (owners, reminders) is built on
this by the sales package.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio import activity

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, Event
from drip.settings import Settings
from emails import Renderer, TemplateError, domain_of
from emails.errors import PermanentSendError
from emails.sender import Transport
from workflows.outbound import OutboundPolicy, OutboundRefused, post_json
from workflows.types import NotifySalesInput, NotifySalesResult, WebhookInput, WebhookResult

__all__ = ["NotifyActivities", "outbound_policy"]


def outbound_policy(settings: Settings, workspace: Workspace) -> OutboundPolicy:
    """Where this workspace may POST: its allowlisted hosts, the operator's private networks."""
    verify: ssl.SSLContext | bool = True
    if settings.outbound_ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(settings.outbound_ca_bundle))
    return OutboundPolicy(
        allowed_hosts=frozenset(workspace.config.webhook_hosts),
        allowed_networks=tuple(settings.outbound_allow_networks),
        verify=verify,
    )


class NotifyActivities:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        workspace: Workspace,
        transport: Transport,
        renderer: Renderer,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.workspace = workspace
        self.transport = transport
        self.renderer = renderer
        self.policy = outbound_policy(settings, workspace)
        self.secret = settings.secret()

    def all(self) -> list[Any]:
        return [self.notify_sales, self.call_webhook]

    def _contact(self, contact_id: int) -> Contact:
        with session_scope(self.engine) as session:
            return repository.get_contact(session, contact_id)

    def _done(self, dedupe_key: str) -> bool:
        with session_scope(self.engine) as session:
            found = session.exec(select(Event.id).where(Event.dedupe_key == dedupe_key)).first()
            return found is not None

    def _record(
        self, contact_id: int, type_: str, name: str, dedupe_key: str, props: dict[str, Any]
    ) -> None:
        with session_scope(self.engine) as session:
            repository.record_event(
                session,
                contact_id=contact_id,
                type=type_,
                name=name,
                dedupe_key=dedupe_key,
                properties=props,
                source="journey",
            )

    @activity.defn(name="notify_sales")
    async def notify_sales(self, inp: NotifySalesInput) -> NotifySalesResult:
        """Tell the sales team about this lead on each configured channel, once each."""
        contact = await asyncio.to_thread(self._contact, inp.contact_id)
        sales = self.workspace.config.sales
        result = NotifySalesResult()
        try:
            text = self.renderer.render_note(
                inp.message, contact, what=f"{inp.campaign_id}/{inp.step_id}: message"
            )
        except TemplateError as exc:
            text = f"{contact.email}: {inp.message} (message template failed: {exc})"
            result.problems.append(f"message template: {exc}")
        for channel in inp.via:
            key = f"sales:{inp.key}:{channel}"
            if await asyncio.to_thread(self._done, key):
                result.delivered.append(channel)
                continue
            if channel == "email" and sales.email:
                problem = await self._email_sales(sales.email, contact, inp, text)
            elif channel == "chat" and sales.chat_webhook:
                problem = await self._chat(sales.chat_webhook, contact, inp, text)
            else:
                problem = f"no sales {channel} is configured (workspace.yaml: sales.{channel})"
            if problem:
                result.problems.append(problem)
                continue
            await asyncio.to_thread(
                self._record,
                inp.contact_id,
                "sales_alert",
                channel,
                key,
                {"campaign": inp.campaign_id, "step": inp.step_id, "message": text[:1000]},
            )
            result.delivered.append(channel)
        return result

    async def _email_sales(
        self, to: str, contact: Contact, inp: NotifySalesInput, text: str
    ) -> str | None:
        config = self.workspace.config
        domain = domain_of(config.from_)
        msg = EmailMessage()
        msg["From"] = config.from_
        msg["To"] = to
        msg["Subject"] = f"Lead: {contact.email} ({inp.campaign_id})"
        msg["Date"] = formatdate(usegmt=True)
        digest = hashlib.sha256(inp.key.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<sales-{digest}@{domain}>"
        msg["Auto-Submitted"] = "auto-generated"
        fields = "\n".join(f"  {k}: {v}" for k, v in sorted(contact.fields.items()))
        msg.set_content(
            f"{text}\n\nContact: {contact.email}\nScore: {contact.score}\n"
            f"Tags: {', '.join(contact.tags) or '-'}\nFields:\n{fields or '  -'}\n\n"
            f"Campaign {inp.campaign_id}, step {inp.step_id}.\n"
        )
        try:
            await self.transport.send(
                sender=parseaddr(config.from_)[1],
                recipients=[parseaddr(to)[1]],
                data=msg.as_bytes(policy=SMTP),
            )
        except PermanentSendError as exc:  # transient errors raise: the activity retries
            return f"sales email to {to} refused: {exc}"
        return None

    async def _chat(
        self, url: str, contact: Contact, inp: NotifySalesInput, text: str
    ) -> str | None:
        payload = {"text": f"{text}\n{contact.email} · score {contact.score} · {inp.campaign_id}"}
        try:
            delivery = await post_json(
                url,
                payload,
                policy=self.policy,
                idempotency_key=f"sales-{inp.key}".replace(" ", "_"),
                secret=self.secret,
            )
        except OutboundRefused as exc:
            return f"sales chat refused: {exc}"
        return None if delivery.ok else f"sales chat answered {delivery.status}: {delivery.error}"

    @activity.defn(name="call_webhook")
    async def call_webhook(self, inp: WebhookInput) -> WebhookResult:
        """POST the contact and journey to the step's URL (allowlisted hosts only). Refusals
        and 4xx are returned and recorded; timeouts and 5xx raise, so Temporal retries."""
        key = f"webhook:{inp.key}"
        if await asyncio.to_thread(self._done, key):
            return WebhookResult(status=None, error=None)
        contact = await asyncio.to_thread(self._contact, inp.contact_id)
        payload = {
            "type": "journey.webhook",
            "campaign": inp.campaign_id,
            "step": inp.step_id,
            "contact": {
                "id": contact.id,
                "email": contact.email,
                "fields": contact.fields,
                "tags": contact.tags,
                "score": contact.score,
                "status": str(contact.status),
            },
            "data": inp.body,
        }
        try:
            delivery = await post_json(
                inp.url,
                payload,
                policy=self.policy,
                idempotency_key=inp.key.replace(" ", "_"),
                secret=self.secret,
            )
            result = WebhookResult(status=delivery.status, error=delivery.error)
        except OutboundRefused as exc:
            result = WebhookResult(status=None, error=f"refused: {exc}")
        await asyncio.to_thread(
            self._record,
            inp.contact_id,
            "webhook",
            inp.step_id,
            key,
            {"url": inp.url, "status": result.status, "error": result.error},
        )
        return result
