"""SMTP faults against a real server, through real journeys: transient ones are retried and the
email is delivered exactly once; permanent ones are bounces that suppress the contact (a hard one
at once, soft ones at ``soft_bounce_limit``) and end its journeys; nothing is lost.

The relay is aiosmtpd with a handler that answers from a per-test script: a reply (or ``drop``,
closing the connection without one) for the next commands of a kind, then normal service.
Temporal is the time-skipping server, so the send retries' backoff (``SEND_RETRY``: 5 s, doubling)
and the campaigns' waits take no real time. Emails are counted at the SMTP server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from contacts import repository
from contacts.db import session_scope
from contacts.models import ContactStatus, EnrolmentState, MessageState
from drip.settings import Settings
from tests.engine_support import Journeys, journeys, workspace_with
from tests.support import Mailbox, SmtpServer

# --- a relay that misbehaves on cue --------------------------------------------------------------


@dataclass
class Faulty(Mailbox):
    """A mailbox whose server answers the next ``greeting``, ``MAIL``, ``RCPT`` or ``DATA`` from
    ``script`` while it has replies for it. ``drop`` closes the connection without a reply; at
    DATA that is after the whole message arrived, and, as RFC 5321 asks of a server that never
    said 250, the message is not kept."""

    script: dict[str, list[str]] = field(default_factory=dict)
    #: scripted answers given, per command
    faults: Counter[str] = field(default_factory=Counter)

    def fail(self, stage: str, reply: str, times: int = 1) -> None:
        with self.lock:
            self.script[stage] = [reply] * times

    def _fault(self, stage: str) -> str | None:
        with self.lock:
            replies = self.script.get(stage)
            if not replies:
                return None
            self.faults[stage] += 1
            return replies.pop(0)

    def _answer(self, server: Any, reply: str) -> str:
        if reply == "drop":
            server.transport.close()
        return reply

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self._fault("MAIL")
        if reply is not None:
            return self._answer(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._fault("RCPT")
        if reply is not None:
            return self._answer(server, reply)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._fault("DATA")
        if reply is not None:
            return self._answer(server, reply)
        return await super().handle_DATA(server, session, envelope)


class _Smtp(SMTP):
    async def _handle_client(self) -> None:
        reply = self.event_handler._fault("greeting")
        if reply is None:
            await super()._handle_client()
            return
        if reply != "drop":
            await self.push(reply)
        assert self.transport is not None
        self.transport.close()


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _Smtp(self.handler, **self.SMTP_kwargs)


class FaultySmtp(SmtpServer):
    def __init__(self) -> None:
        super().__init__()
        self.mailbox: Faulty = Faulty()

    def start(self) -> FaultySmtp:
        self.controller = _Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self


@pytest.fixture
def smtp() -> Iterator[FaultySmtp]:
    """Replaces the suite's relay (the ``settings`` fixture sends to this one)."""
    server = FaultySmtp().start()
    yield server
    server.stop()


# --- campaigns -----------------------------------------------------------------------------------

NEWS = """\
id: news
name: News
trigger: {form: newsletter}
steps:
  - id: hello
    send_email: {template: welcome, subject: Hello}
  - id: pause
    wait: {duration: 1d}
  - id: again
    send_email: {template: tips, subject: Again}
"""

# a second journey of the same contact, parked on a long wait while the first one sends
LATER = """\
id: later
name: Later
trigger: {form: newsletter}
steps:
  - id: sleep
    wait: {duration: 10d}
  - id: promo
    send_email: {template: tips, subject: Promo}
"""

SERIES = """\
id: series
name: Series
trigger: {form: newsletter}
steps:
  - id: one
    send_email: {template: welcome, subject: One}
  - id: w1
    wait: {duration: 1d}
  - id: two
    send_email: {template: tips, subject: Two}
  - id: w2
    wait: {duration: 1d}
  - id: three
    send_email: {template: tips, subject: Three}
  - id: w3
    wait: {duration: 1d}
  - id: four
    send_email: {template: tips, subject: Four}
"""

