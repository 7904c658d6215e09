"""The transactional API over HTTP: the real API in-process, a real worker on Temporal's
time-skipping server, real SMTP (aiosmtpd) and SQLite.

``POST /api/messages`` answers 202 with the message id, and the email arrives; the same
``Idempotency-Key`` and body give the first answer and no second email; another body under the
key is a 409; missing template data is a 422 naming it; a key past its rate gets 429 with
``Retry-After``; a batch answers per recipient; ``GET /api/messages/{id}`` follows the message
and its opens. A marketing-unsubscribed contact gets a receipt, a bounced one does not; a retry
after a 503 (Temporal away) sends the message its key claimed, once.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import idempotency, repository
from contacts.db import session_scope
from contacts.idempotency import IdempotencyKey
from contacts.models import Contact, ContactStatus, Message, utcnow
from drip.settings import Settings
from tests.support import (
    SmtpServer,
    api_client,
    copy_workspace,
    free_port,
    running_stack,
    venv_binary,
)
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON

RECEIPT = """\
<mj-section>
  <mj-column>
    <mj-text>
      Thanks {{ contact.first_name | default('there') }}! Order {{ data.order_id }}:
      {{ data.total }} EUR.{% if data.note %} {{ data.note }}{% endif %}
    </mj-text>
  </mj-column>
