"""ESP webhooks: what every provider module shares.

Each provider (``postmark``, ``mailgun``, ``sendgrid``) authenticates its request its own way
and turns its payload into ``EspEvent``; ``accept`` then records them the same way for all:

- a bounce or complaint goes through ``contacts.repository.record_bounce`` (the one
  suppression rule, shared with SMTP refusals), a delivery is recorded as a ``delivered``
  event; either is keyed ``esp:{provider}:{provider event id}``, so an ESP retrying or
  replaying the same event gives one row and changes nothing twice;
- the message is found by our own ``Message-ID`` when the ESP reports it (``<{message
  id}@{domain}>``), else the contact by the recipient address;
- a bounce marks the outbox message ``failed`` with the reason;
- newly recorded events are routed to journeys (a hard bounce or complaint ends the contact's
  running journeys), or left for the worker's sweep if Temporal is away.

A provider whose signature does not cover the body (Mailgun) also has each signature token
accepted once (``claim_signature``): its signature alone cannot tell a replay with other event
data from the original. Where the signature covers the body (SendGrid, SNS for SES), a replay
inside the freshness window is the same events, which the dedupe keys store once.

Answers: 200 with counts once the events are stored, also for events about addresses we do not
know or kinds we do not use (ESPs retry any other answer for days); 4xx problem JSON for a
request that is not from the ESP, replays a used signature or cannot be read; 503 when the
database is unavailable, so the ESP retries later. Never a 500 for anything a client sends.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session

from contacts import cleaning, outbox, repository, webhook_tokens
from contacts.db import session_scope
from contacts.errors import InvalidEmail
from contacts.models import Message, MessageState, utcnow
from drip.settings import Settings
from emails.errors import Bounce
from emails.sender import bounce_kind
from webhooks.journeys import JourneyGateway
from webhooks.problems import problem

__all__ = [
    "MAX_BODY_BYTES",
    "EspEvent",
    "EventKind",
    "Rejected",
    "accept",
    "check_fresh",
    "claim_signature",
    "classify_refusal",
    "malformed",
    "not_enabled",
    "parse_json",
    "parse_time",
    "read_body",
]

log = logging.getLogger(__name__)

#: Largest request body read (SendGrid batches up to 768 KB of events).
MAX_BODY_BYTES = 1 << 20
#: Longest provider event id kept (the dedupe key column holds 200 characters).
_MAX_EVENT_ID = 150

EventKind = Literal["hard_bounce", "soft_bounce", "complaint", "delivered"]
_BOUNCE_KINDS: dict[EventKind, repository.BounceKind] = {
    "hard_bounce": "hard",
    "soft_bounce": "soft",
    "complaint": "complaint",
}


@dataclass(frozen=True)
class EspEvent:
    """One provider event about one recipient, in drip's terms."""

    provider: str
    event_id: str
    kind: EventKind
    recipient: str
    #: the ``Message-ID`` the ESP reports, with or without angle brackets ("" if none)
    header_message_id: str = ""
    occurred_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Rejected(Exception):
    """A request refused before anything is recorded; becomes a problem JSON answer."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        answer = problem(self.status, self.title, self.detail)
        answer.headers.update(self.headers)
        return answer


def not_enabled(provider: str) -> Rejected:
    return Rejected(404, "Not Found", f"the {provider} webhook is not enabled on this server")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body (signatures are over the exact bytes), refused past ``limit`` bytes
    without reading the rest."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Rejected:
    return Rejected(413, "Content Too Large", f"webhook bodies are limited to {limit} bytes")


def parse_json(body: bytes) -> Any:
    import json

    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected(400, "Bad Request", "the body is not valid JSON") from None


def malformed(detail: str) -> Rejected:
    return Rejected(400, "Bad Request", detail)


def check_fresh(timestamp: object, settings: Settings, *, now: float | None = None) -> float:
    """Refuse a signed timestamp (Unix seconds) further than ``esp_max_age_seconds`` from now,
    in either direction: an old signed request is a replay, not a retry (ESPs sign each
    attempt afresh). Returns the timestamp."""
    try:
        signed = float(str(timestamp).strip())
    except ValueError:
        signed = math.nan
    if not math.isfinite(signed):
        raise Rejected(401, "Invalid signature", "the signature timestamp is not a number")
    age = (time.time() if now is None else now) - signed
    if abs(age) > settings.esp_max_age_seconds:
        raise Rejected(
            403,
            "Stale webhook",
            f"signed {age:.0f} s from now; requests more than "
            f"{settings.esp_max_age_seconds:.0f} s old (or ahead) are refused as replays",
        )
    return signed


async def claim_signature(
    engine: Engine, settings: Settings, provider: str, token: str, signed: float
) -> None:
    """Refuse (409) a signature token already accepted, by any API process; else remember it.

    For providers whose signature does not cover the body (Mailgun signs only its timestamp
    and token), the token is what makes a signed request single-use: without this, a captured
    request reposted inside the freshness window with other event data would verify. Claimed
    before the body is read any further, so every signed request uses up its token, whatever
    it holds; tokens past the freshness window are forgotten (``check_fresh`` refuses them).
    """
    signed_at = datetime.fromtimestamp(signed, UTC)
    try:
        fresh = await run_in_threadpool(_claim, engine, settings, provider, token, signed_at)
    except Exception:
        log.exception("%s signature token not checked; the provider will retry", provider)
        raise Rejected(
            503, "Service Unavailable", "the webhook could not be checked now; retry later"
        ) from None
    if not fresh:
        raise Rejected(
            409,
            "Replayed webhook",
            f"this {provider} signature token was used before; each signed request is "
            "accepted once",
        )


def _claim(
    engine: Engine, settings: Settings, provider: str, token: str, signed_at: datetime
) -> bool:
    with session_scope(engine) as session:
        fresh = webhook_tokens.claim_token(session, provider, token, signed_at)
    if fresh:  # the claim is committed first: pruning never delays or undoes it
        oldest = utcnow() - timedelta(seconds=settings.esp_max_age_seconds)
        try:
            with session_scope(engine) as session:
                webhook_tokens.prune_tokens(session, oldest)
        except Exception:  # the next request prunes them
            log.warning("old %s signature tokens not pruned", provider, exc_info=True)
    return fresh


def parse_time(value: object) -> datetime | None:
    """An ESP's event time (ISO 8601 text or Unix seconds) as aware UTC, or None."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str) and value:
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


