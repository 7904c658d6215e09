"""The transactional send path (``workflows.transactional``) on Temporal's time-skipping server,
a real worker and a real aiosmtpd relay: its category (a marketing unsubscribe does not stop a
receipt; a bounce, a complaint, an erasure and the suppression list do), the template's
``data``, attachments arriving byte for byte, one email however often the message is started,
and a domain's deferral waited out with one email at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts import outbox, repository, suppressions
from contacts.attachments import Attachment, AttachmentsTooLarge, attachments_of
from contacts.db import session_scope
from contacts.erasure import erase_contact
from contacts.models import ContactStatus, Link, Message, MessageState, utcnow
from drip.settings import Settings
from tests.engine_support import Journeys, journeys, workspace_with
from tests.workflows.recording import maybe_record
from tests.workflows.test_smtp_faults import FaultySmtp
from workflows.activities import INTERRUPTED
from workflows.resend_activity import request_resends
from workflows.transactional import (
    TX_CAMPAIGN,
    TransactionalEmail,
    TransactionalResult,
    TxRequest,
    start_transactional,
    tx_workflow_id,
)

RECEIPT = """\
<mj-section>
  <mj-column>
    <mj-text>
      <p>Order {{ data.order_id }} for {{ contact.first_name | default('you') }}</p>
      <ul>{% for line in data.lines %}<li>{{ line.name }} x{{ line.qty }}</li>{% endfor %}</ul>
      <p>Items field: {{ data.order.items }}; total {{ data.total }}</p>
    </mj-text>
  </mj-column>
</mj-section>
"""
ANN = "ann@example.com"


@pytest.fixture
def smtp() -> Iterator[FaultySmtp]:
    """Replaces the suite's relay (the ``settings`` fixture sends to this one)."""
    server = FaultySmtp().start()
    yield server
    server.stop()


def _with_receipt(tmp_path: Path, config: str = "") -> Workspace:
    """The demo workspace without campaigns, with a ``receipt`` template."""
    root = workspace_with(tmp_path, config=config).root
    (root / "emails" / "receipt.mjml").write_text(RECEIPT)
    return load_workspace(root)


@pytest.fixture
def tx_workspace(tmp_path: Path) -> Workspace:
    return _with_receipt(tmp_path)


# The pace climbs back within a second of the backoff's end: the resumed send is not held
# further by the recovering pace, which counts in real seconds the time-skipping server skips.
QUICK_RECOVERY = """
deliverability:
  backoff: {first: 2m, max: 10m, recover: 1s}
"""


def _request(contact_id: int, message_id: str = "m-1", **changes: Any) -> TxRequest:
    values: dict[str, Any] = {
        "message_id": message_id,
        "contact_id": contact_id,
        "template": "receipt",
        "subject": "Your receipt {{ data.order_id }}",
        "data": {
            "order_id": "A-17",
            "lines": [{"name": "Tent", "qty": 1}],
            "total": "120.00",
            "order": {"items": "3 boxes"},
        },
    }
    return TxRequest(**(values | changes))


async def _send(
    d: Journeys, settings: Settings, workspace: Workspace, req: TxRequest
) -> TransactionalResult:
    await start_transactional(d.env.client, d.engine, workspace, req, settings=settings)
    handle = d.env.client.get_workflow_handle_for(
        TransactionalEmail.run, tx_workflow_id(req.message_id)
    )
    return await asyncio.wait_for(handle.result(), timeout=30)


def _row(engine: Engine, message_id: str) -> Message:
    with session_scope(engine) as s:
        row = outbox.get_message(s, message_id)
    assert row is not None
    return row


