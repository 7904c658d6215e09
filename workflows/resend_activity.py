"""The ``resend_message`` activity, and how the command line, the dashboard and the API ask for
resends (``request_resends``).

The email is rebuilt, not replayed from stored bytes (the outbox keeps none): the same outbox
row, so the same ``Message-ID`` (it derives from the row's id), the same open and click tokens
and the same campaign version's step (its deployed template files, subject, sender, UTM),
rendered for the contact as they are now; only the ``Date`` header (and a DKIM signature's
time) is new. It then goes through the journeys'
own ``send_email`` path, so suppression, the SMTP pool, pacing, DKIM and bounce handling are
the same as for any email.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from campaigns.broadcasts import BroadcastPlan
from contacts import deploys, outbox
from contacts.broadcast_events import is_broadcast
from contacts.broadcast_models import BroadcastSend
from contacts.db import session_scope
from contacts.interrupted import claim_resend, resend_refusal
from contacts.models import CampaignVersion, Message, MessageState
from workflows.activities import JourneyActivities
from workflows.deploy import plan_of
from workflows.heartbeat import heartbeating
from workflows.resend import ResendInput, ResendResult, ResendWorkflow, resend_workflow_id
from workflows.types import SendEmailInput

__all__ = ["ResendActivities", "ResendOutcome", "request_resends"]

#: what a person is told before any resend: the first copy may already be in the inbox
DUPLICATE_WARNING = (
    "The recipient may receive this email twice: the relay may have accepted the first "
    "attempt before the connection was lost, and nothing can tell. The resend is the same "
    "message (same Message-ID), but most mail clients will still show both."
)


class ResendActivities:
    """The resend activity, sharing the journey activities' engine, renderer and transport."""

    def __init__(self, journey: JourneyActivities) -> None:
        self.journey = journey
        self.engine = journey.engine

    def all(self) -> list[Callable[..., object]]:
        return [self.resend_message]

    @activity.defn(name="resend_message")
    async def resend_message(self, inp: ResendInput) -> ResendResult:
        """Claim the row (once), then send it as a journey would. Retried forever on
        transient SMTP errors; the claim makes every retry carry on the same single resend."""
        async with heartbeating(every=2.0):
            prepared = await asyncio.to_thread(self._prepare, inp)
            if isinstance(prepared, ResendResult):
                return prepared
            sent = await self.journey.send_email(prepared)
            return ResendResult(
                message_id=inp.message_id,
                state=sent.state,
                error=sent.error,
                retry_at=sent.retry_at,
            )

    def _prepare(self, inp: ResendInput) -> SendEmailInput | ResendResult:
        with session_scope(self.engine) as session:
            claim = claim_resend(session, inp.message_id, by=inp.requested_by)
            if claim.refused:
                return ResendResult(inp.message_id, "refused", claim.refused)
            if claim.send is None:
                return ResendResult(inp.message_id, claim.state, claim.error)
            row = claim.send
            if is_broadcast(row.campaign_id):
                return _broadcast_input(session, row)
            version = deploys.find_version(session, row.campaign_id, row.campaign_version)
            if version is None or row.step_id not in version.plan.get("steps", {}):
                why = (
                    f"cannot rebuild the email: version {row.campaign_version or '?'} of "
                    f"campaign {row.campaign_id} (step {row.step_id}) is not in the database"
                )
                outbox.finish_send(session, row.id, MessageState.failed, why)
                return ResendResult(inp.message_id, MessageState.failed.value, why)
            return _send_input(row, version)


def _send_input(row: Message, version: CampaignVersion) -> SendEmailInput:
    """The ``send_email`` input the journey gave for this row, from its version's plan: same
    id and key (so the outbox row is found, not a new one made), same step. No frequency cap
    (the operator decided) and this machine's clock."""
    plan = plan_of(version)
    step = plan.step(row.step_id)
    return SendEmailInput(
        message_id=row.id,
        key=row.key,
        workflow_id=row.workflow_id,
        contact_id=row.contact_id,
        campaign_id=row.campaign_id,
        campaign_version=row.campaign_version,
        step_id=row.step_id,
        template=step.template,
        subject=step.subject,
        preheader=step.preheader,
        track=step.track,
        from_addr=step.from_addr,
        reply_to=step.reply_to,
        utm=plan.utm_for(step.id),
        marketing=plan.marketing,
        consent_required=plan.consent_required,
    )