</mj-section>
"""
SUBJECT = "Your receipt for order {{ data.order_id }}"
ANN = "ann@example.com"


@pytest.fixture
def tx_workspace(tmp_path: Path) -> Workspace:
    root = copy_workspace(tmp_path)
    (root / "emails" / "receipt.mjml").write_text(RECEIPT)
    return load_workspace(root)


@pytest.fixture
async def stack(
    time_env: WorkflowEnvironment, settings: Settings, engine: Engine, tx_workspace: Workspace
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_stack(time_env.client, settings, engine, tx_workspace) as http:
        yield http


def _receipt(order: str = "A-1001", **extra: object) -> dict[str, object]:
    return {
        "template": "receipt",
        "to": {"email": ANN, "fields": {"first_name": "Ann"}},
        "subject": SUBJECT,
        "data": {"order_id": order, "total": "42.50"},
        **extra,
    }


async def _state(engine: Engine, message_id: str, within: float = 30) -> Message:
    """The outbox row once the worker has finished with it."""
    deadline = time.monotonic() + within
    while True:
        with session_scope(engine) as s:
            row = s.get(Message, message_id)
        if row is not None and row.state not in ("pending", "sending"):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"message {message_id}: {row.state if row else 'no row'}")
        await asyncio.sleep(0.05)


async def test_same_key_twice_sends_one_email_and_gives_the_first_answer(
    stack: httpx.AsyncClient, engine: Engine, smtp: SmtpServer
) -> None:
    headers = {**make_key(engine, "send"), "Idempotency-Key": "order-A-1001"}
    first = await stack.post("/api/messages", json=_receipt(), headers=headers)
    assert first.status_code == 202, first.text
    message_id = first.json()["id"]
    assert first.headers["location"] == f"/api/messages/{message_id}"
    assert (await _state(engine, message_id)).state == "sent"
    await smtp.mailbox.wait_for(lambda m: len(m.to(ANN)) == 1)

    again = await stack.post("/api/messages", json=_receipt(), headers=headers)
    assert (again.status_code, again.json()) == (202, first.json())
    assert again.headers["location"] == first.headers["location"]
    [email] = smtp.mailbox.to(ANN)
    assert email.subject == "Your receipt for order A-1001"
    assert "Order A-1001:" in email.text() and "42.50 EUR" in email.text()
    with session_scope(engine) as s:
        assert len(s.exec(select(Message)).all()) == 1
        [contact] = s.exec(select(Contact)).all()
    # a new address is a contact without marketing consent: a receipt is no permission
    assert (contact.email, contact.marketing_consent) == (ANN, "none")
    assert contact.fields["first_name"] == "Ann"

    # another body under the same key is a conflict, and sends nothing
    other = await stack.post("/api/messages", json=_receipt("A-1002"), headers=headers)
    assert other.status_code == 409 and other.headers["content-type"] == PROBLEM_JSON
    assert "Idempotency-Key" in other.json()["detail"]
    assert len(smtp.mailbox.to(ANN)) == 1


async def test_get_gives_state_attachments_and_events(
    stack: httpx.AsyncClient, engine: Engine, smtp: SmtpServer
) -> None:
    headers = make_key(engine, "send")
    pdf = b"%PDF-1.4 receipt"
    body = _receipt(
        attachments=[
            {
                "filename": "receipt.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(pdf).decode(),
            }
        ],
        track=False,
    )
    r = await stack.post("/api/messages", json=body, headers=headers)
    assert r.status_code == 202, r.text
    message_id = r.json()["id"]
    await _state(engine, message_id)
    got = await stack.get(f"/api/messages/{message_id}", headers=headers)
    assert got.status_code == 200, got.text
    found = got.json()
    assert (found["state"], found["error"], found["template"]) == ("sent", None, "receipt")
    assert found["sent_at"] is not None and found["subject"] == "Your receipt for order A-1001"
    [attached] = found["attachments"]
    assert (attached["filename"], attached["size"]) == ("receipt.pdf", len(pdf))
    await smtp.mailbox.wait_for(lambda m: len(m.to(ANN)) == 1)
    [email] = smtp.mailbox.to(ANN)
    [part] = email.message.iter_attachments()
    assert (part.get_filename(), part.get_content()) == ("receipt.pdf", pdf)
    assert "/t/o/" not in email.html()  # track: false, no pixel
    assert isinstance(found["events"], list)

    missing = await stack.get(f"/api/messages/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_JSON
    assert (await stack.get("/api/messages/not-an-id", headers=headers)).status_code == 404


async def test_batch_answers_per_recipient(
    stack: httpx.AsyncClient, engine: Engine, smtp: SmtpServer
) -> None:
    headers = make_key(engine, "send")
    body = {
        "template": "receipt",
        "subject": SUBJECT,
        "recipients": [
            {"email": "bo@example.com", "data": {"order_id": "B-1", "total": "10"}},
            {"email": "cy@example.com", "data": {"order_id": "C-1"}},
            {"email": "not an address", "data": {"order_id": "D-1", "total": "1"}},
        ],
    }
    r = await stack.post("/api/messages/batch", json=body, headers=headers)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 2)
    ok, no_total, bad_address = answer["results"]
    assert ok["status"] == 202 and ok["index"] == 0
    assert no_total["status"] == 422 and no_total["problem"]["missing"] == ["total"]
    assert bad_address["status"] == 422 and "id" not in bad_address
    assert (await _state(engine, ok["id"])).state == "sent"
    await smtp.mailbox.wait_for(lambda m: len(m.to("bo@example.com")) == 1)
    assert smtp.mailbox.to("cy@example.com") == []


async def test_unsubscribed_contact_gets_a_receipt_and_a_bounced_one_does_not(
    stack: httpx.AsyncClient, engine: Engine, smtp: SmtpServer
) -> None:
    with session_scope(engine) as s:
        ids = {}
        for email, status in (
            ("gone@example.com", "unsubscribed"),
            ("dead@example.com", "bounced"),
        ):
            contact, _ = repository.upsert_contact(s, email)
            assert contact.id is not None
            repository.set_status(s, contact.id, ContactStatus(status))
            ids[status] = contact.id
    headers = make_key(engine, "send")
    states = {}
    for status, contact_id in ids.items():
        r = await stack.post(
            "/api/messages", json=_receipt(to={"contact_id": contact_id}), headers=headers
        )
        assert r.status_code == 202, r.text
        assert r.json()["contact_id"] == contact_id
        await _state(engine, r.json()["id"])
        got = await stack.get(f"/api/messages/{r.json()['id']}", headers=headers)
        states[status] = (got.json()["state"], got.json()["error"])
    assert states["unsubscribed"] == ("sent", None)
    assert states["bounced"][0] == "suppressed" and states["bounced"][1]
    await smtp.mailbox.wait_for(lambda m: len(m.to("gone@example.com")) == 1)
    assert smtp.mailbox.to("dead@example.com") == []
    unknown = await stack.post(
        "/api/messages", json=_receipt(to={"contact_id": 999}), headers=headers
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "to.contact_id"


async def test_get_lists_the_opens_of_a_tracked_email(
    stack: httpx.AsyncClient, engine: Engine, smtp: SmtpServer
) -> None:
    headers = make_key(engine, "send")
    r = await stack.post("/api/messages", json=_receipt(), headers=headers)
    message_id = r.json()["id"]
    await smtp.mailbox.wait_for(lambda m: len(m.to(ANN)) == 1)
    [email] = smtp.mailbox.to(ANN)
    pixel = re.search(r"http://testserver(/t/o/[^\"]+)", email.html())
    assert pixel is not None, email.html()
    assert (await stack.get(pixel.group(1))).status_code == 200
    deadline = time.monotonic() + 30
    while not (
        events := (await stack.get(f"/api/messages/{message_id}", headers=headers)).json()["events"]
    ):
        assert time.monotonic() < deadline, "the open never showed"
        await asyncio.sleep(0.05)
    assert [e["type"] for e in events] == ["open"]


async def test_a_retry_after_503_sends_the_message_it_claimed(
    settings: Settings,
    engine: Engine,
    tx_workspace: Workspace,
    time_env: WorkflowEnvironment,
    smtp: SmtpServer,
) -> None:
    headers = {**make_key(engine, "send"), "Idempotency-Key": "retry-me"}
    away = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with api_client(away, tx_workspace, engine) as http:
        r = await http.post("/api/messages", json=_receipt(), headers=headers)
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM_JSON
    with session_scope(engine) as s:
        [claim] = s.exec(select(IdempotencyKey)).all()
    assert claim.status is None
    [reserved] = claim.reserved["message_ids"]
    async with running_stack(time_env.client, settings, engine, tx_workspace) as http:
        r = await http.post("/api/messages", json=_receipt(), headers=headers)
        assert r.status_code == 202 and r.json()["id"] == reserved
        assert (await _state(engine, reserved)).state == "sent"
        await smtp.mailbox.wait_for(lambda m: len(m.to(ANN)) == 1)
        again = await http.post("/api/messages", json=_receipt(), headers=headers)
        assert again.json() == r.json()
    assert len(smtp.mailbox.to(ANN)) == 1


# --- without Temporal: everything refused before a send is started ----------------------------


@pytest.fixture
async def http(
    settings: Settings, engine: Engine, tx_workspace: Workspace
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, tx_workspace, engine) as client:
        yield client


async def test_missing_template_data_is_422_naming_it(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    headers = make_key(engine, "send")
    body = _receipt()
    body["data"] = {"order_id": "A-1", "note": None}
    r = await http.post("/api/messages", json=body, headers=headers)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["missing"] == ["total"] and "data.total" in r.json()["detail"]
    # the subject counts too, and a null is missing (it would render as nothing)
    body = _receipt(subject="Receipt {{ data.order_id }} of {{ data.date }}")
    body["data"] = {"order_id": "A-1", "total": None}
    r = await http.post("/api/messages", json=body, headers=headers)
    assert r.status_code == 422 and r.json()["missing"] == ["total", "date"]
    unknown = await http.post("/api/messages", json=_receipt(template="nope"), headers=headers)
    assert unknown.status_code == 422 and "unknown template" in unknown.json()["detail"]
    with session_scope(engine) as s:  # nothing stored for a refused request
        assert s.exec(select(Contact)).all() == [] and s.exec(select(Message)).all() == []


async def test_bad_bodies_are_4xx_problems(http: httpx.AsyncClient, engine: Engine) -> None:
    headers = make_key(engine, "send")
    both = _receipt(to={"email": ANN, "contact_id": 1})
    assert (await http.post("/api/messages", json=both, headers=headers)).status_code == 422
    not_b64 = _receipt(attachments=[{"filename": "a.txt", "content": "***"}])
    r = await http.post("/api/messages", json=not_b64, headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "attachments.0.content"
    no_scope = make_key(engine, "messages:read")
    assert (await http.post("/api/messages", json=_receipt(), headers=no_scope)).status_code == 403


async def test_attachments_over_the_cap_are_413(
    settings: Settings, engine: Engine, tx_workspace: Workspace
) -> None:
    capped = settings.model_copy(update={"tx_attachments_max_bytes": 1000})
    async with api_client(capped, tx_workspace, engine) as http:
        headers = make_key(engine, "send")
        files = [
            {"filename": f"{n}.bin", "content": base64.b64encode(b"x" * 500).decode()}
            for n in ("a", "b", "c")
        ]
        r = await http.post("/api/messages", json=_receipt(attachments=files), headers=headers)
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON
        assert "1500 bytes exceed the 1000-byte limit" in r.json()["detail"]
        with session_scope(engine) as s:
            assert s.exec(select(Message)).all() == []


async def test_rate_limit_is_429_with_retry_after(
    settings: Settings, engine: Engine, tx_workspace: Workspace
) -> None:
    limited = settings.model_copy(update={"tx_rate_per_minute": 2})
    async with api_client(limited, tx_workspace, engine) as http:
        headers = make_key(engine, "send")
        bad = _receipt(template="nope")  # refused after counting: no send needed to count
        for _ in range(2):
            assert (await http.post("/api/messages", json=bad, headers=headers)).status_code == 422
        r = await http.post("/api/messages", json=_receipt(), headers=headers)
        assert r.status_code == 429 and r.headers["content-type"] == PROBLEM_JSON
        assert 1 <= int(r.headers["retry-after"]) <= 120  # a sliding window: at most two
        # the limit is per key: another key is not held back
        other = make_key(engine, "send", name="other app")
        r = await http.post("/api/messages", json=bad, headers=other)
        assert r.status_code == 422
        r = await http.post("/api/messages/batch", json={}, headers=headers)
        assert r.status_code == 422  # a malformed body is refused before it is counted


def test_idempotency_keys_expire_after_a_day(any_engine: Engine) -> None:
    engine = any_engine
    make_key(engine, "send")
    now = utcnow()
    with session_scope(engine) as s:
        first = idempotency.claim(s, 1, "k", "hash-1", {"message_ids": ["m1"]}, now=now)
        idempotency.record_answer(s, 1, "k", 202, {"id": "m1"})
    assert first.matches("hash-1") and first.reserved == {"message_ids": ["m1"]}
    with session_scope(engine) as s:
        again = idempotency.claim(s, 1, "k", "hash-2", {"message_ids": ["m2"]}, now=now)
    assert not again.matches("hash-2") and again.body == {"id": "m1"}
    later = now + idempotency.TTL + timedelta(seconds=1)
    with session_scope(engine) as s:
        fresh = idempotency.claim(s, 1, "k", "hash-2", {"message_ids": ["m2"]}, now=later)
    assert fresh.matches("hash-2") and fresh.status is None
    with session_scope(engine) as s:
        assert idempotency.prune(s, now=later + idempotency.TTL + timedelta(seconds=1)) == 1
        assert s.exec(select(IdempotencyKey)).all() == []


async def test_a_send_that_cannot_be_started_without_a_key_is_marked_failed_not_left_pending(
    settings: Settings, engine: Engine, tx_workspace: Workspace
) -> None:
    """Temporal goes away after the API connected: the answer is a 503, and without an
    Idempotency-Key no retry can name the message, so its row says it was not sent instead of
    staying pending for ever (with a key, the retry sends it: the test above)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server")
    )
    async with api_client(settings, tx_workspace, engine, env.client) as http:
        await env.shutdown()
        r = await http.post("/api/messages", json=_receipt(), headers=make_key(engine, "send"))
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM_JSON
    with session_scope(engine) as s:
        [row] = s.exec(select(Message).where(Message.campaign_id == "tx:api")).all()
    assert row.state == "failed"
    assert (row.error or "").startswith("not sent: the send could not be started")
