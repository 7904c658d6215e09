"""The transactional API: ``POST /api/messages``, ``POST /api/messages/batch``,
``GET /api/messages/{id}`` (scope ``send``).

An app asks for one email (a receipt, a password reset) and gets 202 with the message id at
once; ``workflows.transactional`` sends it through the outbox, tracking, DKIM and the
per-domain pacing like every other email, in its own category (a marketing unsubscribe does
not stop it, a bounce or a complaint does). Before accepting, the route checks what it can:
the template exists, ``data`` holds every ``data.X`` the template and subject read without a
default (``emails.data_check``; a 422 names the missing keys, so the customer never gets a
receipt with a blank where the order number was), the attachments decode and fit
``DRIP_TX_ATTACHMENTS_MAX_BYTES`` (413), and the key is within ``DRIP_TX_RATE_PER_MINUTE``
(429 with ``Retry-After``).

``Idempotency-Key`` makes a retry safe (``contacts.idempotency``): the key is claimed with the
message ids the request will use *before* any work, so the same key and body get the first
answer (and send nothing more), even while the first request is still running or after it
failed half-way (the retry redoes the work under the same ids, and a message's start is
idempotent by its id); the same key with another body is a 409.

A batch (one template, up to 500 recipients, each with its own data) answers 202 once the batch
itself is valid, with one result per recipient: 202 and the message id, or the status and
problem that recipient alone would have got (a missing data key, an invalid address). Nothing
is all-or-nothing, so one bad address never holds back 499 receipts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlmodel import col, select
from temporalio.client import Client

from contacts import idempotency, repository
from contacts.attachments import Attachment, MessageAttachment
from contacts.db import session_scope
from contacts.errors import InvalidEmail, NotFound
from contacts.models import Event, MarketingConsent, Message
from emails.data_check import TemplateNeeds, needs_of
from webhooks._ratelimit import Limit, retry_after
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin._tx_models import (
    AttachmentIn,
    AttachmentPublic,
    BatchAccepted,
    BatchRequest,
    BatchResult,
    MessageAccepted,
    MessageEvent,
    MessagePublic,
    MessageRequest,
    Recipient,
)
from webhooks.admin.auth import Caller, Send
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
from workflows.transactional import TX_CAMPAIGN, TxRequest, start_transactional

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/messages", tags=["admin: transactional"], route_class=CappedRoute)

#: a body with attachments: their base64 (4/3 of the bytes) and the rest of the message
MAX_BODY = 16 * 1024 * 1024
#: messages of one batch started at once (each is a database transaction and a Temporal call)
BATCH_CONCURRENCY = 16

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=idempotency.MAX_KEY_CHARS,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (a UUID): a retry with the same key and body gets the "
        "first answer and sends nothing more; another body under the same key is a 409. Kept "
        "24 hours.",
    ),
]
_LOCATION = {
    "Location": {"description": "The message's URL (GET it)", "schema": {"type": "string"}}
}


async def _limit(request: Request, caller: Caller, per_minute: int) -> None:
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


def _template_problem(template: str, needs: TemplateNeeds) -> None:
    """A 422 for a template that cannot be sent whatever the data (unknown, broken)."""
    if needs.errors or needs.undefined:
        what = needs.errors + [f"{name} is not defined" for name in needs.undefined]
        raise AdminProblem(
            422,
            "Invalid request",
            f"template {template!r} cannot be sent: " + "; ".join(what),
            errors=[{"field": "template", "message": m} for m in what],
        )


def _missing_problem(needs: TemplateNeeds, data: dict[str, Any], field: str) -> AdminProblem | None:
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


def _decode(files: list[AttachmentIn], max_bytes: int) -> list[Attachment]:
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


async def _client(gateway: Any) -> Client:
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


class _Sender:
    """What every message of one request shares: the app's parts, the template, the client."""

    def __init__(
        self, request: Request, engine: Any, settings: Any, workspace: Any, client: Client
    ) -> None:
        self.engine, self.settings, self.workspace, self.client = (
            engine,
            settings,
            workspace,
            client,
        )
        self.request = request

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
            raise AdminProblem(
                503, "Service Unavailable", f"the send could not be started ({type(exc).__name__})"
            ) from None
        return MessageAccepted(id=message_id, contact_id=contact_id)