def _broadcast_input(session: Session, row: Message) -> SendEmailInput | ResendResult:
    """A broadcast email's ``send_email`` input, from its send's plan (the variant it got).
    The template renders from the workspace's files: broadcast sends record theirs for their
    batches, not as a deployed campaign version."""
    send = session.get(BroadcastSend, row.workflow_id)
    if send is None:
        why = f"cannot rebuild the email: broadcast send {row.workflow_id} is not in the database"
        outbox.finish_send(session, row.id, MessageState.failed, why)
        return ResendResult(row.id, MessageState.failed.value, why)
    plan = BroadcastPlan.from_dict(send.plan)
    variant = next((v for v in plan.variants if v["id"] == row.step_id), None)
    utm = dict(plan.utm)
    if utm and not utm.get("content"):
        utm["content"] = row.step_id
    return SendEmailInput(
        message_id=row.id,
        key=row.key,
        workflow_id=row.workflow_id,
        contact_id=row.contact_id,
        campaign_id=row.campaign_id,
        campaign_version=row.campaign_version,
        step_id=row.step_id,
        template=variant["template"] if variant else plan.template,
        subject=variant["subject"] if variant else plan.subject,
        preheader=variant["preheader"] if variant else plan.preheader,
        track=plan.track,
        from_addr=plan.from_addr,
        reply_to=plan.reply_to,
        utm=utm,
    )


@dataclass(frozen=True)
class ResendOutcome:
    """What became of one requested resend: ``sent``, ``failed``, ``suppressed``, ``refused``
    (nothing was done), or ``queued`` (the worker has it but did not finish within the wait:
    an SMTP outage, a contact who paused their emails, no worker running)."""

    message_id: str
    state: str
    detail: str = ""


async def request_resends(
    client: Client,
    engine: Engine,
    message_ids: Sequence[str],
    *,
    requested_by: str,
    task_queue: str,
    wait: float = 30.0,
) -> list[ResendOutcome]:
    """Start (or join) one resend workflow per message that may be resent, and wait up to
    ``wait`` seconds in all for them; a message that may not (never interrupted, or resent
    already) is refused here without starting anything."""

    def refusals() -> dict[str, str]:
        with session_scope(engine) as session:
            return {mid: resend_refusal(session.get(Message, mid), mid) for mid in message_ids}

    refused = await asyncio.to_thread(refusals)
    outcomes: dict[str, ResendOutcome] = {
        mid: ResendOutcome(mid, "refused", why) for mid, why in refused.items() if why
    }
    handles: dict[str, WorkflowHandle[ResendWorkflow, ResendResult]] = {}
    for mid in message_ids:
        if mid in outcomes or mid in handles:
            continue
        workflow_id = resend_workflow_id(mid)
        try:
            handles[mid] = await client.start_workflow(
                ResendWorkflow.run,
                ResendInput(message_id=mid, requested_by=requested_by),
                id=workflow_id,
                task_queue=task_queue,
                # a resend that finished is never started again (the row refuses it anyway);
                # one that failed as a workflow (terminated by hand) may be asked for again
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            handles[mid] = client.get_workflow_handle_for(ResendWorkflow.run, workflow_id)
    tasks = {mid: asyncio.ensure_future(h.result()) for mid, h in handles.items()}
    if tasks:
        await asyncio.wait(tasks.values(), timeout=wait)
    for mid, task in tasks.items():
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            outcomes[mid] = ResendOutcome(
                mid,
                "queued",
                f"not finished within {wait:g} s; the worker keeps trying (see "
                "`drip messages interrupted` and the contact's timeline)",
            )
        elif task.exception() is not None:
            outcomes[mid] = ResendOutcome(
                mid, "error", f"the resend workflow failed: {task.exception()}"
            )
        else:
            result = task.result()
            outcomes[mid] = ResendOutcome(mid, result.state, result.error or "")
    return [outcomes[mid] for mid in dict.fromkeys(message_ids)]
