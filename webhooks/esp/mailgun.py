"""Mailgun webhooks (failed, complained, delivered) at ``POST /esp/mailgun``.

Mailgun signs inside the JSON body: ``signature.signature`` is the hex HMAC-SHA256 of
``signature.timestamp`` followed by ``signature.token``, keyed with the HTTP webhook signing key
(``esp_mailgun_signing_key``). A bad or missing signature is a 401; a valid one whose timestamp
is more than ``esp_max_age_seconds`` away from now is refused as a replay (403). The signature
does not cover the body, so inside that window a captured request could be reposted with other
``event-data`` and still verify: each token is therefore accepted once, by whichever API process
sees it first (``claim_signature``, remembered in the database), and a second request with it is
refused (409), whatever its body. That refuses no genuine retry: Mailgun retries a failed post
5 minutes later at the earliest, past the window, so a retry that is accepted at all carries a
new signature; its event is stored once per Mailgun event id.

``event-data.message.headers.message-id`` is our ``Message-ID`` (without the angle brackets),
which finds the message; else the recipient finds the contact. Failures: a ``temporary`` one is
a deferral (Mailgun retries and reports ``permanent`` when it gives up) and is ignored; a
``permanent`` one is hard or soft by its SMTP reply, the same table as our own refusals, except
that Mailgun suppressing an address it saw bounce (``suppress-bounce``) is hard and giving up
after retries (``old``) is soft.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from drip.settings import Settings
from webhooks.deps import EngineDep, GatewayDep, SettingsDep
from webhooks.esp import (
    EspEvent,
    EventKind,
    Rejected,
    accept,
    check_fresh,
    claim_signature,
    classify_refusal,
    malformed,
    not_enabled,
    parse_json,
    parse_time,
    read_body,
)

__all__ = ["router", "signature_of"]

router = APIRouter(prefix="/esp/mailgun", tags=["esp"])
log = logging.getLogger(__name__)


def signature_of(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


@router.post(
    "",
    summary="Mailgun failed, complained and delivered webhook (HMAC signed)",
    responses={400: {}, 401: {}, 403: {}, 404: {}, 409: {}, 413: {}, 503: {}},
)
async def mailgun(
    request: Request, settings: SettingsDep, engine: EngineDep, gateway: GatewayDep
) -> JSONResponse:
    try:
        if settings.esp_mailgun_signing_key is None:
            raise not_enabled("mailgun")
        payload = parse_json(await read_body(request))
        if not isinstance(payload, dict):
            raise malformed("a Mailgun webhook body is one JSON object")
        signed, token = _verify(payload.get("signature"), settings)
        await claim_signature(engine, settings, "mailgun", token, signed)
        data = payload.get("event-data")
        if not isinstance(data, dict):
            raise malformed("event-data is missing")
        event = _event(data)
    except Rejected as refused:
        return refused.response()
    if event is None:
        return await accept([], engine=engine, settings=settings, gateway=gateway, ignored=1)
    return await accept([event], engine=engine, settings=settings, gateway=gateway)


def _verify(signature: object, settings: Settings) -> tuple[float, str]:
    """(signed time, token) of a signature made with our key and fresh; else refused."""
    assert settings.esp_mailgun_signing_key is not None
    fields = signature if isinstance(signature, dict) else {}
    timestamp, token, given = (fields.get(k) for k in ("timestamp", "token", "signature"))
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not (isinstance(timestamp, str) and isinstance(token, str) and isinstance(given, str)):
        raise Rejected(401, "Invalid signature", "signature timestamp, token and signature needed")
    expected = signature_of(settings.esp_mailgun_signing_key.get_secret_value(), timestamp, token)
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise Rejected(401, "Invalid signature", "the signature does not match the signing key")
    return check_fresh(timestamp, settings), token


def _event(data: dict[str, Any]) -> EspEvent | None:
    name, event_id, recipient = data.get("event"), data.get("id"), data.get("recipient")
    if not isinstance(event_id, str) or not isinstance(recipient, str):
        raise malformed("event-data needs id and recipient")
    status = data.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    kind: EventKind | None
    if name == "delivered":
        kind = "delivered"
    elif name == "complained":
        kind = "complaint"
    elif name == "failed" and data.get("severity") == "permanent":
        kind = _failure_kind(str(data.get("reason", "")), status)
    else:
        log.info("mailgun %r (%r) ignored", name, data.get("severity"))
        return None
    if kind is None:
        return None
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    header_id = headers.get("message-id") if isinstance(headers, dict) else None
    reason = " ".join(
        str(status.get(k, "")) for k in ("code", "enhanced-code", "message", "description")
    ).strip()
    return EspEvent(
        provider="mailgun",
        event_id=event_id,
        kind=kind,
        recipient=recipient,
        header_message_id=header_id if isinstance(header_id, str) else "",
        occurred_at=parse_time(data.get("timestamp")),
        details={
            "event": str(name),
            "severity": str(data.get("severity", ""))[:40],
            "mailgun_reason": str(data.get("reason", ""))[:200],
            "reason": reason[:1000],
        },
    )


def _failure_kind(reason: str, status: dict[str, Any]) -> EventKind | None:
    if reason == "suppress-bounce":
        return "hard_bounce"
    if reason == "old":
        return "soft_bounce"
    code = status.get("code")
    text = f"{status.get('enhanced-code', '')} {status.get('message', '')} "
    text += str(status.get("description", ""))
    bounce = classify_refusal(
        text, code=code if isinstance(code, int) and not isinstance(code, bool) else None
    )
    if bounce is None:
        log.info("mailgun failure about our sender, not the recipient, ignored: %s", text[:200])
        return None
    return "hard_bounce" if bounce == "hard" else "soft_bounce"
