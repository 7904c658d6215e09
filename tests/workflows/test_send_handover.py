"""The outbox row of a journey email turns ``sending`` only when a connection is ready for it and
its bytes are about to go out, not while the send waits for one of the pool's connections: a send
cancelled or handed back while it waits leaves the row ``pending``, and its retry sends it once.

The ``send_email`` activity runs in the SDK's activity harness (``ActivityEnvironment``, which
cancels it the way a worker does) against real SQLite and a real SMTP server that holds its reply
to DATA, with one connection, so a second send has to wait for the first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from campaigns.workspace import Workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import MessageState
from drip.settings import Settings
from emails.sender import SmtpTransport
from tests.support import SmtpServer
from workflows.activities import JourneyActivities
from workflows.deploy import deploy_workspace
from workflows.types import SendEmailInput, SendEmailResult


@pytest.fixture
def sends(engine: Engine, workspace: Workspace) -> Callable[[str], SendEmailInput]:
    deploy_workspace(engine, workspace)
    version = workspace.plans["welcome"].version

    def send(name: str) -> SendEmailInput:
        with session_scope(engine) as s:
            contact, _ = repository.upsert_contact(s, f"{name}@example.com", {"first_name": name})
            assert contact.id is not None
            contact_id = contact.id
        workflow_id = f"journey/welcome/{contact_id}/1"
        return SendEmailInput(
            message_id=f"message-{name}",
            key=f"{workflow_id}/welcome/1",
            workflow_id=workflow_id,
            contact_id=contact_id,
            campaign_id="welcome",
            campaign_version=version,
            step_id="welcome",
            template="welcome",
            subject="Welcome",
        )

    return send


@pytest.fixture
async def one_connection(settings: Settings) -> AsyncIterator[SmtpTransport]:
    transport = SmtpTransport(settings.model_copy(update={"smtp_max_connections": 1}))
    yield transport
    await transport.close()


def _state(engine: Engine, message_id: str) -> MessageState | None:
    with session_scope(engine) as s:
        row = outbox.get_message(s, message_id)
        return None if row is None else MessageState(row.state)


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def _second_waits_behind_first(
    activities: JourneyActivities,
    engine: Engine,
    smtp: SmtpServer,
    first: SendEmailInput,
    second: SendEmailInput,
    second_env: ActivityEnvironment,
) -> tuple[asyncio.Task[SendEmailResult], asyncio.Task[SendEmailResult]]:
    """The first send holds the only connection (the relay holds its reply); the second has
    reserved its row and waits for the connection."""
    a = asyncio.ensure_future(ActivityEnvironment().run(activities.send_email, first))
    await smtp.mailbox.wait_for(lambda m: m.data_started == 1)
    b = asyncio.ensure_future(second_env.run(activities.send_email, second))
    await _until(lambda: _state(engine, second.message_id) is not None, "the row is reserved")
    return a, b


async def test_a_send_cancelled_while_waiting_for_a_connection_is_sent_by_its_retry(
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
    sends: Callable[[str], SendEmailInput],
    one_connection: SmtpTransport,
) -> None:
    smtp.mailbox.delay = 1.0
    activities = JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=one_connection
    )
    ann, bob = sends("ann"), sends("bob")
    waiting = ActivityEnvironment()
    a, b = await _second_waits_behind_first(activities, engine, smtp, ann, bob, waiting)
    assert _state(engine, ann.message_id) == MessageState.sending  # its bytes are on the relay
    assert _state(engine, bob.message_id) == MessageState.pending  # not while it waits
    waiting.cancel()  # the workflow cancelled it, or a stop ran out of time
    with pytest.raises(asyncio.CancelledError):
        await b
    assert (await a).state == "sent"
    assert _state(engine, bob.message_id) == MessageState.pending

    smtp.mailbox.delay = 0.0
    assert (await ActivityEnvironment().run(activities.send_email, bob)).state == "sent"
    assert sorted(m.recipients[0] for m in smtp.mailbox.messages) == [
        "ann@example.com",
        "bob@example.com",
    ]


async def test_a_stopping_transport_hands_the_waiting_send_back_unsent(
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
    sends: Callable[[str], SendEmailInput],
    one_connection: SmtpTransport,
) -> None:
    smtp.mailbox.delay = 1.0
    activities = JourneyActivities(
        settings=settings, engine=engine, workspace=workspace, transport=one_connection
    )
    ann, bob = sends("ann"), sends("bob")
    a, b = await _second_waits_behind_first(
        activities, engine, smtp, ann, bob, ActivityEnvironment()
    )
    tally = one_connection.stop_sending()  # the worker got SIGTERM
    with pytest.raises(ApplicationError) as handed_back:
        await b
    # retryable, and benign: the SDK logs it at DEBUG, not a traceback per queued send
    assert handed_back.value.type == "SendWithdrawn"
    assert not handed_back.value.non_retryable
    assert handed_back.value.category == ApplicationErrorCategory.BENIGN
    assert (await a).state == "sent"  # the transaction under way finished
    assert _state(engine, bob.message_id) == MessageState.pending
    assert (tally.in_flight, tally.waiting, tally.finished, tally.withdrawn, tally.cut_off) == (
        1,
        1,
        1,
        1,
        0,
    )
    assert smtp.mailbox.subjects() == ["Welcome"]

    # the retry, on another worker (another transport), sends it once
    smtp.mailbox.delay = 0.0
    other = SmtpTransport(settings)
    try:
        retry = JourneyActivities(
            settings=settings, engine=engine, workspace=workspace, transport=other
        )
        assert (await ActivityEnvironment().run(retry.send_email, bob)).state == "sent"
    finally:
        await other.close()
    assert sorted(m.recipients[0] for m in smtp.mailbox.messages) == [
        "ann@example.com",
        "bob@example.com",
    ]
