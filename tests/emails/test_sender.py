"""SmtpTransport against real servers: delivery, and every failure classified as worth retrying
(TransientSendError) or not (PermanentSendError)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import pytest
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

import emails.sender
from contacts.models import Contact
from drip.settings import Settings, SettingsError
from emails import (
    PermanentSendError,
    SendError,
    SmtpTransport,
    TransientSendError,
    build_message,
    classify_smtp_error,
)
from tests.emails.conftest import RenderFn
from tests.support import SmtpServer, free_port, with_pipelining

SENDER = "hello@acme.example"
DATA = (
    b"From: hello@acme.example\r\nTo: ann@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <m1@acme.example>\r\n\r\nHello\r\n.leading dot\r\n"
)


# --- servers -------------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that talks to a server runs twice: the relay announcing ESMTP PIPELINING (the
    transport sends MAIL, RCPT and DATA together) and not (one command at a time). Not the
    spacing of sends, which is decided before MAIL FROM and measured in arrival times: a second
    run would only double its exposure to a loaded machine."""
    if (
        "settings" in metafunc.fixturenames
        and metafunc.function.__name__ != "test_sends_are_spaced_to_the_configured_rate"
    ):
        metafunc.parametrize(
            "pipelining", [False, True], indirect=True, ids=["one-by-one", "pipelined"]
        )


