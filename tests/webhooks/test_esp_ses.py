"""Amazon SES through SNS: real RSA signatures over SNS's string to sign, the signing
certificate and the subscription confirmation served by a real HTTPS server."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts.models import ContactStatus, MessageState
from drip.settings import Settings
from tests.receiver import Server, start_server
from tests.webhooks.test_esp import (
    RecordingGateway,
    _contact,
    _events,
    _is_problem,
    _message,
    _message_row,
    _status,
)
from webhooks.esp.ses import string_to_sign
from webhooks.main import create_app

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_PATH = "/SimpleNotificationService-test.pem"
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(SIGNING_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(SIGNING_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def sns_host(tmp_path: Path) -> AsyncIterator[tuple[Server, Path]]:
    """An HTTPS server standing in for sns.<region>.amazonaws.com, and its CA bundle."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = await start_server(ca, "localhost")
    server.files[CERT_PATH] = _certificate()
    server.files["/confirm"] = b"<ConfirmSubscriptionResponse/>"
    try:
        yield server, bundle
    finally:
        await server.stop()


@pytest.fixture
async def ses(
    settings: Settings, workspace: Workspace, engine: Engine, sns_host: tuple[Server, Path]
) -> AsyncIterator[tuple[httpx.AsyncClient, Server, RecordingGateway]]:
    server, bundle = sns_host
    configured = settings.model_copy(
        update={
            "esp_ses_topic_arns": [TOPIC],
            "esp_ses_cert_hosts": ["localhost"],
            "outbound_ca_bundle": bundle,
        }
    )
    gateway = RecordingGateway(settings=configured, engine=engine)
    gateway.routed = []
    app = create_app(configured, workspace, engine=engine)
    app.state.gateway = gateway
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client, server, gateway


def _signed(server: Server, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "SignatureVersion": "2",
        "SigningCertURL": server.url(CERT_PATH),
        **fields,
    }
    algorithm = hashes.SHA256() if message["SignatureVersion"] == "2" else hashes.SHA1()
    signature = SIGNING_KEY.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def _bounce(message_id: str, email: str, kind: str = "Permanent", status: str = "5.1.1") -> str:
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": kind,
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": email,
                        "status": status,
                        "diagnosticCode": f"smtp; 550 {status}",
                    }
                ],
                "timestamp": "2026-11-23T10:00:00.000Z",
                "feedbackId": str(uuid.uuid4()),
            },
            "mail": {
                "messageId": "ses-id",
                "commonHeaders": {"messageId": f"<{message_id}@acme.example>"},
            },
        }
    )


Ses = tuple[httpx.AsyncClient, Server, RecordingGateway]


async def test_a_permanent_bounce_suppresses_the_contact_and_fails_the_message(
    ses: Ses, engine: Engine
) -> None:
    client, server, gateway = ses
    ann = _contact(engine)
    message_id = _message(engine, ann)
    sns = _signed(server, Message=_bounce(message_id, "ann@example.com"))
    r = await client.post("/esp/ses", json=sns)
    assert r.status_code == 200, r.text
    assert _status(engine, ann) == ContactStatus.bounced
    [bounce] = _events(engine, "bounce")
    assert bounce.name == "hard" and bounce.message_id == message_id
    assert gateway.routed == [bounce.id]
    assert _message_row(engine, message_id).state == MessageState.failed
    # SNS retrying the same message records nothing more
    again = await client.post("/esp/ses", json=sns)
    assert again.status_code == 200 and len(_events(engine, "bounce")) == 1


async def test_mailbox_full_reported_permanent_is_a_soft_bounce(ses: Ses, engine: Engine) -> None:
    client, server, _ = ses
    ann = _contact(engine)
    for _ in range(2):
        message = _bounce(_message(engine, ann), "ann@example.com", status="5.2.2")
        assert (
            await client.post("/esp/ses", json=_signed(server, Message=message))
        ).status_code == 200
    assert [e.name for e in _events(engine, "bounce")] == ["soft", "soft"]
    assert _status(engine, ann) == ContactStatus.subscribed  # suppressed only at the third