async def test_a_marketing_unsubscribed_contact_still_gets_the_receipt_with_its_data(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN, first_name="Ann")
        await d.unsubscribe(ann)
        result = await _send(d, settings, tx_workspace, _request(ann))
    assert (result.state, result.error) == ("sent", None)
    [received] = smtp.mailbox.to(ANN)
    assert received.subject == "Your receipt A-17"
    html = received.html()
    assert "Order A-17 for Ann" in html
    assert "<li>Tent x1</li>" in html
    assert "/t/o/" in html  # tracked by default: the pixel
    # a key named like a dict method is the value, never the method
    assert "Items field: 3 boxes; total 120.00" in html
    # not list mail: no one-click unsubscribe (it would end marketing mail, not receipts)
    assert received.message["List-Unsubscribe"] is None
    assert received.message["List-Id"] is None
    row = _row(engine, "m-1")
    assert (row.state, row.campaign_id, row.step_id) == (MessageState.sent, TX_CAMPAIGN, "receipt")
    assert received.message["Message-ID"] == row.header_message_id
    assert d.get(ann).status == ContactStatus.unsubscribed  # the receipt changed nothing


@pytest.mark.parametrize("why", ["bounced", "complained", "erased", "listed", "domain"])
async def test_a_bounced_complained_erased_or_listed_contact_gets_nothing(
    why: str,
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN, first_name="Ann")
        with session_scope(engine) as s:
            if why in ("bounced", "complained"):
                assert repository.set_status(s, ann, ContactStatus(why))
            elif why == "erased":
                erase_contact(s, ann, requested_by="test")
            elif why == "listed":
                suppressions.add(s, ANN, "manual", "test")
            else:
                suppressions.add(s, "example.com", "manual", "test")
        result = await _send(d, settings, tx_workspace, _request(ann))
    assert result.state == "suppressed"
    assert smtp.mailbox.messages == []
    row = _row(engine, "m-1")
    assert row.state == MessageState.suppressed
    expected = {
        "bounced": "contact is bounced",
        "complained": "contact is complained",
        "erased": "contact is erased",
    }
    if why in expected:
        assert row.error == expected[why]
    else:
        assert (row.error or "").startswith("suppressed: ")