@pytest.fixture(autouse=True)
def pipelining(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    on: bool = getattr(request, "param", False)
    monkeypatch.setattr(Scripted, "pipelining", on)
    if "smtp" in request.fixturenames:
        request.getfixturevalue("smtp").mailbox.pipelining = on
    return on


class Scripted:
    """An aiosmtpd handler that answers RCPT per address and DATA with a fixed reply, and keeps
    what it accepted."""

    #: announce PIPELINING (every test with a server runs with it off and on: ``pipelining``)
    pipelining = False

    def __init__(
        self,
        *,
        rcpt: dict[str, str] | None = None,
        mail: str | None = None,
        data: str | None = None,
        helo: str | None = None,
    ) -> None:
        self.rcpt = rcpt or {}
        self.mail = mail
        self.data = data
        self.helo = helo
        self.accepted: list[tuple[list[str], bytes]] = []
        self.release = threading.Event()  # for handlers that hang until the test is done

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self.helo is not None:
            return [self.helo]
        session.host_name = hostname
        return with_pipelining(responses) if self.pipelining else responses

    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        if self.helo is not None:
            return self.helo
        session.host_name = hostname
        return "250 ok"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail is not None:
            return self.mail
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt.get(address, self.rcpt.get("*"))
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data == "hang":
            await asyncio.to_thread(self.release.wait)
            return "250 too late"
        if self.data == "drop":
            server.transport.close()
            return "250 never heard"
        if self.data is not None:
            return self.data
        self.accepted.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK queued"


@contextmanager
def aiosmtpd_server(handler: Scripted) -> Iterator[int]:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        handler.release.set()
        controller.stop()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(handle: Handler) -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A plain TCP server on this loop; the event is set once a connection has ended."""
    ended = asyncio.Event()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
            ended.set()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], ended
    finally:
        server.close()
        await server.wait_closed()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


def transport(settings: Settings, port: int, **update: Any) -> SmtpTransport:
    return SmtpTransport(settings.model_copy(update={"smtp_port": port, **update}))


async def _send(t: SmtpTransport, recipients: list[str] | None = None) -> None:
    await t.send(sender=SENDER, recipients=recipients or ["ann@example.com"], data=DATA)


# --- delivery ------------------------------------------------------------------------------------


async def test_message_is_delivered_intact(
    smtp: SmtpServer, settings: Settings, render: RenderFn, ann: Contact
) -> None:
    rendered = render("welcome", ann, message_id="deliver-1")
    data = build_message(
        rendered,
        from_addr="Acme Outdoor <hello@acme.example>",
        to_addr=ann.email,
        reply_to=None,
        message_id="deliver-1",
        domain="acme.example",
        unsubscribe_mailto="unsubscribe@acme.example",
    )
    await SmtpTransport(settings).send(sender=SENDER, recipients=[ann.email], data=data)
    assert len(smtp.mailbox.messages) == 1
    got = smtp.mailbox.messages[0]
    assert got.sender == SENDER and got.recipients == [ann.email]
    assert got.raw.rstrip(b"\r\n") == data.rstrip(b"\r\n")
    assert got.message["Message-ID"] == "<deliver-1@acme.example>"
    assert got.subject == "Welcome to Acme Outdoor, Ann"
    assert got.html().replace("\r\n", "\n").rstrip("\n") == rendered.html.rstrip("\n")
    assert got.text().replace("\r\n", "\n") == rendered.text


async def test_dots_at_line_start_survive(smtp: SmtpServer, settings: Settings) -> None:
    await _send(SmtpTransport(settings))
    assert smtp.mailbox.messages[0].raw.rstrip(b"\r\n") == DATA.rstrip(b"\r\n")


async def test_sends_reuse_pooled_connections(smtp: SmtpServer, settings: Settings) -> None:
    t = SmtpTransport(settings)
    for _ in range(3):
        await _send(t)
    await asyncio.gather(*(_send(t) for _ in range(4)))  # concurrent sends open more
    for _ in range(3):
        await _send(t)
    await t.close()
    assert len(smtp.mailbox.messages) == 10
    assert 1 < t.connections_opened <= 4


class Counting(Scripted):
    """Accepts every message, holding each DATA a moment, and notes how many were in flight at
    once and when each arrived."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold = hold
        self.in_flight = 0
        self.most_in_flight = 0
        self.arrivals: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append(asyncio.get_running_loop().time())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.in_flight -= 1
        return await super().handle_DATA(server, session, envelope)


async def test_transactions_in_flight_are_capped(settings: Settings) -> None:
    handler = Counting(hold=0.2)
    with aiosmtpd_server(handler) as port:
        t = transport(settings, port, smtp_max_connections=3)
        await asyncio.gather(*(_send(t) for _ in range(9)))
        await t.close()
    assert len(handler.accepted) == 9
    assert handler.most_in_flight == 3
    assert t.connections_opened == 3


async def test_sends_are_spaced_to_the_configured_rate(settings: Settings) -> None:
    handler = Counting(hold=0.0)
    with aiosmtpd_server(handler) as port:
        t = transport(settings, port, smtp_rate_per_second=20.0)
        await asyncio.gather(*(_send(t) for _ in range(6)))
        await t.close()
    assert len(handler.accepted) == 6
    # the six went out over five gaps of 1/20 s: together at least 0.25 s (a little less is
    # the clocks of client and server loops). Each gap alone is not checked: a send delayed
    # on a loaded machine arrives close to the next one, which the pace had spaced all right.
    assert handler.arrivals[-1] - handler.arrivals[0] >= 5 * 0.05 - 0.01


async def test_a_connection_is_retired_after_its_message_budget(
    smtp: SmtpServer, settings: Settings
) -> None:
    t = SmtpTransport(settings.model_copy(update={"smtp_messages_per_connection": 2}))
    for _ in range(5):
        await _send(t)
    await t.close()
    assert (len(smtp.mailbox.messages), t.connections_opened) == (5, 3)


@pytest.mark.parametrize("checked", [True, False], ids=["noop", "mail"])
async def test_a_pooled_connection_the_relay_dropped_is_replaced_before_sending(
    smtp: SmtpServer, settings: Settings, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    """The relay restarts while our connection idles: NOOP finds it dead (or, on a connection
    busy a moment ago and so reused unchecked, MAIL FROM does), nothing is sent on it, and the
    message goes once over a new connection."""
    monkeypatch.setattr(emails.sender, "_TRUST_IDLE_SECONDS", 0.0 if checked else 3600.0)
    t = SmtpTransport(settings)
    await _send(t)
    smtp.stop()
    smtp.start()
    await _send(t)
    await t.close()
    assert (len(smtp.mailbox.messages), t.connections_opened) == (2, 2)


async def test_a_refused_recipient_leaves_the_session_usable(settings: Settings) -> None:
    handler = Scripted(rcpt={"gone@example.com": "550 5.1.1 no such user"})
    with aiosmtpd_server(handler) as port:
        t = transport(settings, port)
        with pytest.raises(PermanentSendError):
            await _send(t, ["gone@example.com"])
        await _send(t)
        await t.close()
    assert [rcpts for rcpts, _ in handler.accepted] == [["ann@example.com"]]
    assert t.connections_opened == 1


async def test_without_a_pool_each_message_has_its_own_connection(
    smtp: SmtpServer, settings: Settings
) -> None:
    t = SmtpTransport(settings.model_copy(update={"smtp_pool_size": 0}))
    for _ in range(3):
        await _send(t)
    assert (len(smtp.mailbox.messages), t.connections_opened) == (3, 3)


async def test_no_recipients_is_permanent_without_connecting(settings: Settings) -> None:
    with pytest.raises(PermanentSendError, match="no recipients"):
        await transport(settings, free_port()).send(sender=SENDER, recipients=[], data=DATA)


# --- SMTP replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "code"),
    [
        (lambda: Scripted(rcpt={"*": "451 4.3.0 try later"}), 451),
        (lambda: Scripted(rcpt={"*": "452 4.2.2 mailbox full"}), 452),
        (lambda: Scripted(data="451 4.3.0 try later"), 451),
        (lambda: Scripted(mail="451 4.3.0 greylisted"), 451),
        (lambda: Scripted(data="421 4.3.2 shutting down"), 421),
    ],
    ids=["rcpt-451", "rcpt-452", "data-451", "mail-451", "data-421"],
)
async def test_4xx_is_transient(
    settings: Settings, handler: Callable[[], Scripted], code: int
) -> None:
    h = handler()
    with aiosmtpd_server(h) as port, pytest.raises(TransientSendError) as info:
        await _send(transport(settings, port))
    assert info.value.code == code
    assert str(info.value).startswith(f"{code} ")
    assert h.accepted == []


@pytest.mark.parametrize(
    ("handler", "code", "text"),
    [
        (lambda: Scripted(rcpt={"*": "550 5.1.1 no such user"}), 550, "no such user"),
        (lambda: Scripted(data="550 5.7.1 rejected as spam"), 550, "rejected as spam"),
        (lambda: Scripted(data="554 5.6.0 message refused"), 554, "message refused"),
    ],
    ids=["rcpt-550", "data-550", "data-554"],
)
async def test_5xx_is_permanent(
    settings: Settings, handler: Callable[[], Scripted], code: int, text: str
) -> None:
    with aiosmtpd_server(handler()) as port, pytest.raises(PermanentSendError) as info:
        await _send(transport(settings, port))
    assert info.value.code == code
    assert text in str(info.value)


async def test_mixed_refusals_are_transient(settings: Settings) -> None:
    h = Scripted(rcpt={"a@example.com": "550 5.1.1 unknown", "b@example.com": "451 4.3.0 later"})
    with aiosmtpd_server(h) as port, pytest.raises(TransientSendError) as info:
        await _send(transport(settings, port), ["a@example.com", "b@example.com"])
    assert info.value.code == 451
    assert "a@example.com" in str(info.value) and "b@example.com" in str(info.value)


async def test_some_recipients_refused_is_permanent_and_not_resent(settings: Settings) -> None:
    h = Scripted(rcpt={"gone@example.com": "550 5.1.1 no such user"})
    with aiosmtpd_server(h) as port, pytest.raises(PermanentSendError) as info:
        await _send(transport(settings, port), ["ann@example.com", "gone@example.com"])
    assert "gone@example.com" in str(info.value) and "550" in str(info.value)
    assert [rcpts for rcpts, _ in h.accepted] == [["ann@example.com"]]


@pytest.mark.parametrize("reply", ["550 5.7.1 not you", "421 4.7.0 too busy"])
async def test_refused_ehlo_and_helo_is_transient(settings: Settings, reply: str) -> None:
    """Refusing our greeting is about the sender's connection, not the message."""
    with aiosmtpd_server(Scripted(helo=reply)) as port, pytest.raises(TransientSendError):
        await _send(transport(settings, port))


# --- connection trouble --------------------------------------------------------------------------


async def test_connection_refused_is_transient(settings: Settings) -> None:
    with pytest.raises(TransientSendError) as info:
        await _send(transport(settings, free_port()))
    assert info.value.code is None


async def test_relay_down_then_up(smtp: SmtpServer, settings: Settings) -> None:
    t = SmtpTransport(settings)
    smtp.stop()
    with pytest.raises(TransientSendError):
        await _send(t)
    smtp.start()
    await _send(t)
    assert len(smtp.mailbox.messages) == 1


async def test_dropped_connection_is_transient(settings: Settings) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    async with tcp_server(hang_up) as (port, _):
        with pytest.raises(TransientSendError) as info:
            await _send(transport(settings, port))
    assert info.value.code is None


async def test_connection_dropped_during_data_is_transient(settings: Settings) -> None:
    with aiosmtpd_server(Scripted(data="drop")) as port, pytest.raises(TransientSendError):
        await _send(transport(settings, port))


async def test_refused_greeting_is_transient(settings: Settings) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.7.1 no service for you\r\n")
        await writer.drain()
        await _until_eof(reader)

    async with tcp_server(refuse) as (port, ended):
        with pytest.raises(TransientSendError) as info:
            await _send(transport(settings, port))
        await asyncio.wait_for(ended.wait(), 10)  # and the transport hung up
    assert info.value.code == 554


async def test_silent_server_times_out_transiently(settings: Settings) -> None:
    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _until_eof(reader)

    async with tcp_server(never_greet) as (port, ended):
        with pytest.raises(TransientSendError) as info:
            await _send(transport(settings, port, smtp_timeout_seconds=0.2))
        await asyncio.wait_for(ended.wait(), 10)  # the transport closed its connection
    assert info.value.code is None


async def test_server_stalling_after_data_times_out_transiently(settings: Settings) -> None:
    h = Scripted(data="hang")
    with aiosmtpd_server(h) as port, pytest.raises(TransientSendError) as info:
        await _send(transport(settings, port, smtp_timeout_seconds=0.2))
    assert "timed out" in str(info.value)


# --- classification ------------------------------------------------------------------------------


def _refused(*codes: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(c, f"reply {c}", f"r{c}@example.com") for c in codes]
    )


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (_refused(550), PermanentSendError, 550),
        (_refused(550, 553), PermanentSendError, 550),
        (_refused(451), TransientSendError, 451),
        (_refused(550, 452), TransientSendError, 452),
        (_refused(), TransientSendError, None),
        (aiosmtplib.SMTPDataError(554, "spam"), PermanentSendError, 554),
        (aiosmtplib.SMTPDataError(451, "later"), TransientSendError, 451),
        (aiosmtplib.SMTPSenderRefused(451, "greylisted", "a@x"), TransientSendError, 451),
        (aiosmtplib.SMTPResponseException(500, "syntax"), PermanentSendError, 500),
        (aiosmtplib.SMTPResponseException(599, "edge"), PermanentSendError, 599),
        (aiosmtplib.SMTPResponseException(600, "confused"), TransientSendError, 600),
        (aiosmtplib.SMTPResponseException(250, "confused"), TransientSendError, 250),
        (aiosmtplib.SMTPAuthenticationError(535, "bad password"), TransientSendError, 535),
        (aiosmtplib.SMTPConnectResponseError(554, "no service"), TransientSendError, 554),
        (aiosmtplib.SMTPHeloError(550, "who are you"), TransientSendError, 550),
        (aiosmtplib.SMTPNotSupported("no STARTTLS"), TransientSendError, None),
        (aiosmtplib.SMTPServerDisconnected("gone"), TransientSendError, None),
        (aiosmtplib.SMTPConnectError("refused"), TransientSendError, None),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), TransientSendError, None),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TransientSendError, None),
        (aiosmtplib.SMTPTimeoutError("slow"), TransientSendError, None),
        (aiosmtplib.SMTPException("odd"), TransientSendError, None),
        (ConnectionRefusedError(111, "Connection refused"), TransientSendError, None),
        (ConnectionResetError("reset"), TransientSendError, None),
        (TimeoutError(), TransientSendError, None),
        (OSError("Name or service not known"), TransientSendError, None),
        (RuntimeError("surprise"), TransientSendError, None),
    ],
    ids=lambda v: v if isinstance(v, int | type(None)) else None,
)
def test_classify_smtp_error(exc: BaseException, kind: type[SendError], code: int | None) -> None:
    err = classify_smtp_error(exc)
    assert type(err) is kind
    assert err.code == code
    assert str(err)


