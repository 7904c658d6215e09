"""One transactional email (a receipt, a password reset) sent through the same path as every
other: the outbox row, suppression at send time, rendering, tracking, DKIM and the per-domain
pacing of the SMTP transport.

Why a workflow per message rather than an SMTP call from the API: the API answers at once and
the send survives a relay outage (Temporal retries a transient failure with the journeys'
backoff) and a domain's deferral (the workflow sleeps until the domain takes mail again). Its id
is ``tx:<message id>``, and the id reuse policy refuses a second start, so asking twice for the
same message sends it once; the outbox row (key ``tx:<message id>``) is what makes the send
itself at most once across crashes, as for a journey's email.

The category rule lives in the ``send_email`` activity (``SendEmailInput.transactional``): a
marketing unsubscribe, a pause or missing marketing consent do not stop the email; a bounced or
complained address, an erased contact and the suppression lists' addresses and domains do.
Attachments are stored in ``contacts.attachments`` before the workflow starts, never in its
history.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from sqlalchemy.engine import Engine
    from temporalio.client import Client
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from campaigns.workspace import Workspace
    from contacts import outbox
    from contacts.attachments import TX_CAMPAIGN, Attachment, store_attachments
    from contacts.db import session_scope
    from contacts.models import Contact, Message
    from drip.settings import Settings, get_settings
    from emails import domain_of, open_token
    from emails.message import check_attachment, check_sender
    from workflows.journey import SEND_RETRY
    from workflows.types import SendEmailInput, SendEmailResult

__all__ = [
    "TX_CAMPAIGN",
    "Attachment",
    "TransactionalEmail",
    "TransactionalInput",
    "TransactionalResult",
    "TxRequest",
    "start_transactional",
    "tx_workflow_id",
]

#: a message id becomes the ``Message-ID``'s left part and the outbox key: plain characters
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")


def tx_workflow_id(message_id: str) -> str:
    return f"tx:{message_id}"


@dataclass
class TxRequest:
    """One transactional email, as the API accepted it. ``message_id`` is the caller's (the
    API makes it, a UUID); ``attachments`` carry their bytes, which ``start_transactional``
    stores (their ``size`` and ``sha256`` are derived from the bytes)."""

    message_id: str
    contact_id: int
    template: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
    track: bool = True
    #: the call's own sender and reply-to, when it overrides the workspace's
    from_addr: str = ""
    reply_to: str = ""
    attachments: list[Attachment] = field(default_factory=list)


@dataclass
class TransactionalInput:
    """The workflow's input: ids, names and the template's data; attachments by count only."""

    message_id: str
    contact_id: int
    template: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
    track: bool = True
    from_addr: str = ""
    reply_to: str = ""
    attachments: int = 0


@dataclass
class TransactionalResult:
    """The outbox row's final state: ``sent``, ``failed``, ``suppressed`` or ``interrupted``."""

    message_id: str
    state: str
    error: str | None = None


@workflow.defn(name="TransactionalEmail")
class TransactionalEmail:
    @workflow.run
    async def run(self, inp: TransactionalInput) -> TransactionalResult:
        while True:
            result: SendEmailResult = await workflow.execute_activity(
                "send_email",
                SendEmailInput(
                    message_id=inp.message_id,
                    key=tx_workflow_id(inp.message_id),
                    workflow_id=workflow.info().workflow_id,
                    contact_id=inp.contact_id,
                    campaign_id=TX_CAMPAIGN,
                    campaign_version="",
                    step_id=inp.template,
                    template=inp.template,
                    subject=inp.subject,
                    track=inp.track,
                    from_addr=inp.from_addr,
                    reply_to=inp.reply_to,
                    now=workflow.now().isoformat(),
                    marketing=False,
                    consent_required=False,
                    transactional=True,
                    data=inp.data,
                    attachments=inp.attachments,
                ),
                result_type=SendEmailResult,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=SEND_RETRY,
            )
            if result.state != "deferred":
                return TransactionalResult(
                    message_id=result.message_id, state=result.state, error=result.error
                )
            # the recipient's domain holds mail back (its backoff, pace or warm-up cap): sleep
            # until it takes mail again, at least a minute so clocks that disagree never spin
            until = max(
                datetime.fromisoformat(result.retry_at), workflow.now() + timedelta(minutes=1)
            )
            await workflow.sleep(until - workflow.now())


def _check(req: TxRequest, workspace: Workspace) -> None:
    """Refuse now what the send could never write: a bad sender or attachment found only at
    send time would fail the activity on every retry."""
    if not _MESSAGE_ID.fullmatch(req.message_id):
        raise ValueError(f"message id {req.message_id!r}: letters, digits, '.', '_', '-' (<= 60)")
    if req.template not in workspace.templates:
        raise ValueError(f"no template {req.template!r} in the workspace")
    config = workspace.config
    check_sender(req.from_addr or config.from_, req.reply_to or config.reply_to)
    for attachment in req.attachments:
        check_attachment(attachment.filename, attachment.content_type)


async def start_transactional(
    client: Client,
    engine: Engine,
    workspace: Workspace,
    req: TxRequest,
    *,
    settings: Settings | None = None,
) -> None:
    """Record the message (its outbox row, ``pending``, and its attachments) and start its
    workflow. Idempotent: the same message again changes nothing and sends nothing more, so a
    caller may retry after any failure (the row is written before Temporal is asked, and a
    second start of ``tx:<message id>`` is refused and ignored).

    Raises ValueError for a request that cannot be sent (a message id unfit for a Message-ID,
    an unknown template or contact, ``contacts.attachments.AttachmentsTooLarge``).
    """
    settings = settings or get_settings()
    _check(req, workspace)
    with session_scope(engine) as session:
        if session.get(Contact, req.contact_id) is None:
            raise ValueError(f"no contact {req.contact_id}")
        outbox.reserve_message(
            session,
            Message(
                id=req.message_id,
                key=tx_workflow_id(req.message_id),
                contact_id=req.contact_id,
                campaign_id=TX_CAMPAIGN,
                campaign_version="",
                step_id=req.template,
                workflow_id=tx_workflow_id(req.message_id),
                template=req.template,
                subject=req.subject,
                open_token=open_token(settings.secret(), req.message_id),
                header_message_id=f"<{req.message_id}@{domain_of(workspace.config.from_)}>",
            ),
        )
        store_attachments(
            session,
            req.message_id,
            req.attachments,
            max_bytes=settings.tx_attachments_max_bytes,
        )
    # the same message asked for again: its workflow runs or ran
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            TransactionalEmail.run,
            TransactionalInput(
                message_id=req.message_id,
                contact_id=req.contact_id,
                template=req.template,
                subject=req.subject,
                data=req.data,
                track=req.track,
                from_addr=req.from_addr,
                reply_to=req.reply_to,
                attachments=len(req.attachments),
            ),
            id=tx_workflow_id(req.message_id),
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
