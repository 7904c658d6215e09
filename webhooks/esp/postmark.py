"""Postmark webhooks (bounce, spam complaint, delivery) at ``POST /esp/postmark``.

Postmark does not sign its webhooks: it authenticates them with HTTP basic auth in the webhook
URL (``https://user:password@mail.example.com/esp/postmark``), checked here against
``esp_postmark_user`` / ``esp_postmark_password``. With no signed timestamp there is nothing to
tell a replay from a retry by: the event's own time (``BouncedAt``) is when the bounce
happened, and Postmark retries a failed post for hours, so refusing old ones would drop real
bounces. Replays are harmless instead: each record is stored once per Postmark id (``ID``; for a
delivery, which has none, its ``MessageID`` and recipient), so a replay records nothing new.

Postmark reports its own ``MessageID``, not our ``Message-ID`` header, so events find the
contact by the recipient address.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
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
    malformed,
    not_enabled,
    parse_json,
    parse_time,
    read_body,
)

__all__ = ["BOUNCE_TYPES", "router"]

router = APIRouter(prefix="/esp/postmark", tags=["esp"])
log = logging.getLogger(__name__)

#: Postmark bounce ``Type`` -> what it means for the address; other types (auto-responders,
#: address changes, challenge mails, Postmark's own errors) say nothing about it and are ignored.
BOUNCE_TYPES: dict[str, EventKind] = {
    "HardBounce": "hard_bounce",
    "BadEmailAddress": "hard_bounce",
    "SoftBounce": "soft_bounce",
    "Transient": "soft_bounce",
    "DnsError": "soft_bounce",
    "Blocked": "soft_bounce",
    "SpamNotification": "soft_bounce",
    "DMARCPolicy": "soft_bounce",
    "SpamComplaint": "complaint",
}
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="drip ESP webhooks", charset="UTF-8"'}


@router.post(
    "",
    summary="Postmark bounce, spam complaint and delivery webhook (HTTP basic auth)",
    responses={401: {}, 404: {}, 413: {}, 400: {}},
)
async def postmark(
    request: Request, settings: SettingsDep, engine: EngineDep, gateway: GatewayDep
) -> JSONResponse:
    try:
        _authenticate(request, settings)
        record = parse_json(await read_body(request))
        if not isinstance(record, dict):
            raise malformed("a Postmark webhook body is one JSON object")
        event = _event(record)
    except Rejected as refused:
        return refused.response()
    if event is None:
        return await accept([], engine=engine, settings=settings, gateway=gateway, ignored=1)
    return await accept([event], engine=engine, settings=settings, gateway=gateway)


def _authenticate(request: Request, settings: Settings) -> None:
    if not settings.esp_postmark_user or settings.esp_postmark_password is None:
        raise not_enabled("postmark")
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    user = password = b""
    if scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, ValueError):
            user, _, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    expected_password = settings.esp_postmark_password.get_secret_value().encode()
    # both compared every time, in constant time
    user_ok = hmac.compare_digest(user, settings.esp_postmark_user.encode())
    password_ok = hmac.compare_digest(password, expected_password)
    if not (user_ok and password_ok):
        raise Rejected(
            401, "Unauthorized", "wrong or missing basic auth credentials", headers=_CHALLENGE
        )


def _event(record: dict[str, Any]) -> EspEvent | None:
    """The record in drip's terms, or None for one we have no use for."""
    record_type = record.get("RecordType")
    if record_type == "Delivery":
        recipient, message_id = record.get("Recipient"), record.get("MessageID")
        if not isinstance(recipient, str) or not isinstance(message_id, str) or not message_id:
            raise malformed("a Delivery needs Recipient and MessageID")
        return EspEvent(
            provider="postmark",
            event_id=f"delivery:{message_id}:{recipient.strip().lower()}",
            kind="delivered",
            recipient=recipient,
            occurred_at=parse_time(record.get("DeliveredAt")),
            details=_details(record, "Details", "ServerID", "MessageStream", "Tag"),
        )
    if record_type in ("Bounce", "SpamComplaint"):
        kind = BOUNCE_TYPES.get(str(record.get("Type", "")))
        bounce_id, recipient = record.get("ID"), record.get("Email")
        if isinstance(bounce_id, bool) or not isinstance(bounce_id, int | str):
            raise malformed(f"a {record_type} needs its ID")
        if not isinstance(recipient, str):
            raise malformed(f"a {record_type} needs Email")
        if kind is None:
            log.info("postmark bounce type %r ignored", record.get("Type"))
            return None
        return EspEvent(
            provider="postmark",
            event_id=str(bounce_id),
            kind=kind,
            recipient=recipient,
            occurred_at=parse_time(record.get("BouncedAt")),
            details={
                **_details(record, "Type", "TypeCode", "Description", "MessageID", "Tag"),
                "reason": str(record.get("Details", ""))[:1000],
            },
        )
    log.info("postmark record type %r ignored", record_type)
    return None


def _details(record: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named fields that are plain values, texts cut short."""
    kept: dict[str, Any] = {}
    for name in names:
        value = record.get(name)
        if isinstance(value, str):
            kept[name] = value[:1000]
        elif isinstance(value, int | float | bool):
            kept[name] = value
    return kept
