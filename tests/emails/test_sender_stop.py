"""SmtpTransport's hand-over and stop, against a real SMTP server that holds its reply to DATA:
``on_connection`` runs once a connection is ready for the message (never while the send waits
for one), and ``stop_sending`` lets the transactions under way finish while every send without
a connection gives up unsent (``SendWithdrawn``), whatever it was waiting for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from drip.settings import Settings
from emails.errors import SendWithdrawn
from emails.sender import OnConnection, SmtpTransport
from tests.support import SmtpServer

SENDER = "hello@acme.example"


def _data(n: int) -> bytes:
    return (
        f"From: hello@acme.example\r\nTo: p{n}@example.com\r\nSubject: m{n}\r\n"
        f"Message-ID: <m{n}@acme.example>\r\n\r\nHello\r\n"
    ).encode()


def _send(t: SmtpTransport, n: int, on_connection: OnConnection | None = None) -> Any:
    return asyncio.ensure_future(
        t.send(
            sender=SENDER,
            recipients=[f"p{n}@example.com"],
            data=_data(n),
            on_connection=on_connection,
        )
    )


def _transport(settings: Settings, **update: Any) -> SmtpTransport:
    return SmtpTransport(settings.model_copy(update={"smtp_max_connections": 1, **update}))


async def test_on_connection_runs_when_the_connection_is_ready_not_while_waiting(
    settings: Settings, smtp: SmtpServer
) -> None:
    smtp.mailbox.delay = 0.5
    t = _transport(settings)
    handed: list[int] = []

    def recorder(n: int) -> OnConnection:
        async def hand_over() -> bool:
            handed.append(n)
            return True

        return hand_over

    try:
        first = _send(t, 1, recorder(1))
        await smtp.mailbox.wait_for(lambda m: m.data_started == 1)
        second = _send(t, 2, recorder(2))
        await asyncio.sleep(0)  # the second send is now waiting for the only connection
        assert handed == [1]
        await asyncio.gather(first, second)
    finally:
        await t.close()
    assert handed == [1, 2]
    assert smtp.mailbox.subjects() == ["m1", "m2"]
    assert t.connections_opened == 1


async def test_a_no_at_the_hand_over_sends_nothing_and_keeps_the_connection(
    settings: Settings, smtp: SmtpServer
) -> None:
    t = _transport(settings)

    async def no() -> bool:
        return False

    try:
        with pytest.raises(SendWithdrawn):
            await _send(t, 1, no)
        await _send(t, 2)
    finally:
        await t.close()
    assert smtp.mailbox.subjects() == ["m2"]
    assert t.connections_opened == 1


async def test_a_stop_finishes_the_transaction_and_withdraws_the_queued_sends(
    settings: Settings, smtp: SmtpServer
) -> None:
    smtp.mailbox.delay = 0.5
    t = _transport(settings)
    handed: list[int] = []

    async def hand_over() -> bool:
        handed.append(len(handed))
        return True

    try:
        on_the_relay = _send(t, 1, hand_over)
        await smtp.mailbox.wait_for(lambda m: m.data_started == 1)
        queued = [_send(t, n, hand_over) for n in (2, 3)]
        await asyncio.sleep(0)
        tally = t.stop_sending()
        for send in queued:
            with pytest.raises(SendWithdrawn):
                await send
        await on_the_relay
        with pytest.raises(SendWithdrawn):  # and anything that comes later
            await _send(t, 4, hand_over)
    finally:
        await t.close()
    assert smtp.mailbox.subjects() == ["m1"]
    assert handed == [0]
    assert (tally.in_flight, tally.waiting, tally.finished, tally.withdrawn, tally.cut_off) == (
        1,
        2,
        1,
        3,
        0,
    )
    assert t.connections_opened == 1


async def test_a_stop_ends_a_send_waiting_for_its_pace(
    settings: Settings, smtp: SmtpServer
) -> None:
    # one message every 1,000 s: the second send waits on the pace, holding the only slot
    t = _transport(settings, smtp_rate_per_second=0.001)
    try:
        await _send(t, 1)
        paced = _send(t, 2)
        await asyncio.sleep(0)
        t.stop_sending()
        with pytest.raises(SendWithdrawn):
            await paced
    finally:
        await t.close()
    assert smtp.mailbox.subjects() == ["m1"]