def test_classify_keeps_send_errors() -> None:
    err = PermanentSendError("already decided", code=550)
    assert classify_smtp_error(err) is err


def test_classified_messages_name_the_cause() -> None:
    assert "timed out" in str(classify_smtp_error(aiosmtplib.SMTPReadTimeoutError("slow")))
    assert "connection lost" in str(classify_smtp_error(aiosmtplib.SMTPServerDisconnected("x")))
    assert "cannot connect" in str(classify_smtp_error(OSError("unreachable")))
    assert "RuntimeError: surprise" in str(classify_smtp_error(RuntimeError("surprise")))
    refused = str(classify_smtp_error(_refused(550)))
    assert "r550@example.com" in refused and "550 reply 550" in refused
    assert "\n" not in str(classify_smtp_error(aiosmtplib.SMTPDataError(451, "a\nb")))


# --- DKIM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_with_dkim_configured_every_message_arrives_signed(
    smtp: SmtpServer, settings: Settings, tmp_path: Path, kind: str
) -> None:
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    t = SmtpTransport(
        settings.model_copy(
            update={"dkim_domain": "acme.example", "dkim_selector": "s1", "dkim_private_key": pem}
        )
    )
    assert t.dkim is not None
    await _send(t)
    await t.close()
    raw = smtp.mailbox.messages[0].raw
    assert raw.startswith(b"DKIM-Signature:")
    record = t.dkim.dns_record().encode()

    def dns(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == b"s1._domainkey.acme.example." else None

    assert dkim.verify(raw, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"Hello", b"Jello"), dnsfunc=dns)


def test_a_half_configured_dkim_stops_the_transport_at_start(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="DRIP_DKIM_SELECTOR"):
        SmtpTransport(settings.model_copy(update={"dkim_domain": "acme.example"}))