async def test_complaint_and_delivery(ses: Ses, engine: Engine) -> None:
    client, server, _ = ses
    ann = _contact(engine)
    bob = _contact(engine, "bob@example.com")
    complaint = json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": "ann@example.com"}]},
            "mail": {"messageId": "x"},
        }
    )
    delivery = json.dumps(
        {
            "eventType": "Delivery",
            "delivery": {"recipients": ["bob@example.com"], "smtpResponse": "250 ok"},
            "mail": {"messageId": "y"},
        }
    )
    for body in (complaint, delivery):
        assert (
            await client.post("/esp/ses", json=_signed(server, Message=body))
        ).status_code == 200
    assert _status(engine, ann) == ContactStatus.complained
    assert _status(engine, bob) == ContactStatus.subscribed
    assert [e.contact_id for e in _events(engine, "delivered")] == [bob]


async def test_signature_version_1_verifies_too(ses: Ses, engine: Engine) -> None:
    client, server, _ = ses
    ann = _contact(engine)
    sns = _signed(
        server, SignatureVersion="1", Message=_bounce(_message(engine, ann), "ann@example.com")
    )
    assert (await client.post("/esp/ses", json=sns)).status_code == 200
    assert _status(engine, ann) == ContactStatus.bounced


async def test_a_subscription_is_confirmed_by_fetching_its_url(ses: Ses) -> None:
    client, server, _ = ses
    sns = _signed(
        server,
        Type="SubscriptionConfirmation",
        Message="You have chosen to subscribe",
        Token="t0k3n",
        SubscribeURL=server.url("/confirm"),
    )
    r = await client.post("/esp/ses", json=sns)
    assert r.status_code == 200 and r.json() == {"confirmed": True}
    assert "/confirm" in [received.path for received in server.received]


async def test_a_tampered_message_is_401(ses: Ses, engine: Engine) -> None:
    client, server, _ = ses
    ann = _contact(engine)
    sns = _signed(server, Message=_bounce(_message(engine, ann), "ann@example.com"))
    sns["Message"] = sns["Message"].replace("ann@example.com", "bob@example.com")
    _is_problem(await client.post("/esp/ses", json=sns), 401)
    assert _status(engine, ann) == ContactStatus.subscribed


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://evil.example/SimpleNotificationService-test.pem",
        "http://localhost/SimpleNotificationService-test.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
        "https://user@localhost/x.pem",
    ],
)
async def test_a_certificate_from_anywhere_but_sns_is_refused(ses: Ses, cert_url: str) -> None:
    client, server, _ = ses
    sns = _signed(server, Message="{}", SigningCertURL=cert_url)
    _is_problem(await client.post("/esp/ses", json=sns), 401)
    assert not [r for r in server.received if r.path != CERT_PATH]


async def test_an_old_message_is_refused_as_a_replay(ses: Ses, engine: Engine) -> None:
    client, server, _ = ses
    ann = _contact(engine)
    old = (datetime.now(UTC) - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    sns = _signed(server, Timestamp=old, Message=_bounce(_message(engine, ann), "ann@example.com"))
    _is_problem(await client.post("/esp/ses", json=sns), 403)
    assert _status(engine, ann) == ContactStatus.subscribed


async def test_another_topic_is_403_and_garbage_is_400(ses: Ses) -> None:
    client, server, _ = ses
    _is_problem(
        await client.post("/esp/ses", json=_signed(server, Message="{}", TopicArn="arn:x")), 403
    )
    _is_problem(await client.post("/esp/ses", content=b"{not json"), 400)
    _is_problem(await client.post("/esp/ses", json=[1, 2]), 400)


async def test_not_configured_is_404(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    app = create_app(settings, workspace, engine=engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        _is_problem(await client.post("/esp/ses", json={}), 404)
