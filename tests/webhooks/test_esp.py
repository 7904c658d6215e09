"""ESP webhooks (Postmark, Mailgun, SendGrid) over HTTP against the real app and SQLite: signed
or authenticated events update the contact and the message once per provider event id, and
anything unsigned, replayed or unreadable is a 4xx problem that records nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import ContactStatus, Event, Message, MessageState
from drip.settings import Settings
from webhooks.esp.mailgun import signature_of
from webhooks.esp.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from webhooks.journeys import JourneyGateway
from webhooks.main import create_app
from webhooks.problems import PROBLEM_JSON

MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
POSTMARK_AUTH = ("postmark-hook", "s3cret-pass")


class RecordingGateway(JourneyGateway):
    """Routes nothing to Temporal; remembers which events the API asked to route."""

    routed: list[int]

    async def route(self, event_id: int) -> bool:
        self.routed.append(event_id)
        return True


@pytest.fixture
def esp_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "esp_postmark_user": POSTMARK_AUTH[0],
            "esp_postmark_password": SecretStr(POSTMARK_AUTH[1]),
            "esp_mailgun_signing_key": SecretStr(MAILGUN_KEY),
            "esp_sendgrid_public_key": SENDGRID_PUBLIC,
        }
    )


@pytest.fixture
def gateway(esp_settings: Settings, engine: Engine) -> RecordingGateway:
    gateway = RecordingGateway(settings=esp_settings, engine=engine)
    gateway.routed = []
    return gateway


@pytest.fixture
async def esp(
    esp_settings: Settings, workspace: Workspace, engine: Engine, gateway: RecordingGateway
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(esp_settings, workspace, engine=engine)
    app.state.gateway = gateway
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


# --- data helpers -------------------------------------------------------------------------


def _contact(engine: Engine, email: str = "ann@example.com") -> int:
    with session_scope(engine) as s:
        # no consent recorded: its record would be an event, and these tests count events
        contact, _ = repository.upsert_contact(s, email=email)
        assert contact.id is not None
        return contact.id


def _message(engine: Engine, contact_id: int) -> str:
    """A sent outbox message; returns its id (the Message-ID is ``<id@acme.example>``)."""
    message_id = str(uuid.uuid4())
    with session_scope(engine) as s:
        outbox.reserve_message(
            s,
            Message(
                id=message_id,
                key=f"journey/welcome/{contact_id}/1:welcome:{message_id}",
                contact_id=contact_id,
                campaign_id="welcome",
                step_id="welcome",
                workflow_id=f"journey/welcome/{contact_id}/1",
                template="welcome",
                header_message_id=f"<{message_id}@acme.example>",
                open_token=uuid.uuid4().hex,
            ),
        )
        outbox.finish_send(s, message_id, MessageState.sent)
    return message_id


def _status(engine: Engine, contact_id: int) -> ContactStatus:
    with session_scope(engine) as s:
        return ContactStatus(repository.get_contact(s, contact_id).status)


def _events(engine: Engine, *types: str) -> list[Event]:
    with session_scope(engine) as s:
        rows = s.exec(select(Event).order_by(Event.id)).all()  # type: ignore[arg-type]
        return [e for e in rows if not types or e.type in types]


def _message_row(engine: Engine, message_id: str) -> Message:
    with session_scope(engine) as s:
        message = outbox.get_message(s, message_id)
        assert message is not None
        s.expunge(message)
        return message


def _is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"]
    return body


# --- Postmark -----------------------------------------------------------------------------


def _postmark_bounce(
    bounce_id: int, email: str = "ann@example.com", type_: str = "HardBounce"
) -> dict[str, Any]:
    return {
        "RecordType": "SpamComplaint" if type_ == "SpamComplaint" else "Bounce",
        "ID": bounce_id,
        "Type": type_,
        "TypeCode": 1,
        "MessageID": str(uuid.uuid4()),
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
        "Email": email,
        "BouncedAt": "2026-11-20T13:28:10.2735393-04:00",
        "MessageStream": "outbound",
    }


async def _postmark(esp: httpx.AsyncClient, record: Any, auth: Any = POSTMARK_AUTH) -> Any:
    return await esp.post("/esp/postmark", json=record, auth=auth)


async def test_postmark_hard_bounce_suppresses_and_is_routed(
    esp: httpx.AsyncClient, engine: Engine, gateway: RecordingGateway
) -> None:
    contact_id = _contact(engine)
    r = await _postmark(esp, _postmark_bounce(42))
    assert r.status_code == 200 and r.json()["recorded"] == 1
    assert _status(engine, contact_id) == ContactStatus.bounced
    [event] = _events(engine, "bounce")
    assert (event.name, event.source, event.dedupe_key) == (
        "hard",
        "esp:postmark",
        "esp:postmark:42",
    )
    assert event.contact_id == contact_id and event.properties["Type"] == "HardBounce"
    assert event.occurred_at.isoformat().startswith("2026-11-20T17:28:10")
    assert gateway.routed == [event.id]


async def test_postmark_same_id_twice_is_one_row(
    esp: httpx.AsyncClient, engine: Engine, gateway: RecordingGateway
) -> None:
    _contact(engine)
    first = await _postmark(esp, _postmark_bounce(7, type_="SoftBounce"))
    again = await _postmark(esp, _postmark_bounce(7, type_="SoftBounce"))
    assert first.json()["recorded"] == 1
    assert again.status_code == 200 and again.json() == {
        "received": 1,
        "recorded": 0,
        "duplicates": 1,
        "ignored": 0,
    }
    assert len(_events(engine, "bounce")) == 1 and len(gateway.routed) == 1


async def test_postmark_third_soft_bounce_suppresses(
    esp: httpx.AsyncClient, engine: Engine
) -> None:
    contact_id = _contact(engine)
    for n, type_ in enumerate(["SoftBounce", "Transient", "DnsError"], start=1):
        assert _status(engine, contact_id) == ContactStatus.subscribed
        assert (await _postmark(esp, _postmark_bounce(100 + n, type_=type_))).status_code == 200
    assert _status(engine, contact_id) == ContactStatus.bounced
    assert [e.name for e in _events(engine, "bounce")] == ["soft"] * 3


async def test_postmark_complaint_and_delivery(esp: httpx.AsyncClient, engine: Engine) -> None:
    contact_id = _contact(engine)
    delivery = {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "Ann@Example.com",
        "DeliveredAt": "2026-11-20T13:28:10Z",
        "Details": "Test delivery webhook details",
    }
    for _ in range(2):
        assert (await _postmark(esp, delivery)).status_code == 200
    [delivered] = _events(engine, "delivered")
    assert delivered.contact_id == contact_id and delivered.source == "esp:postmark"
    r = await _postmark(esp, _postmark_bounce(9, type_="SpamComplaint"))
    assert r.json()["recorded"] == 1
    assert _status(engine, contact_id) == ContactStatus.complained
    assert len(_events(engine, "complaint")) == 1


@pytest.mark.parametrize(
    "record",
    [
        _postmark_bounce(1, email="nobody@example.com"),  # no such contact
        _postmark_bounce(2, type_="AutoResponder"),  # says nothing about the address
        {"RecordType": "Open", "MessageID": "x", "Recipient": "ann@example.com"},
    ],
)
async def test_postmark_events_of_no_use_are_accepted_and_ignored(
    esp: httpx.AsyncClient, engine: Engine, record: dict[str, Any]
) -> None:
    contact_id = _contact(engine)
    r = await _postmark(esp, record)
    assert r.status_code == 200 and r.json()["ignored"] == 1
    assert _events(engine) == [] and _status(engine, contact_id) == ContactStatus.subscribed


@pytest.mark.parametrize(
    "auth", [None, ("postmark-hook", "wrong"), ("someone", POSTMARK_AUTH[1]), ("", "")]
)
async def test_postmark_without_the_right_credentials_is_401(
    esp: httpx.AsyncClient, engine: Engine, auth: Any
) -> None:
    _contact(engine)
    r = await _postmark(esp, _postmark_bounce(42), auth=auth)
    _is_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Basic")
    assert _events(engine) == []


async def test_postmark_garbled_authorization_header_is_401(esp: httpx.AsyncClient) -> None:
    for header in ("Basic !!!notbase64", "Bearer abc", "Basic", "Basic " + "A" * 5000):
        r = await esp.post("/esp/postmark", json={}, headers={"authorization": header})
        _is_problem(r, 401)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"\xff\xfe", 400),
        (b'"text"', 400),
        (b'{"RecordType": "Bounce", "Type": "HardBounce"}', 400),
        (b'{"RecordType": "Bounce", "ID": [1], "Email": "ann@example.com"}', 400),
        (b'{"RecordType": "Delivery", "Recipient": 5}', 400),
        (b"[" * 100_000, 400),
        (b'{"x": "' + b"a" * (1 << 20) + b'"}', 413),
    ],
)
async def test_postmark_malformed_bodies_are_4xx_problems(
    esp: httpx.AsyncClient, engine: Engine, body: bytes, status: int
) -> None:
    r = await esp.post(
        "/esp/postmark",
        content=body,
        auth=POSTMARK_AUTH,
        headers={"content-type": "application/json"},
    )
    _is_problem(r, status)
    assert _events(engine) == []


# --- Mailgun ------------------------------------------------------------------------------


def _mailgun(
    event: dict[str, Any], *, timestamp: float | None = None, key: str = MAILGUN_KEY
) -> dict[str, Any]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
    return {
        "signature": {
            "timestamp": stamp,
            "token": token,
            "signature": signature_of(key, stamp, token),
        },
        "event-data": event,
    }


def _mailgun_event(
    name: str,
    *,
    message_id: str = "",
    email: str = "ann@example.com",
    event_id: str | None = None,
    status: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if status is not None:
        extra["delivery-status"] = status
    return {
        "event": name,
        "id": event_id or uuid.uuid4().hex[:22],
        "timestamp": 1795000000.123,
        "recipient": email,
        "message": {"headers": {"message-id": message_id, "to": email}},
        **extra,
    }


async def test_mailgun_permanent_failure_bounces_the_contact_and_fails_the_message(
    esp: httpx.AsyncClient, engine: Engine, gateway: RecordingGateway
) -> None:
    contact_id = _contact(engine)
    message_id = _message(engine, contact_id)
    failed = _mailgun_event(
        "failed",
        message_id=f"{message_id}@acme.example",
        email="someone-else@example.com",  # the Message-ID decides, not the address
        severity="permanent",
        reason="bounce",
        status={"code": 550, "message": "5.1.1 No such user"},
    )
    r = await esp.post("/esp/mailgun", json=_mailgun(failed))
    assert r.status_code == 200 and r.json()["recorded"] == 1
    assert _status(engine, contact_id) == ContactStatus.bounced
    [event] = _events(engine, "bounce")
    assert (event.name, event.message_id, event.contact_id) == ("hard", message_id, contact_id)
    assert gateway.routed == [event.id]
    message = _message_row(engine, message_id)
    assert message.state == MessageState.failed and "5.1.1" in (message.error or "")

    # the same Mailgun event, signed afresh (a retry), records nothing more
    r = await esp.post("/esp/mailgun", json=_mailgun(failed))
    assert r.json()["duplicates"] == 1 and len(_events(engine, "bounce")) == 1


async def test_mailgun_delivered_complained_and_temporary(
    esp: httpx.AsyncClient, engine: Engine
) -> None:
    contact_id = _contact(engine)
    message_id = _message(engine, contact_id)
    delivered = _mailgun_event("delivered", message_id=f"{message_id}@acme.example")
    assert (await esp.post("/esp/mailgun", json=_mailgun(delivered))).status_code == 200
    [event] = _events(engine, "delivered")
    assert event.message_id == message_id and event.name == "welcome"
    assert _message_row(engine, message_id).state == MessageState.sent

    temporary = _mailgun_event("failed", severity="temporary", reason="generic")
    r = await esp.post("/esp/mailgun", json=_mailgun(temporary))
    assert r.json()["ignored"] == 1 and _events(engine, "bounce") == []

    complained = _mailgun_event("complained", message_id=f"{message_id}@acme.example")
    assert (await esp.post("/esp/mailgun", json=_mailgun(complained))).status_code == 200
    assert _status(engine, contact_id) == ContactStatus.complained


async def test_mailgun_soft_failures_count_to_the_limit(
    esp: httpx.AsyncClient, engine: Engine
) -> None:
    contact_id = _contact(engine)
    for _ in range(3):
        assert _status(engine, contact_id) == ContactStatus.subscribed
        soft = _mailgun_event(
            "failed",
            message_id=f"{_message(engine, contact_id)}@acme.example",
            severity="permanent",
            reason="generic",
            status={"code": 552, "message": "5.2.2 Mailbox full"},
        )
        assert (await esp.post("/esp/mailgun", json=_mailgun(soft))).status_code == 200
    assert _status(engine, contact_id) == ContactStatus.bounced


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p["signature"].update(signature="0" * 64),
        lambda p: p["signature"].update(token="another-token"),
        lambda p: p["event-data"].update(recipient="x@example.com") or p.update(signature={}),
        lambda p: p.pop("signature"),
        lambda p: p.update(signature="nope"),
        lambda p: p["signature"].update(timestamp=None),
    ],
)
async def test_mailgun_unsigned_or_forged_is_401(
    esp: httpx.AsyncClient, engine: Engine, mangle: Any
) -> None:
    _contact(engine)
    payload = _mailgun(_mailgun_event("complained"))
    mangle(payload)
    _is_problem(await esp.post("/esp/mailgun", json=payload), 401)
    forged = _mailgun(_mailgun_event("complained"), key="key-not-ours")
    _is_problem(await esp.post("/esp/mailgun", json=forged), 401)
    assert _events(engine) == []


# a future stamp needs a margin: the request may reach the check seconds after it was signed
@pytest.mark.parametrize("offset", [-301, -3600, +360])
async def test_mailgun_stale_or_future_signature_is_refused(
    esp: httpx.AsyncClient, engine: Engine, offset: int
) -> None:
    _contact(engine)
    payload = _mailgun(_mailgun_event("complained"), timestamp=time.time() + offset)
    body = _is_problem(await esp.post("/esp/mailgun", json=payload), 403)
    assert body["title"] == "Stale webhook"
    assert _events(engine) == []


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b"null", b'{"signature": {}}', b"\x00\x01", b"1e999999"]
)
async def test_mailgun_malformed_is_4xx(esp: httpx.AsyncClient, body: bytes) -> None:
    r = await esp.post("/esp/mailgun", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == PROBLEM_JSON


async def test_mailgun_signed_but_incomplete_event_is_400(esp: httpx.AsyncClient) -> None:
    payload = _mailgun({"event": "failed", "severity": "permanent"})
    _is_problem(await esp.post("/esp/mailgun", json=payload), 400)
    payload = _mailgun("not an object")  # type: ignore[arg-type]
    _is_problem(await esp.post("/esp/mailgun", json=payload), 400)


# --- SendGrid -----------------------------------------------------------------------------


def _sendgrid_headers(
    body: bytes, *, timestamp: float | None = None, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY
) -> dict[str, str]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: stamp,
        "content-type": "application/json",
    }


async def _sendgrid(esp: httpx.AsyncClient, events: Any, **kw: Any) -> httpx.Response:
    body = json.dumps(events).encode()
    return await esp.post("/esp/sendgrid", content=body, headers=_sendgrid_headers(body, **kw))


def _sg(
    name: str, email: str = "ann@example.com", smtp_id: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "email": email,
        "timestamp": 1795000000,
        "smtp-id": smtp_id or "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": name,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **extra,
    }


async def test_sendgrid_batch_updates_contacts_and_messages(
    esp: httpx.AsyncClient, engine: Engine, gateway: RecordingGateway
) -> None:
    ann = _contact(engine)
    bob = _contact(engine, "bob@example.com")
    cat = _contact(engine, "cat@example.com")
    message_id = _message(engine, ann)
    batch = [
        _sg("processed"),
        _sg("delivered", smtp_id=f"<{message_id}@acme.example>", response="250 OK"),
        _sg(
            "bounce",
            smtp_id=f"<{message_id}@acme.example>",
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 The email account that you tried to reach does not exist",
        ),
        _sg("spamreport", email="bob@example.com"),
        _sg("dropped", email="cat@example.com", reason="Bounced Address"),
        _sg("open", useragent="Mozilla"),
        "not an event",
        _sg("bounce", email="nobody@example.com", type="bounce", status="5.1.1"),
    ]
    r = await _sendgrid(esp, batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 8, "recorded": 4, "duplicates": 0, "ignored": 4}
    assert _status(engine, ann) == ContactStatus.bounced
    assert _status(engine, bob) == ContactStatus.complained
    assert _status(engine, cat) == ContactStatus.bounced
    [delivered] = _events(engine, "delivered")
    [bounce] = [e for e in _events(engine, "bounce") if e.contact_id == ann]
    assert delivered.message_id == bounce.message_id == message_id and bounce.name == "hard"
    assert _message_row(engine, message_id).state == MessageState.failed
    assert sorted(gateway.routed) == sorted(e.id or 0 for e in _events(engine))

    # SendGrid posting the same batch again (freshly signed): nothing new
    r = await _sendgrid(esp, batch)
    assert r.json()["recorded"] == 0 and r.json()["duplicates"] == 4
    assert len(_events(engine)) == 4 and len(gateway.routed) == 4


async def test_sendgrid_blocked_is_soft(esp: httpx.AsyncClient, engine: Engine) -> None:
    contact_id = _contact(engine)
    blocked = [_sg("bounce", type="blocked", status="5.7.1", reason="blocked") for _ in range(2)]
    assert (await _sendgrid(esp, blocked)).json()["recorded"] == 2
    assert _status(engine, contact_id) == ContactStatus.subscribed
    assert (await _sendgrid(esp, [_sg("bounce", type="blocked")])).status_code == 200
    assert _status(engine, contact_id) == ContactStatus.bounced


async def test_sendgrid_forged_tampered_or_unsigned_is_401(
    esp: httpx.AsyncClient, engine: Engine
) -> None:
    _contact(engine)
    body = json.dumps([_sg("spamreport")]).encode()
    other = ec.generate_private_key(ec.SECP256R1())
    good = _sendgrid_headers(body)
    cases = [
        (body, _sendgrid_headers(body, key=other)),
        (body.replace(b"spamreport", b"delivered!"), good),
        (body, {**good, TIMESTAMP_HEADER: str(int(good[TIMESTAMP_HEADER]) + 1)}),
        (body, {**good, SIGNATURE_HEADER: "not base64 !!"}),
        (body, {**good, SIGNATURE_HEADER: base64.b64encode(b"junk").decode()}),
        (body, {"content-type": "application/json"}),
        (body, {**good, TIMESTAMP_HEADER: ""}),
    ]
    for content, headers in cases:
        r = await esp.post("/esp/sendgrid", content=content, headers=headers)
        _is_problem(r, 401)
    assert _events(engine) == []


async def test_sendgrid_replay_outside_the_window_is_403(
    esp: httpx.AsyncClient, engine: Engine
) -> None:
    _contact(engine)
    r = await _sendgrid(esp, [_sg("spamreport")], timestamp=time.time() - 600)
    assert _is_problem(r, 403)["title"] == "Stale webhook"
    assert _events(engine) == []


@pytest.mark.parametrize("body", [b"{}", b"{not json", b'"x"', b"\xff"])
async def test_sendgrid_signed_garbage_is_400(esp: httpx.AsyncClient, body: bytes) -> None:
    r = await esp.post("/esp/sendgrid", content=body, headers=_sendgrid_headers(body))
    _is_problem(r, 400)


async def test_sendgrid_oversized_body_is_413(esp: httpx.AsyncClient) -> None:
    body = b"[" + b" " * (1 << 20) + b"]"
    r = await esp.post("/esp/sendgrid", content=body, headers=_sendgrid_headers(body))
    _is_problem(r, 413)


async def test_sendgrid_unreadable_key_is_503(
    esp_settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    broken = esp_settings.model_copy(update={"esp_sendgrid_public_key": "bm90IGEga2V5"})
    app = create_app(broken, workspace, engine=engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        r = await client.post("/esp/sendgrid", content=b"[]", headers=_sendgrid_headers(b"[]"))
    _is_problem(r, 503)


# --- not configured -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["postmark", "mailgun", "sendgrid"])
async def test_unconfigured_provider_is_404(http: httpx.AsyncClient, provider: str) -> None:
    r = await http.post(f"/esp/{provider}", json=[], auth=POSTMARK_AUTH)
    assert provider in _is_problem(r, 404)["detail"]


async def test_a_long_provider_event_id_is_still_one_row(
    esp: httpx.AsyncClient, engine: Engine
) -> None:
    contact_id = _contact(engine)
    event = _sg("spamreport")
    event["sg_event_id"] = "x" * 5000
    for _ in range(2):
        assert (await _sendgrid(esp, [event])).status_code == 200
    [complaint] = _events(engine, "complaint")
    assert len(complaint.dedupe_key) <= 200
    assert _status(engine, contact_id) == ContactStatus.complained


@pytest.mark.parametrize("details", ["smtp;550 bad\u0000byte", "smtp;550 \ud800", "a\u202eb"])
async def test_postmark_bounce_with_unstorable_text_is_recorded_not_500(
    esp: httpx.AsyncClient, engine: Engine, details: str
) -> None:
    """A provider's report is not ours to refuse: text the database cannot hold is made
    storable (and said so) rather than a 500 that the ESP would retry for days."""
    contact_id = _contact(engine)
    record = _postmark_bounce(77)
    record["Details"] = details
    r = await esp.post(
        "/esp/postmark",
        content=json.dumps(record).encode(),
        headers={"content-type": "application/json"},
        auth=POSTMARK_AUTH,
    )
    assert r.status_code == 200, r.text
    assert _status(engine, contact_id) == ContactStatus.bounced
    [event] = _events(engine, "bounce")
    assert "\x00" not in json.dumps(event.properties)