async def test_a_role_address_gets_its_receipt(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    """Role addresses (security@, postmaster@) are kept from marketing mail only."""
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        billing = d.contact("security@example.com")
        result = await _send(d, settings, tx_workspace, _request(billing))
    assert result.state == "sent"
    assert len(smtp.mailbox.to("security@example.com")) == 1


async def test_an_attachment_arrives_intact(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
    files = [
        Attachment("reçu été.pdf", "application/pdf", pdf),
        Attachment("notes.txt", "text/plain", b"line one\r\nline two\n"),
    ]
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        result = await _send(d, settings, tx_workspace, _request(ann, attachments=files))
    assert result.state == "sent"
    [received] = smtp.mailbox.messages
    assert received.message.get_content_type() == "multipart/mixed"
    got = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in received.message.iter_attachments()
    ]
    assert got == [(f.filename, f.content_type, f.content) for f in files]
    assert "Order A-17" in received.html()  # the alternatives are still there
    with session_scope(engine) as s:
        stored = attachments_of(s, "m-1")
    # sent: the bytes are dropped (nothing reads them again), what the API shows stays
    assert [(a.filename, a.size, a.sha256, a.content) for a in stored] == [
        (f.filename, len(f.content), hashlib.sha256(f.content).hexdigest(), b"") for f in files
    ]


async def test_attachments_over_the_cap_are_refused_and_nothing_is_recorded(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    capped = settings.model_copy(update={"tx_attachments_max_bytes": 100})
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        big = [Attachment("a.bin", "application/octet-stream", b"x" * 101)]
        with pytest.raises(AttachmentsTooLarge):
            await start_transactional(
                d.env.client, engine, tx_workspace, _request(ann, attachments=big), settings=capped
            )
    with session_scope(engine) as s:
        assert outbox.get_message(s, "m-1") is None
        assert attachments_of(s, "m-1") == []


async def test_started_twice_one_email_at_the_relay(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        req = _request(ann)
        await asyncio.gather(
            start_transactional(d.env.client, engine, tx_workspace, req, settings=settings),
            start_transactional(d.env.client, engine, tx_workspace, req, settings=settings),
        )
        first = await _send(d, settings, tx_workspace, req)
        again = await _send(d, settings, tx_workspace, req)  # after it finished, too
    assert first == again
    assert first.state == "sent"
    assert len(smtp.mailbox.messages) == 1
    assert _row(engine, "m-1").attempts == 1


async def test_a_domain_deferral_is_waited_out_and_sent_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    """A ``451 4.7.1`` makes the recipient's domain back off (the worker's pacing): the
    workflow sleeps until the domain takes mail again, then sends; one email arrives."""
    workspace = _with_receipt(tmp_path, QUICK_RECOVERY)
    smtp.mailbox.fail("RCPT", "451 4.7.1 <ann@example.com>: try later", times=1)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        await start_transactional(d.env.client, engine, workspace, _request(ann), settings=settings)
        await d.advance(timedelta(minutes=5))  # the domain's backoff: 2 minutes
        result = await _send(d, settings, workspace, _request(ann))  # joins the one started
        handle = d.env.client.get_workflow_handle(tx_workflow_id("m-1"))
        kinds = [e.event_type async for e in handle.fetch_history_events()]
        await maybe_record(handle, "transactional-deferred")
    assert result.state == "sent"
    assert smtp.mailbox.faults["RCPT"] == 1
    assert len(smtp.mailbox.to(ANN)) == 1
    # each wait is the workflow's timer (the domain's backoff, then its pace as it recovers),
    # followed by a send: not Temporal retrying at once
    timers = kinds.count(EventType.EVENT_TYPE_TIMER_FIRED)
    assert timers >= 1
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == timers + 1


async def test_a_bad_request_is_refused_before_anything_is_recorded(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        pdf = b"%PDF-1.4"
        for bad in (
            _request(ann, template="no-such-template"),
            _request(ann + 1),  # no such contact
            _request(ann, message_id="<not@an-id>"),
            _request(ann, from_addr="Shop <shop@acme.example>\r\nBcc: all@example.com"),
            _request(ann, reply_to="not an address"),
            _request(ann, attachments=[Attachment("a.pdf", "pdf", pdf)]),
            _request(ann, attachments=[Attachment("a\r\nX-Evil: 1.pdf", "application/pdf", pdf)]),
            _request(ann, attachments=[Attachment("", "application/pdf", pdf)]),
        ):
            with pytest.raises(ValueError):
                await start_transactional(
                    d.env.client, engine, tx_workspace, bad, settings=settings
                )
    assert d.messages() == []


async def test_a_paused_contact_gets_it_now_and_untracked_means_as_written(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    """A pause on the preference page holds marketing mail, not a receipt; ``track=False``
    sends the links as written and no pixel."""
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        with session_scope(engine) as s:
            contact = repository.get_contact(s, ann)
            contact.paused_until = utcnow() + timedelta(days=30)
            s.add(contact)
        result = await _send(d, settings, tx_workspace, _request(ann, track=False))
    assert result.state == "sent"
    [received] = smtp.mailbox.messages
    assert "/t/o/" not in received.html() and "/t/c/" not in received.html()
    with session_scope(engine) as s:
        assert outbox.get_message(s, "m-1") is not None
        assert s.exec(select(Link).where(Link.message_id == "m-1")).all() == []


async def test_an_interrupted_transactional_email_is_not_resent(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tx_workspace: Workspace,
) -> None:
    """Its data lives only in its workflow's input: a resend could not rebuild it, so it is
    refused, and the row stays ``interrupted``."""
    async with journeys(time_env, settings, engine, tx_workspace, smtp.mailbox) as d:
        ann = d.contact(ANN)
        await _send(d, settings, tx_workspace, _request(ann))
        with session_scope(engine) as s:
            outbox.finish_send(s, "m-1", MessageState.interrupted, INTERRUPTED)
        [outcome] = await request_resends(
            d.env.client,
            engine,
            ["m-1"],
            requested_by="test (ops)",
            task_queue=settings.temporal_task_queue,
        )
    assert outcome.state == "refused"
    assert outcome.detail.startswith("a transactional email is not resent")
    assert _row(engine, "m-1").state == MessageState.interrupted
    assert len(smtp.mailbox.messages) == 1
