"""The checks and the send behind the transactional routes (``webhooks.admin.messages_tx``):
the per-key rate, the template's needs, attachments, the recipient's contact, and the start of
one message through ``workflows.transactional``. Each refusal is an ``AdminProblem``, so a
batch can file it under its recipient instead of answering with it.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from temporalio.client import Client

from contacts import outbox, repository
from contacts.attachments import Attachment
from contacts.db import session_scope
from contacts.errors import InvalidEmail, NotFound
from contacts.models import MarketingConsent, MessageState
from emails.data_check import TemplateNeeds
from webhooks._ratelimit import Limit, retry_after
from webhooks.admin._common import AdminProblem
from webhooks.admin._tx_models import AttachmentIn, MessageAccepted, Recipient
from webhooks.admin.auth import Caller
from workflows.transactional import TxRequest, start_transactional

__all__ = [
    "Sender",
    "client_of",
    "decode_attachments",
    "limit_rate",
    "missing_problem",
    "template_problem",
]

log = logging.getLogger(__name__)


async def limit_rate(request: Request, caller: Caller, per_minute: int) -> None:
    limit = Limit("tx api key", per_minute, 60.0)
    verdict = await run_in_threadpool(
        request.app.state.rate_limiter.hit, (limit, str(caller.key_id))
    )
    if not verdict.allowed:
        raise AdminProblem(
            429,
            "Too Many Requests",
            f"this API key may send {per_minute} requests a minute (DRIP_TX_RATE_PER_MINUTE)",
            headers={"Retry-After": retry_after(verdict.wait)},
        )


def template_problem(template: str, needs: TemplateNeeds) -> None:
    """A 422 for a template that cannot be sent whatever the data (unknown, broken)."""
    if needs.errors or needs.undefined:
        what = needs.errors + [f"{name} is not defined" for name in needs.undefined]
        raise AdminProblem(
            422,
            "Invalid request",
            f"template {template!r} cannot be sent: " + "; ".join(what),
            errors=[{"field": "template", "message": m} for m in what],
        )


def missing_problem(needs: TemplateNeeds, data: dict[str, Any], field: str) -> AdminProblem | None:
    missing = needs.missing(data)
    if not missing:
        return None
    return AdminProblem(
        422,
        "Missing template data",
        "the template reads "
        + ", ".join(f"data.{m}" for m in missing)
        + " but data lacks "
        + ("it" if len(missing) == 1 else "them"),
        missing=missing,
        errors=[{"field": f"{field}.{m}", "message": "the template needs it"} for m in missing],
    )


def decode_attachments(files: list[AttachmentIn], max_bytes: int) -> list[Attachment]:
    decoded: list[Attachment] = []
    for i, f in enumerate(files):
        try:
            content = base64.b64decode(f.content, validate=True)
        except (binascii.Error, ValueError):
            raise AdminProblem(
                422,
                "Invalid request",
                f"attachment {f.filename!r} is not valid base64",
                errors=[{"field": f"attachments.{i}.content", "message": "not base64"}],
            ) from None
        decoded.append(Attachment(f.filename, f.content_type, content))
    total = sum(a.size for a in decoded)
    if total > max_bytes:
        raise AdminProblem(
            413,
            "Content Too Large",
            f"attachments of {total} bytes exceed the {max_bytes}-byte limit "
            "(DRIP_TX_ATTACHMENTS_MAX_BYTES)",
        )
    return decoded


async def client_of(gateway: Any) -> Client:
    try:
        return await gateway.client()  # type: ignore[no-any-return]
    except Exception as exc:
        raise AdminProblem(
            503, "Service Unavailable", f"Temporal is unreachable ({type(exc).__name__})"
        ) from None


def _contact_id(engine: Any, to: Recipient, field: str) -> int:
    """The recipient's contact: the one with that id, or the address's (created without
    marketing consent, as the events API creates them: this email is no permission)."""
    with session_scope(engine) as session:
        if to.contact_id is not None:
            try:
                return repository.get_contact(session, to.contact_id).id or 0
            except NotFound:
                raise AdminProblem(
                    422,
                    "Invalid request",
                    f"there is no contact {to.contact_id}",
                    errors=[{"field": f"{field}.contact_id", "message": "no such contact"}],
                ) from None
        assert to.email is not None
        try:
            contact, _ = repository.upsert_contact(
                session, to.email, to.fields, created_consent=MarketingConsent.none
            )
        except (InvalidEmail, ValueError) as exc:
            raise AdminProblem(
                422,
                "Invalid request",
                str(exc),
                errors=[{"field": f"{field}.email", "message": str(exc)}],
            ) from None
        assert contact.id is not None
        return contact.id


def _not_started(engine: Any, message_id: str, exc: BaseException) -> None:
    with session_scope(engine) as session:
        outbox.finish_send(
            session,
            message_id,
            MessageState.failed,
            f"not sent: the send could not be started ({type(exc).__name__}); ask again",
        )


class Sender:
    """What every message of one request shares: the app's parts, the template, the client."""

    def __init__(
        self, engine: Any, settings: Any, workspace: Any, client: Client, *, keyed: bool = False
    ) -> None:
        self.engine, self.settings = engine, settings
        self.workspace, self.client = workspace, client
        #: the request has an Idempotency-Key: a retry with it finishes a send not started
        self.keyed = keyed

    async def send(
        self,
        message_id: str,
        to: Recipient,
        *,
        field: str,
        template: str,
        subject: str,
        data: dict[str, Any],
        track: bool,
        reply_to: str | None,
        attachments: list[Attachment],
    ) -> MessageAccepted:
        contact_id = await run_in_threadpool(_contact_id, self.engine, to, field)
        try:
            await start_transactional(
                self.client,
                self.engine,
                self.workspace,
                TxRequest(
                    message_id=message_id,
                    contact_id=contact_id,
                    template=template,
                    subject=subject,
                    data=data,
                    track=track,
                    reply_to=reply_to or "",
                    attachments=attachments,
                ),
                settings=self.settings,
            )
        except ValueError as exc:
            raise AdminProblem(422, "Invalid request", str(exc)) from None
        except Exception as exc:  # Temporal went away between connecting and starting
            log.warning("transactional %s: start failed: %s", message_id, exc)
            if not self.keyed:
                # nothing will ever send this row (no retry can name it): say so on it,
                # rather than leave it pending for good
                await run_in_threadpool(_not_started, self.engine, message_id, exc)
            raise AdminProblem(
                503, "Service Unavailable", f"the send could not be started ({type(exc).__name__})"
            ) from None
        return MessageAccepted(id=message_id, contact_id=contact_id)
