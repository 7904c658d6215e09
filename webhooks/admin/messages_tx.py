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
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlmodel import col, select

from contacts import idempotency
from contacts.attachments import MessageAttachment
from contacts.db import session_scope
from contacts.models import Event, Message
from emails.data_check import needs_of
from webhooks.admin._common import AdminProblem, CappedRoute, problems
from webhooks.admin._tx_models import (
    AttachmentPublic,
    BatchAccepted,
    BatchRequest,
    BatchResult,
    MessageAccepted,
    MessageEvent,
    MessagePublic,
    MessageRequest,
)
from webhooks.admin._tx_send import (
    Sender,
    client_of,
    decode_attachments,
    limit_rate,
    missing_problem,
    template_problem,
)
from webhooks.admin.auth import Caller, Send
from webhooks.deps import EngineDep, GatewayDep, SettingsDep, WorkspaceDep
from workflows.transactional import TX_CAMPAIGN

__all__ = ["router"]

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
    await limit_rate(request, caller, settings.tx_rate_per_minute)
    needs = needs_of(workspace, body.template, body.subject)
    template_problem(body.template, needs)
    if (problem := missing_problem(needs, body.data, "data")) is not None:
        raise problem
    attachments = decode_attachments(body.attachments, settings.tx_attachments_max_bytes)

    async def work(ids: list[str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        sender = Sender(
            engine, settings, workspace, await client_of(gateway), keyed=bool(idempotency_key)
        )
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
    await limit_rate(request, caller, settings.tx_rate_per_minute)
    needs = needs_of(workspace, body.template, body.subject)
    template_problem(body.template, needs)

    async def work(ids: list[str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        sender = Sender(
            engine, settings, workspace, await client_of(gateway), keyed=bool(idempotency_key)
        )
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(index: int) -> BatchResult:
            recipient = body.recipients[index]
            field = f"recipients.{index}"
            try:
                if (problem := missing_problem(needs, recipient.data, f"{field}.data")) is not None:
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
