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
import ssl
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio import activity

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, Event, utcnow
from drip.settings import Settings
from emails import Renderer, TemplateError
from emails.sender import Transport
from workflows.lifecycle import SalesPipeline, start_alerts
from workflows.outbound import OutboundPolicy, OutboundRefused, post_json
from workflows.sales_types import LeadAlertInput
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
        self.pipeline = SalesPipeline(workspace.sales)

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
        """Raise a lead alert for this contact, the same path a qualification takes: an owner
        is assigned if the contact has none, and the alert's follow-up workflow delivers it
        on the step's channels and reminds the owner until someone acknowledges."""
        contact = await asyncio.to_thread(self._contact, inp.contact_id)
        result = NotifySalesResult()
        try:
            text = self.renderer.render_note(
                inp.message, contact, what=f"{inp.campaign_id}/{inp.step_id}: message"
            )
        except TemplateError as exc:
            text = f"{contact.email}: {inp.message} (message template failed: {exc})"
            result.problems.append(f"message template: {exc}")
        reason = f"{inp.campaign_id}/{inp.step_id}: {text}"
        follow_up = await asyncio.to_thread(self._raise, inp, reason)
        if follow_up is not None:
            await start_alerts(activity.client(), self.settings, self.engine, [follow_up])
        result.delivered = list(inp.via)
        return result

    def _raise(self, inp: NotifySalesInput, reason: str) -> LeadAlertInput | None:
        with session_scope(self.engine) as session:
            contact = repository.get_contact(session, inp.contact_id, lock=True)
            return self.pipeline.raise_alert(
                session,
                contact,
                key=f"step:{inp.key}",
                reason=reason,
                channels=list(inp.via),
                now=utcnow(),
            )

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