ANN = "ann@example.com"


def _state(d: Journeys, contact_id: int, step_id: str) -> MessageState | None:
    rows = d.messages(contact_id, step_id)
    return rows[-1].state if rows else None


async def _until_state(
    d: Journeys, contact_id: int, step_id: str, state: MessageState, within: float = 30
) -> None:
    """Wait (real time) for the email of ``step_id`` to reach ``state``."""
    deadline = time.monotonic() + within
    while _state(d, contact_id, step_id) != state:
        assert time.monotonic() < deadline, f"{step_id}: {_state(d, contact_id, step_id)}"
        await asyncio.sleep(0.05)


def _bounces(d: Journeys, contact_id: int) -> list[tuple[str, Any, Any, str | None]]:
    return [
        (e.name, e.properties["code"], e.properties["status"], e.message_id)
        for e in d.events(contact_id, "bounce")
    ]


# --- transient faults: retried, delivered once ---------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "times"),
    [
        ("greeting", "421 4.3.2 service not available, closing channel", 2),
        ("MAIL", "421 4.7.0 too many connections, try later", 2),
        ("RCPT", "451 4.3.0 temporary lookup failure", 2),
        ("DATA", "451 4.3.0 queue full, try later", 3),
        ("RCPT", "drop", 1),
        ("DATA", "drop", 2),
    ],
    ids=["greeting-421", "mail-421", "rcpt-451", "data-451", "rcpt-drop", "data-drop"],
)
async def test_a_transient_fault_is_retried_and_the_email_delivered_once(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
    stage: str,
    reply: str,
    times: int,
) -> None:
    """421 and 451 mean "later"; a connection dropped before the relay said 250 (also after the
    whole message went over DATA) means it kept nothing, so the retry is not a duplicate."""
    smtp.mailbox.fail(stage, reply, times)
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, NEWS), smtp.mailbox
    ) as d:
        ann = await d.form("newsletter", ANN)
        await d.advance(timedelta(minutes=2))  # the backoff: 5 s, 10 s, 20 s
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        hello = d.message(ann, "hello")
        assert (hello.state, hello.error, hello.attempts) == (MessageState.sent, None, times + 1)
        [enrolment] = await d.finish()
    assert smtp.mailbox.faults == {stage: times}
    assert smtp.mailbox.subjects() == ["Hello", "Again"]  # each exactly once
    assert [m.recipients for m in smtp.mailbox.messages] == [[ANN], [ANN]]
    again = d.message(ann, "again")
    assert (again.state, again.attempts) == (MessageState.sent, 1)
    assert d.get(ann).status == ContactStatus.subscribed
    assert d.events(ann, "bounce") == []
    assert enrolment.state == EnrolmentState.completed


# --- permanent faults: bounces -------------------------------------------------------------------


