"""Amazon SES bounces, complaints and deliveries through SNS at ``POST /esp/ses``.

SES publishes to an SNS topic, and SNS posts each message here, signed: ``Signature`` is an RSA
signature (SHA1 for ``SignatureVersion`` 1, SHA256 for 2) over the message's fields in a fixed
order, made with the key of the certificate at ``SigningCertURL``. We check, in order:

- the topic is one we subscribed (``esp_ses_topic_arns``; none set: the route is not enabled);
- the certificate URL is https on an SNS host (``sns.<region>.amazonaws.com``, or the hosts in
  ``esp_ses_cert_hosts``) and ends in ``.pem``: an attacker cannot make us trust their own key;
- the signature verifies with that certificate's key (certificates fetched once and cached);
- the message is no older than ``esp_max_age_seconds`` (SNS retries within about a minute):
  an older one is a replay.

A ``SubscriptionConfirmation`` for an allowed topic is confirmed by fetching its ``SubscribeURL``
(checked the same way), so subscribing the endpoint in AWS needs no manual step. The SES
notification inside (``notificationType``, or ``eventType`` for configuration-set events) gives
one event per recipient, stored once per SNS message and recipient.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from drip.settings import Settings
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

__all__ = ["router", "string_to_sign"]

router = APIRouter(prefix="/esp/ses", tags=["esp"])
log = logging.getLogger(__name__)

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)  # fmt: skip
#: What of SES's report is kept on the event.
_DETAILS = frozenset(
    {"bounceType", "bounceSubType", "status", "diagnosticCode", "complaintFeedbackType",
     "smtpResponse"}
)  # fmt: skip
_certificates: dict[str, rsa.RSAPublicKey] = {}
_certificates_lock = threading.Lock()


def string_to_sign(message: dict[str, Any]) -> bytes:
    """What SNS signs: ``key\\nvalue\\n`` for its fields in a fixed order (Subject only if
    present)."""
    kind = message.get("Type")
    keys = _NOTIFICATION_KEYS if kind == "Notification" else _SUBSCRIPTION_KEYS
    parts = []
    for key in keys:
        value = message.get(key)
        if value is None and key == "Subject":
            continue
        if not isinstance(value, str):
            raise malformed(f"the SNS message lacks {key}")
        parts.append(f"{key}\n{value}\n")
    return "".join(parts).encode()


@router.post(
    "",
    summary="Amazon SES notifications through SNS (SNS message signature)",
    responses={400: {}, 401: {}, 403: {}, 404: {}, 413: {}, 503: {}},
)
async def ses(
    request: Request, settings: SettingsDep, engine: EngineDep, gateway: GatewayDep
) -> JSONResponse:
    try:
        if not settings.esp_ses_topic_arns:
            raise not_enabled("ses")
        message = parse_json(await read_body(request))
        if not isinstance(message, dict):
            raise malformed("an SNS message is one JSON object")
        if message.get("TopicArn") not in settings.esp_ses_topic_arns:
            raise Rejected(403, "Unknown topic", "this SNS topic is not one we subscribed")
        await run_in_threadpool(_verify, message, settings)
        timestamp = parse_time(message.get("Timestamp"))
        if timestamp is None:
            raise malformed("the SNS message has no valid Timestamp")
        check_fresh(timestamp.timestamp(), settings)
        kind = message.get("Type")
        if kind == "SubscriptionConfirmation":
            await run_in_threadpool(_confirm, message, settings)
            return JSONResponse({"confirmed": True})
        if kind != "Notification":
            return await accept([], engine=engine, settings=settings, gateway=gateway, ignored=1)
        events = _events(message)
    except Rejected as refused:
        return refused.response()
    ignored = 0 if events else 1
    return await accept(events, engine=engine, settings=settings, gateway=gateway, ignored=ignored)


def _allowed_url(url: object, settings: Settings, what: str) -> str:
    if not isinstance(url, str):
        raise Rejected(401, "Invalid signature", f"the SNS message lacks {what}")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    known = _SNS_HOST.fullmatch(host) or host in settings.esp_ses_cert_hosts
    if parts.scheme != "https" or not known or parts.username or parts.password:
        raise Rejected(401, "Invalid signature", f"{what} is not an https URL on an SNS host")
    return url


def _client(settings: Settings) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if settings.outbound_ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(settings.outbound_ca_bundle))
    return httpx.Client(timeout=5.0, verify=verify, follow_redirects=False)


def _certificate(url: str, settings: Settings) -> rsa.RSAPublicKey:
    with _certificates_lock:
        known = _certificates.get(url)
    if known is not None:
        return known
    try:
        with _client(settings) as client:
            answer = client.get(url)
        answer.raise_for_status()
        key = x509.load_pem_x509_certificate(answer.content).public_key()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("SNS signing certificate %s: %s", url, exc)
        raise Rejected(
            503, "Service Unavailable", "the SNS signing certificate cannot be fetched"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(401, "Invalid signature", "the SNS signing certificate is not RSA")
    with _certificates_lock:
        _certificates[url] = key
    return key


def _verify(message: dict[str, Any], settings: Settings) -> None:
    url = _allowed_url(message.get("SigningCertURL"), settings, "SigningCertURL")
    if not url.endswith(".pem"):
        raise Rejected(401, "Invalid signature", "SigningCertURL is not a certificate")
    version = message.get("SignatureVersion")
    algorithm: hashes.HashAlgorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303
    if version not in ("1", "2"):
        raise Rejected(401, "Invalid signature", "unknown SignatureVersion")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except ValueError:
        raise Rejected(401, "Invalid signature", "the signature is not base64") from None
    payload = string_to_sign(message)
    try:
        _certificate(url, settings).verify(signature, payload, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise Rejected(401, "Invalid signature", "the SNS signature does not verify") from None


def _confirm(message: dict[str, Any], settings: Settings) -> None:
    url = _allowed_url(message.get("SubscribeURL"), settings, "SubscribeURL")
    try:
        with _client(settings) as client:
            client.get(url).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("confirming the SNS subscription of %s: %s", message.get("TopicArn"), exc)
        raise Rejected(
            503, "Service Unavailable", "the subscription could not be confirmed"
        ) from None
    log.info("confirmed the SNS subscription of %s", message.get("TopicArn"))


def _events(message: dict[str, Any]) -> list[EspEvent]:
    notification = parse_json(str(message.get("Message", "")).encode())
    if not isinstance(notification, dict):
        raise malformed("the SNS Message is not an SES notification")
    kind = notification.get("notificationType") or notification.get("eventType")
    header_id = _header_message_id(_dict(notification.get("mail")))
    sns_id = str(message.get("MessageId", ""))
    found: list[tuple[EventKind | None, dict[str, Any], dict[str, Any]]] = []
    if kind == "Bounce":
        bounce = _dict(notification.get("bounce"))
        for rcpt in _list(bounce.get("bouncedRecipients")):
            found.append((_bounce_kind(bounce, rcpt), rcpt, bounce))
    elif kind == "Complaint":
        complaint = _dict(notification.get("complaint"))
        for rcpt in _list(complaint.get("complainedRecipients")):
            found.append(("complaint", rcpt, complaint))
    elif kind == "Delivery":
        delivery = _dict(notification.get("delivery"))
        for address in _list(delivery.get("recipients")):
            found.append(("delivered", {"emailAddress": address}, delivery))
    else:
        log.info("ses %r ignored", kind)
    events = []
    for event_kind, rcpt, detail in found:
        address = rcpt.get("emailAddress")
        if event_kind is None or not isinstance(address, str):
            continue
        events.append(
            EspEvent(
                provider="ses",
                event_id=f"{sns_id}:{address.lower()}",
                kind=event_kind,
                recipient=address,
                header_message_id=header_id,
                occurred_at=parse_time(detail.get("timestamp")),
                details={k: str(v) for k, v in {**detail, **rcpt}.items() if k in _DETAILS},
            )
        )
    return events


def _bounce_kind(bounce: dict[str, Any], rcpt: dict[str, Any]) -> EventKind | None:
    """Permanent bounces are hard unless their status says otherwise (SES also reports
    "Permanent" for a mailbox full with 5.2.2); Transient ones are soft; Undetermined are
    classified by their status like ours."""
    text = f"{rcpt.get('status', '')} {rcpt.get('diagnosticCode', '')}"
    if bounce.get("bounceType") == "Transient":
        return "soft_bounce"
    permanent = bounce.get("bounceType") == "Permanent"
    kind = classify_refusal(text, default="hard" if permanent else "soft")
    return None if kind is None else "hard_bounce" if kind == "hard" else "soft_bounce"


def _header_message_id(mail: dict[str, Any]) -> str:
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        return str(common["messageId"])
    for header in _list(mail.get("headers")):
        if str(header.get("name", "")).lower() == "message-id":
            return str(header.get("value", ""))
    return ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return [v for v in value if isinstance(v, dict | str)] if isinstance(value, list) else []