_REPLY_CODE = re.compile(r"\b(5\d\d)\b")
_ENHANCED_CODE = re.compile(r"\b(5\.\d{1,3}\.\d{1,3})\b")


def classify_refusal(
    text: str, *, code: int | None = None, default: Bounce = "hard"
) -> Bounce | None:
    """Hard, soft or None (about our sender, not the address) for an ESP's report of a
    permanent refusal, by the same table as our own SMTP refusals (``bounce_kind``); without
    any code in the report, ``default``."""
    enhanced = _ENHANCED_CODE.search(text)
    if code is None or not 500 <= code <= 599:
        reply = _REPLY_CODE.search(text)
        code = int(reply.group(1)) if reply else None
    if code is None and enhanced is None:
        return default
    message = f"{enhanced.group(1)} {text}" if enhanced else text
    return bounce_kind(code or 550, message, stage="rcpt")


@dataclass
class _Outcome:
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0
    to_route: list[int] = field(default_factory=list)


async def accept(
    events: Sequence[EspEvent],
    *,
    engine: Engine,
    settings: Settings,
    gateway: JourneyGateway,
    ignored: int = 0,
) -> JSONResponse:
    """Record ``events`` and route what is new; 200 with counts (``ignored``: events the
    provider module already skipped as of no use to us)."""
    try:
        outcome = await run_in_threadpool(_record_all, engine, settings, events)
    except Exception:
        log.exception("ESP events not recorded; the provider will retry")
        return problem(
            503, "Service Unavailable", "the events could not be stored now; retry later"
        )
    for event_id in outcome.to_route:
        await gateway.route(event_id)
    return JSONResponse(
        {
            "received": len(events) + ignored,
            "recorded": outcome.recorded,
            "duplicates": outcome.duplicates,
            "ignored": outcome.ignored + ignored,
        }
    )