async def test_a_hard_bounce_suppresses_the_contact_and_ends_its_journeys(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    smtp.mailbox.fail("RCPT", "550 5.1.1 <ann@example.com>: recipient address rejected")
    workspace = workspace_with(tmp_path, NEWS, LATER)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        ann = await d.form("newsletter", ANN)
        await _until_state(d, ann, "hello", MessageState.failed)
        enrolments = await d.finish()
    assert smtp.mailbox.messages == []
    assert smtp.mailbox.faults == {"RCPT": 1}  # refused once, never retried
    [hello] = d.messages(ann)  # neither the second email nor the other journey's was tried
    assert (hello.step_id, hello.state, hello.attempts) == ("hello", MessageState.failed, 1)
    assert "550" in (hello.error or "")
    assert d.get(ann).status == ContactStatus.bounced
    assert _bounces(d, ann) == [("hard", 550, "5.1.1", hello.id)]
    assert all(e.routed_at is not None for e in d.events(ann, "bounce"))
    # both running journeys ended on the bounce, as on an unsubscribe
    assert sorted((e.campaign_id, e.state, e.end_reason) for e in enrolments) == [
        ("later", EnrolmentState.exited, "bounce"),
        ("news", EnrolmentState.exited, "bounce"),
    ]


async def test_soft_bounces_suppress_only_at_the_limit(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    """Mailbox full three times: the first two soft bounces fail their emails and the journey
    carries on; the third (``soft_bounce_limit``) suppresses the contact and ends its journeys."""
    assert settings.soft_bounce_limit == 3
    smtp.mailbox.fail("DATA", "552 5.2.2 mailbox full", times=3)
    workspace = workspace_with(tmp_path, SERIES, LATER)
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as d:
        ann = await d.form("newsletter", ANN)
        for count, step in enumerate(["one", "two", "three"], start=1):
            if count > 1:
                await d.advance(timedelta(days=1))
            await _until_state(d, ann, step, MessageState.failed)
            assert [name for name, *_ in _bounces(d, ann)] == ["soft"] * count
            if count < 3:
                assert d.get(ann).status == ContactStatus.subscribed
                assert {e.state for e in d.enrolments(ann)} == {EnrolmentState.running}
        assert d.get(ann).status == ContactStatus.bounced
        enrolments = await d.finish()
    assert smtp.mailbox.messages == []
    assert smtp.mailbox.faults == {"DATA": 3}
    rows = d.messages(ann)
    assert [(m.step_id, m.state, m.attempts) for m in rows] == [
        (step, MessageState.failed, 1) for step in ("one", "two", "three")
    ]
    assert _bounces(d, ann) == [("soft", 552, "5.2.2", m.id) for m in rows]
    assert sorted((e.campaign_id, e.state, e.end_reason) for e in enrolments) == [
        ("later", EnrolmentState.exited, "bounce"),
        ("series", EnrolmentState.exited, "bounce"),
    ]


async def test_one_soft_bounce_fails_one_email_and_nothing_more(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
) -> None:
    smtp.mailbox.fail("DATA", "550 5.7.1 message rejected as spam")
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, NEWS), smtp.mailbox
    ) as d:
        ann = await d.form("newsletter", ANN)
        [enrolment] = await d.finish()
    assert smtp.mailbox.subjects() == ["Again"]
    assert _state(d, ann, "hello") == MessageState.failed
    assert _state(d, ann, "again") == MessageState.sent
    assert d.get(ann).status == ContactStatus.subscribed
    assert _bounces(d, ann) == [("soft", 550, "5.7.1", d.message(ann, "hello").id)]
    assert enrolment.state == EnrolmentState.completed


# --- suppression is checked at send time ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["hard", "complaint"])
async def test_a_contact_suppressed_mid_journey_gets_nothing_more(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: FaultySmtp,
    tmp_path: Path,
    kind: str,
) -> None:
    """An ESP reports a bounce or complaint that is not routed yet (the journey is not told):
    the next send still finds the contact suppressed and sends nothing."""
    async with journeys(
        time_env, settings, engine, workspace_with(tmp_path, NEWS), smtp.mailbox
    ) as d:
        ann = await d.form("newsletter", ANN)
        bo = await d.form("newsletter", "bo@example.com")  # the same journey, not suppressed
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2)
        with session_scope(engine) as s:
            assert repository.record_bounce(
                s,
                contact_id=ann,
                kind=kind,  # type: ignore[arg-type]
                dedupe_key=f"esp:{kind}:1",
                soft_limit=settings.soft_bounce_limit,
                message_id=d.message(ann, "hello").id,
                source="test",
            )
        enrolments = await d.finish()
    assert sorted((m.recipients[0], m.subject) for m in smtp.mailbox.messages) == [
        (ANN, "Hello"),
        ("bo@example.com", "Again"),
        ("bo@example.com", "Hello"),
    ]
    again = d.message(ann, "again")
    status = "bounced" if kind == "hard" else "complained"
    assert (again.state, again.error) == (MessageState.suppressed, f"contact is {status}")
    assert d.get(ann).status == status
    assert [m.state for m in d.messages(bo)] == [MessageState.sent, MessageState.sent]
    assert {e.state for e in enrolments} == {EnrolmentState.completed}
