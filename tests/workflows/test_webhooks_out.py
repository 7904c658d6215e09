"""Outgoing event webhooks end to end: a real HTTPS receiver on loopback (trustme CA), real
Temporal (time-skipping for the hour- and day-long outages), the contact database on SQLite and
PostgreSQL, signatures checked with the ``standardwebhooks`` reference library."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import trustme
from sqlalchemy.engine import Engine
from sqlmodel import select
from standardwebhooks import Webhook
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contacts.db import session_scope
from contacts.webhook_endpoints import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_secret
from contacts.webhook_events import CONTACT_CREATED, CONTACT_UPDATED, EVENT_TYPES, emit
from drip.settings import Settings
from emails.sender import SmtpTransport
from tests.receiver import Received, Server
from tests.support import ROOT, SmtpServer
from workflows.outbound import OutboundPolicy
from workflows.webhook_lane import WebhookLane
from workflows.webhooks_out import (
    WebhookDispatcher,
    WebhookOutActivities,
    resend_delivery,
    sign,
)

LOOPBACK = ("127.0.0.1/32", "::1/128")


class Receiver(Server):
    """The test receiver, which can be down (503 to everything) and keeps what it accepted."""

    down: bool = False

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.down:
            await super()._answer(reader, writer)
            return
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(
            (
                int(v)
                for k, _, v in (x.partition(":") for x in head.split("\r\n"))
                if k.strip().lower() == "content-length"
            ),
            0,
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 503 Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    def accepted(self) -> list[Received]:
        return list(self.received)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def receiver(ca: trustme.CA) -> AsyncIterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    running = Receiver(context)
    await running.start()
    yield running
    await running.stop()


@dataclass
class Rig:
    env: WorkflowEnvironment
    engine: Engine
    dispatcher: WebhookDispatcher
    task_queue: str

    def endpoint(self, url: str, secret: str, types: list[str] | None = None) -> int:
        with session_scope(self.engine) as s:
            row = WebhookEndpoint(
                name=f"ep-{uuid.uuid4().hex[:6]}",
                url=url,
                event_types=types or ["*"],
                secret=secret,
                owner_email="ops@example.com",
            )
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id

    def emit(self, type_: str, contact_id: int | None, **data: object) -> None:
        with session_scope(self.engine) as s:
            emit(s, type_, contact_id=contact_id, data=dict(data))

    def deliveries(self) -> list[WebhookDelivery]:
        with session_scope(self.engine) as s:
            return list(s.exec(select(WebhookDelivery).order_by(WebhookDelivery.id)).all())

    def endpoint_row(self, endpoint_id: int) -> WebhookEndpoint:
        with session_scope(self.engine) as s:
            row = s.get(WebhookEndpoint, endpoint_id)
            assert row is not None
            return row

    async def until(self, check: Callable[[], bool], within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.05)


@pytest.fixture
async def rig(
    time_env: WorkflowEnvironment, any_engine: Engine, ca: trustme.CA, settings: Settings
) -> AsyncIterator[Rig]:
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    policy = OutboundPolicy(
        allowed_hosts=frozenset(), allowed_networks=LOOPBACK, verify=trust, timeout=5.0
    )
    transport = SmtpTransport(settings)
    acts = WebhookOutActivities(
        engine=any_engine, policy=policy, transport=transport, sender="drip@example.com"
    )
    queue = f"webhooks-{uuid.uuid4()}"
    async with Worker(
        time_env.client, task_queue=queue, workflows=[WebhookLane], activities=acts.all()
    ):
        yield Rig(
            time_env,
            any_engine,
            WebhookDispatcher(client=time_env.client, engine=any_engine, task_queue=queue),
            queue,
        )
    await transport.close()


def _delivered(rig: Rig, count: int) -> Callable[[], bool]:
    return lambda: sum(d.state == "delivered" for d in rig.deliveries()) == count


async def test_an_event_arrives_once_signed_the_standard_webhooks_way(
    rig: Rig, receiver: Receiver
) -> None:
    secret = new_secret()
    rig.endpoint(receiver.url("/hook"), secret)
    rig.emit(CONTACT_CREATED, 7, email="ann@example.com")

    assert await rig.dispatcher.dispatch_once() == 1
    assert await rig.dispatcher.dispatch_once() == 0  # stamped: never handed over twice
    await rig.until(_delivered(rig, 1))

    [request] = receiver.received
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "contact.created"
    assert payload["contact_id"] == 7
    assert payload["data"] == {"email": "ann@example.com"}
    assert request.headers["webhook-id"] == payload["id"]
    [delivery] = rig.deliveries()
    assert (delivery.attempts, delivery.last_status) == (1, 200)


async def test_every_event_type_arrives_once_through_the_workers_dispatch_loop(
    rig: Rig, receiver: Receiver
) -> None:
    secret = new_secret()
    rig.endpoint(receiver.url("/hook"), secret)
    for n, type_ in enumerate(EVENT_TYPES):
        rig.emit(type_, None if type_.startswith("broadcast.") else n, n=n)
    loop = asyncio.create_task(rig.dispatcher.run_forever(interval=0.05))
    try:
        await rig.until(_delivered(rig, len(EVENT_TYPES)))
    finally:
        loop.cancel()
    arrived = [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
    assert sorted(p["type"] for p in arrived) == sorted(EVENT_TYPES)
    assert len({p["id"] for p in arrived}) == len(EVENT_TYPES)


async def test_a_receiver_down_for_an_hour_gets_everything_after_in_order_per_contact(
    rig: Rig, receiver: Receiver
) -> None:
    secret = new_secret()
    rig.endpoint(receiver.url("/hook"), secret)
    receiver.down = True
    for n in range(3):
        rig.emit(CONTACT_UPDATED, 1, n=n)
        rig.emit(CONTACT_UPDATED, 2, n=n)
    await rig.dispatcher.dispatch_once()
    await rig.until(lambda: len(receiver.received) == 0 and rig.deliveries()[0].attempts >= 1)
    await rig.env.sleep(timedelta(hours=1))
    assert not any(d.state == "delivered" for d in rig.deliveries())
    receiver.down = False
    await rig.env.sleep(timedelta(hours=1))
    await rig.until(_delivered(rig, 6))

    got = [json.loads(r.body) for r in receiver.received]
    ids = [p["id"] for p in got]
    assert len(ids) == len(set(ids)) == 6
    for contact in (1, 2):
        assert [p["data"]["n"] for p in got if p["contact_id"] == contact] == [0, 1, 2]
    for request in receiver.received:
        Webhook(secret).verify(request.body, request.headers)


async def test_a_private_address_is_refused_without_retrying(rig: Rig, receiver: Receiver) -> None:
    endpoint_id = rig.endpoint("https://10.0.0.1/hook", new_secret())
    rig.emit(CONTACT_CREATED, 3)
    rig.emit(CONTACT_UPDATED, 3)  # queued behind it in the same lane: refused in its turn
    await rig.dispatcher.dispatch_once()
    await rig.until(lambda: [d.state for d in rig.deliveries()] == ["failed", "failed"])

    for delivery in rig.deliveries():
        assert delivery.attempts == 1
        assert "refused" in (delivery.last_error or "")
    assert receiver.received == []
    # a refusal is not a day of failures: the endpoint stays enabled
    assert rig.endpoint_row(endpoint_id).enabled


async def test_a_resend_delivers_again_with_the_same_id(rig: Rig, receiver: Receiver) -> None:
    secret = new_secret()
    rig.endpoint(receiver.url("/hook"), secret)
    rig.emit(CONTACT_CREATED, 4)
    await rig.dispatcher.dispatch_once()
    await rig.until(_delivered(rig, 1))
    [delivery] = rig.deliveries()
    assert delivery.id is not None

    await resend_delivery(rig.env.client, rig.engine, rig.task_queue, delivery.id)
    await rig.until(lambda: len(receiver.received) == 2 and _delivered(rig, 1)())

    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    Webhook(secret).verify(second.body, second.headers)
    with session_scope(rig.engine) as s:
        assert len(s.exec(select(WebhookAttempt)).all()) == 2


async def test_an_endpoint_failing_for_a_day_is_disabled_and_its_owner_told(
    rig: Rig, receiver: Receiver, smtp: SmtpServer
) -> None:
    endpoint_id = rig.endpoint(receiver.url("/hook"), new_secret())
    receiver.down = True
    rig.emit(CONTACT_CREATED, 5)
    await rig.dispatcher.dispatch_once()
    await rig.until(lambda: rig.deliveries()[0].attempts >= 1)
    await rig.env.sleep(timedelta(days=1, hours=1))
    await rig.until(lambda: rig.deliveries()[0].state == "failed")

    endpoint = rig.endpoint_row(endpoint_id)
    assert not endpoint.enabled
    assert "failing since" in (endpoint.disabled_reason or "")
    await smtp.mailbox.wait_for(lambda box: bool(box.to("ops@example.com")))
    [mail] = smtp.mailbox.to("ops@example.com")
    assert "disabled" in mail.subject

    # a disabled endpoint gets no new deliveries
    rig.emit(CONTACT_UPDATED, 5)
    await rig.dispatcher.dispatch_once()
    assert len(rig.deliveries()) == 1


def test_the_docs_verifier_accepts_every_rotation_signature_and_refuses_others() -> None:
    """The by-hand verification docs/concepts/webhooks-out.md shows a receiver works."""
    page = (ROOT / "docs" / "concepts" / "webhooks-out.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    [by_hand] = [b for b in blocks if "def verify(" in b]
    namespace: dict[str, Any] = {}
    exec(by_hand, namespace)  # our own documentation's example
    old, new = new_secret(), new_secret()
    body, stamp = b'{"type":"contact.created"}', int(time.time())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign("evt_1", stamp, body, [new, old]),
    }
    verify = namespace["verify"]
    assert verify(new, body, headers) and verify(old, body, headers)
    assert not verify(new_secret(), body, headers)
    assert not verify(new, body + b" ", headers)
    assert Webhook(old).verify(body, headers) == {"type": "contact.created"}