def _record_all(engine: Engine, settings: Settings, events: Sequence[EspEvent]) -> _Outcome:
    outcome = _Outcome()
    for event in events:
        with session_scope(engine) as session:
            _record(session, settings, event, outcome)
    return outcome


def _record(session: Session, settings: Settings, event: EspEvent, outcome: _Outcome) -> None:
    if not event.event_id.strip():
        log.warning("%s event without an id ignored", event.provider)
        outcome.ignored += 1
        return
    message = _find_message(session, event.header_message_id)
    contact_id = message.contact_id if message is not None else _contact_id(session, event)
    if contact_id is None:
        log.info("%s %s for an unknown recipient ignored", event.provider, event.kind)
        outcome.ignored += 1
        return
    # A provider's report is not ours to refuse (it would retry it for days): what the database
    # cannot hold or the dashboard must not show (NUL, lone surrogates, bidi overrides) is
    # repaired, the way ``drip db check --repair`` would, and logged.
    key_id, _ = cleaning.repair_text(event.event_id, multiline=False)
    if len(key_id) > _MAX_EVENT_ID:  # still one key per id, within the column
        key_id = "sha256:" + hashlib.sha256(key_id.encode()).hexdigest()
    dedupe_key = f"esp:{event.provider}:{key_id}"
    properties, repaired = cleaning.repair_json(
        {
            **event.details,
            "provider": event.provider,
            "provider_event_id": event.event_id[:500],
            "recipient": event.recipient[:320],
        }
    )
    if repaired:
        log.warning(
            "%s event %r: stored with %s",
            event.provider,
            key_id,
            "; ".join(f"{path}: {problem}" for path, problem in repaired),
        )
    source = f"esp:{event.provider}"
    before = len(outcome.to_route)
    if event.kind == "delivered":
        recorded, created = repository.record_event(
            session,
            contact_id=contact_id,
            type="delivered",
            name=message.step_id if message is not None else "",
            dedupe_key=dedupe_key,
            properties=properties,
            source=source,
            message_id=message.id if message is not None else None,
            occurred_at=event.occurred_at,
        )
        if created and recorded.id is not None:
            outcome.to_route.append(recorded.id)
    else:
        repository.record_bounce(
            session,
            contact_id=contact_id,
            kind=_BOUNCE_KINDS[event.kind],
            dedupe_key=dedupe_key,
            soft_limit=settings.soft_bounce_limit,
            message_id=message.id if message is not None else None,
            source=source,
            properties=properties,
            occurred_at=event.occurred_at,
            recorded=outcome.to_route,
        )
    if len(outcome.to_route) == before:
        outcome.duplicates += 1
        return
    outcome.recorded += 1
    bounced = event.kind in ("hard_bounce", "soft_bounce")
    if message is not None and bounced and message.state == MessageState.sent:
        # the relay took it, the recipient's server did not: the message failed after all
        reason = str(properties.get("reason", ""))[:1500]
        error = f"{event.provider} reported a {event.kind.replace('_', ' ')}: {reason}"
        outbox.finish_send(session, message.id, MessageState.failed, error.rstrip(": "))


def _find_message(session: Session, header_message_id: str) -> Message | None:
    """Our outbox message for a reported ``Message-ID``: ``<{message id}@{domain}>``, looked
    up by its primary key and checked against the stored header."""
    bare = header_message_id.strip().strip("<>").strip()
    local, at, _ = bare.partition("@")
    if not at or not local or len(local) > 64:
        return None
    message = outbox.get_message(session, local)
    if message is None or message.header_message_id.strip("<>").lower() != bare.lower():
        return None
    return message


def _contact_id(session: Session, event: EspEvent) -> int | None:
    try:
        contact = repository.get_contact_by_email(session, event.recipient)
    except InvalidEmail:
        return None
    return contact.id if contact is not None else None