async def _idempotent(
    request: Request,
    engine: Any,
    caller: Caller,
    key: str | None,
    body: BaseModel,
    count: int,
    work: Any,
) -> JSONResponse:
    """Run ``work(message_ids)`` once per (API key, ``key``) and answer what it answered first."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    if key is None:
        status, answer, headers = await work(ids)
        return JSONResponse(answer, status_code=status, headers=headers)
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = idempotency.request_hash(request.method, request.url.path, canonical.encode())

    def claim() -> idempotency.Claim:
        with session_scope(engine) as session:
            idempotency.prune(session)
            return idempotency.claim(session, caller.key_id, key, digest, {"message_ids": ids})

    found = await run_in_threadpool(claim)
    if not found.matches(digest):
        raise AdminProblem(
            409,
            "Conflict",
            "this Idempotency-Key was used with another request; use a new key for a new one",
        )
    if found.status is not None and found.body is not None:
        return JSONResponse(found.body, status_code=found.status, headers=_headers_of(found.body))
    try:
        status, answer, headers = await work(list(found.reserved["message_ids"]))
    except AdminProblem as exc:
        if exc.status < 500:  # refused before anything was sent: the key is free again

            def free() -> None:
                with session_scope(engine) as session:
                    idempotency.forget(session, caller.key_id, key)

            await run_in_threadpool(free)
        # a 503 keeps the claim: the retry redoes the work under the same message ids
        raise

    def keep() -> None:
        with session_scope(engine) as session:
            idempotency.record_answer(session, caller.key_id, key, status, answer)

    await run_in_threadpool(keep)
    return JSONResponse(answer, status_code=status, headers=headers)


def _headers_of(answer: dict[str, Any]) -> dict[str, str]:
    message_id = answer.get("id")
    return {"Location": f"/api/messages/{message_id}"} if isinstance(message_id, str) else {}


@router.post(
    "",
    summary="Send one transactional email (answers 202 at once; the worker sends it)",
    status_code=202,
    response_model=MessageAccepted,
    responses={
        202: {"description": "Accepted: the message's id", "headers": _LOCATION},
        **problems(409, 413, 429, 503),
    },
    openapi_extra={"x-max-body-bytes": MAX_BODY},
)
async def send_message(
    request: Request,
    body: MessageRequest,
    caller: Send,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    workspace: WorkspaceDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    await _limit(request, caller, settings.tx_rate_per_minute)
    needs = needs_of(workspace, body.template, body.subject)
    _template_problem(body.template, needs)
    if (problem := _missing_problem(needs, body.data, "data")) is not None:
        raise problem
    attachments = _decode(body.attachments, settings.tx_attachments_max_bytes)

    async def work(ids: list[str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        sender = _Sender(request, engine, settings, workspace, await _client(gateway))
        accepted = await sender.send(
            ids[0],
            body.to,
            field="to",
            template=body.template,
            subject=body.subject,
            data=body.data,
            track=body.track,
            reply_to=body.reply_to,
            attachments=attachments,
        )
        answer = accepted.model_dump(mode="json")
        return 202, answer, _headers_of(answer)

    return await _idempotent(request, engine, caller, idempotency_key, body, 1, work)


@router.post(
    "/batch",
    summary="Send one template to up to 500 recipients, each with its own data",
    status_code=202,
    response_model=BatchAccepted,
    responses={
        202: {"description": "The batch was valid: one result per recipient"},
        **problems(409, 413, 429, 503),
    },
    openapi_extra={"x-max-body-bytes": MAX_BODY},
)
async def send_batch(
    request: Request,
    body: BatchRequest,
    caller: Send,
    engine: EngineDep,
    gateway: GatewayDep,
    settings: SettingsDep,
    workspace: WorkspaceDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    await _limit(request, caller, settings.tx_rate_per_minute)
    needs = needs_of(workspace, body.template, body.subject)
    _template_problem(body.template, needs)

    async def work(ids: list[str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        sender = _Sender(request, engine, settings, workspace, await _client(gateway))
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(index: int) -> BatchResult:
            recipient = body.recipients[index]
            field = f"recipients.{index}"
            try:
                if (
                    problem := _missing_problem(needs, recipient.data, f"{field}.data")
                ) is not None:
                    raise problem
                async with gate:
                    accepted = await sender.send(
                        ids[index],
                        recipient,
                        field=field,
                        template=body.template,
                        subject=body.subject,
                        data=recipient.data,
                        track=body.track,
                        reply_to=body.reply_to,
                        attachments=[],
                    )
            except AdminProblem as exc:
                problem_body = json.loads(bytes(exc.response().body))
                return BatchResult(index=index, status=exc.status, problem=problem_body)
            return BatchResult(
                index=index, status=202, id=accepted.id, contact_id=accepted.contact_id
            )

        results = await asyncio.gather(*(one(i) for i in range(len(body.recipients))))
        accepted = sum(1 for r in results if r.status == 202)
        answer = BatchAccepted(accepted=accepted, rejected=len(results) - accepted, results=results)
        return 202, answer.model_dump(mode="json", exclude_none=True), {}

    return await _idempotent(
        request, engine, caller, idempotency_key, body, len(body.recipients), work
    )


@router.get(
    # a UUID, so /messages/batch and /messages/interrupted are never taken for an id
    "/{message_id:uuid}",
    summary="A transactional email's state, error, send time and events (opens, clicks...)",
    response_model=MessagePublic,
    responses=problems(404),
)
async def get_message(
    message_id: uuid.UUID,
    _: Send,
    engine: EngineDep,
) -> MessagePublic:
    def read() -> MessagePublic | None:
        with session_scope(engine) as session:
            message = session.get(Message, str(message_id))
            if message is None or message.campaign_id != TX_CAMPAIGN:
                return None
            files = session.exec(
                select(MessageAttachment)
                .where(MessageAttachment.message_id == str(message_id))
                .order_by(col(MessageAttachment.position))
            ).all()
            events = session.exec(
                select(Event)
                .where(Event.message_id == str(message_id))
                .order_by(col(Event.occurred_at), col(Event.id))
                .limit(1000)
            ).all()
            return MessagePublic(
                id=message.id,
                contact_id=message.contact_id,
                template=message.template,
                subject=message.subject,
                state=str(message.state),
                error=message.error,
                created_at=message.created_at,
                sent_at=message.sent_at,
                attachments=[
                    AttachmentPublic.model_validate(f, from_attributes=True) for f in files
                ],
                events=[
                    MessageEvent(
                        id=e.id or 0,
                        type=e.type,
                        name=e.name,
                        occurred_at=e.occurred_at,
                        properties=e.properties,
                    )
                    for e in events
                ],
            )

    found = await run_in_threadpool(read)
    if found is None:
        raise AdminProblem(404, "Not Found", f"no transactional message {message_id}")
    return found
