"""SendGrid's signed Event Webhook (bounce, dropped, spamreport, delivered) at
``POST /esp/sendgrid``.

SendGrid signs each post with ECDSA (P-256, SHA-256) over the ``X-Twilio-Email-Event-Webhook-
Timestamp`` header followed by the exact body bytes; the base64 DER signature is in
``X-Twilio-Email-Event-Webhook-Signature`` and the verification key (base64 DER, as SendGrid's
Mail Settings show it) is ``esp_sendgrid_public_key``. A bad or missing signature is a 401; a
valid one more than ``esp_max_age_seconds`` from now is refused as a replay (403). Inside the
window, a replay records nothing new: events are stored once per ``sg_event_id``.

The body is a batch: a JSON array of events. ``smtp-id`` carries our ``Message-ID`` when we
sent over SMTP, which finds the message; else the recipient finds the contact. ``bounce`` is hard
or soft by its status (the table of our own SMTP refusals), ``blocked`` is soft; ``dropped``
(SendGrid would not even try) counts only for addresses SendGrid knows to be bad or
complaining; ``spamreport`` is a complaint.
"""

from __future__ import annotations

import base64
import binascii
import logging
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from webhooks.esp import (
    EspEvent,
    EventKind,
    Rejected,
    accept,
    check_fresh,
    classify_refusal,
    malformed,
    not_enabled,
    parse_json,
    parse_time,
    read_body,
)

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "router"]

router = APIRouter(prefix="/esp/sendgrid", tags=["esp"])
log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: ``dropped`` reasons that say something about the address itself
_DROPPED: dict[str, EventKind] = {
    "bounced address": "hard_bounce",
    "invalid": "hard_bounce",
    "spam reporting address": "complaint",
}


@router.post(
    "",
    summary="SendGrid signed Event Webhook: bounces, drops, spam reports, deliveries",
    responses={400: {}, 401: {}, 403: {}, 404: {}, 413: {}, 503: {}},
)
async def sendgrid(
    request: Request, settings: SettingsDep, engine: EngineDep, gateway: GatewayDep
) -> JSONResponse:
    try:
        if not settings.esp_sendgrid_public_key.strip():
            raise not_enabled("sendgrid")
        key = _public_key(settings.esp_sendgrid_public_key.strip())
        body = await read_body(request)
        timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        _verify(key, request.headers.get(SIGNATURE_HEADER, ""), timestamp, body)
        check_fresh(timestamp, settings)
        batch = parse_json(body)
        if not isinstance(batch, list):
            raise malformed("a SendGrid webhook body is a JSON array of events")
    except Rejected as refused:
        return refused.response()
    events = [e for e in (_event(item) for item in batch) if e is not None]
    return await accept(
        events,
        engine=engine,
        settings=settings,
        gateway=gateway,
        ignored=len(batch) - len(events),
    )


@lru_cache(maxsize=4)
def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error, AttributeError) as exc:
        log.error("DRIP_ESP_SENDGRID_PUBLIC_KEY is not a public key: %s", exc)
        raise _misconfigured() from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        log.error("DRIP_ESP_SENDGRID_PUBLIC_KEY is not an elliptic-curve key")
        raise _misconfigured()
    return key


def _misconfigured() -> Rejected:
    return Rejected(
        503, "Service Unavailable", "the sendgrid webhook's verification key is misconfigured"
    )


def _verify(key: ec.EllipticCurvePublicKey, signature: str, timestamp: str, body: bytes) -> None:
    if not signature.strip() or not timestamp:
        raise Rejected(
            401, "Invalid signature", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} needed"
        )
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise Rejected(
            401, "Invalid signature", "the signature does not match the verification key"
        ) from None


def _event(item: object) -> EspEvent | None:
    """One array element in drip's terms, or None for events we do not use or cannot read
    (one odd element must not make SendGrid retry the whole, otherwise good, batch)."""
    if not isinstance(item, dict):
        return None
    name, event_id, recipient = item.get("event"), item.get("sg_event_id"), item.get("email")
    if not isinstance(event_id, str) or not isinstance(recipient, str):
        log.info("sendgrid %r event without sg_event_id or email ignored", name)
        return None
    reason = " ".join(str(item.get(k, "")) for k in ("status", "reason", "response")).strip()
    kind: EventKind | None = None
    if name == "delivered":
        kind = "delivered"
    elif name == "spamreport":
        kind = "complaint"
    elif name == "bounce":
        if item.get("type") == "blocked":
            kind = "soft_bounce"
        else:
            bounce = classify_refusal(reason)
            kind = None if bounce is None else "hard_bounce" if bounce == "hard" else "soft_bounce"
    elif name == "dropped":
        kind = _DROPPED.get(str(item.get("reason", "")).strip().lower())
    if kind is None:
        return None
    smtp_id = item.get("smtp-id")
    return EspEvent(
        provider="sendgrid",
        event_id=event_id,
        kind=kind,
        recipient=recipient,
        header_message_id=smtp_id if isinstance(smtp_id, str) else "",
        occurred_at=parse_time(item.get("timestamp")),
        details=_details(item, reason),
    )


def _details(item: dict[str, Any], reason: str) -> dict[str, Any]:
    details: dict[str, Any] = {"event": str(item.get("event")), "reason": reason[:1000]}
    for name in ("type", "sg_message_id", "bounce_classification"):
        value = item.get(name)
        if isinstance(value, str):
            details[name] = value[:300]
    return details
