"""The SMTP transaction of ``emails._smtp_wire``: PIPELINING used exactly when the relay offers
it, the message on the wire exactly as aiosmtplib would send it, and every refusal reported at
its stage whether the commands went one by one or together. Against aiosmtpd (which answers
pipelined commands in order; ``Mailbox.pipelining`` makes it announce the extension) and small
scripted relays that behave as a strict pipelining relay or an old one would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from drip.settings import Settings
from emails._smtp_wire import data_bytes, quote
from emails.errors import PermanentSendError, TransientSendError
from emails.sender import SmtpTransport
from tests.support import Mailbox, free_port

SENDER = "hello@acme.example"
MODES = pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])


def _data(subject: str = "hi", body: bytes = b"Hello\r\n") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: ann@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@acme.example>\r\n\r\n"
    ).encode() + body


# --- the bytes -----------------------------------------------------------------------------------


def _aiosmtplib_data(message: bytes) -> bytes:
    """What aiosmtplib's ``execute_data_command`` writes after DATA."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"..", b"a", b" "]), max_size=40))
def test_data_bytes_are_what_aiosmtplib_sends(parts: list[bytes]) -> None:
    message = b"".join(parts)
    assert data_bytes(message) == _aiosmtplib_data(message)


def test_a_crlf_message_is_only_dot_stuffed() -> None:
    message = b".first\r\nsecond\r\n.third\r\n..fourth\r\n"
    assert data_bytes(message) == b"..first\r\nsecond\r\n..third\r\n...fourth\r\n.\r\n"


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_PLAIN = st.builds(
    lambda local, domain: ".".join(local) + "@" + ".".join(domain),
    st.lists(st.text(_ATEXT, min_size=1, max_size=6), min_size=1, max_size=3),
    st.lists(st.text("abz09-", min_size=1, max_size=6), min_size=1, max_size=3),
)


@given(st.one_of(_PLAIN, st.text(max_size=30), st.text('a@.<>" \\(),;:é\r\n', max_size=20)))
def test_quote_is_aiosmtplibs_quote_address(address: str) -> None:
    try:
        expected = quote_address(address)
    except ValueError:
        with pytest.raises(ValueError):
            quote(address)
        return
    assert quote(address) == expected


# --- against aiosmtpd ----------------------------------------------------------------------------


class Recording(Mailbox):
    """The test suite's mailbox, keeping the exact bytes and the MAIL FROM options."""

    def __init__(self, *, pipelining: bool) -> None:
        super().__init__(pipelining=pipelining)
        self.mail_options: list[list[str]] = []
        self.contents: list[bytes] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mail_options.append(options)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def aiosmtpd(handler: Mailbox, *, smtputf8: bool = False) -> Iterator[int]:
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=smtputf8
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def _transport(settings: Settings, port: int, **update: Any) -> SmtpTransport:
    return SmtpTransport(settings.model_copy(update={"smtp_port": port, **update}))


@MODES
async def test_dots_and_bare_line_ends_arrive_as_written(
    settings: Settings, pipelining: bool
) -> None:
    """Leading dots are stuffed on the wire and unstuffed by the relay; bare CR and LF go as
    CRLF (as aiosmtplib always sent them): the relay gets the message byte for byte."""
    body = b".one\r\n..two\r\n.\r\nbare LF\nbare CR\rend. \r\n.\r\n. last"
    crlf = _data("dots", b"Hello\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n")
    mixed = _data("bare", body)
    handler = Recording(pipelining=pipelining)
    with aiosmtpd(handler) as port:
        t = _transport(settings, port)
        for data in (crlf, mixed):
            await t.send(sender=SENDER, recipients=["ann@example.com"], data=data)
        await t.close()
    assert handler.contents == [crlf, normalize_message_line_endings(mixed)]
    assert handler.contents[1].endswith(b"\r\n. last\r\n")


@MODES
async def test_size_and_smtputf8_go_with_mail_from(settings: Settings, pipelining: bool) -> None:
    data = _data("utf8")
    handler = Recording(pipelining=pipelining)
    with aiosmtpd(handler, smtputf8=True) as port:
        t = _transport(settings, port)
        await t.send(sender=SENDER, recipients=["zoë@example.com"], data=data)
        await t.send(sender=SENDER, recipients=["ann@example.com"], data=data)
        await t.close()
    assert handler.mail_options == [[f"SIZE={len(data)}", "SMTPUTF8"], [f"SIZE={len(data)}"]]
    assert [m.recipients for m in handler.messages] == [["zoë@example.com"], ["ann@example.com"]]


@MODES
async def test_an_address_the_relay_cannot_take_is_refused_at_mail_from(
    settings: Settings, pipelining: bool
) -> None:
    """Without SMTPUTF8 at the relay, MAIL FROM is refused: the sender's problem, no bounce of
    the recipient; the pipelined RCPT and DATA replies are read, so the session goes on."""
    handler = Recording(pipelining=pipelining)
    with aiosmtpd(handler) as port:
        t = _transport(settings, port)
        with pytest.raises(PermanentSendError) as info:
            await t.send(sender=SENDER, recipients=["zoë@example.com"], data=_data())
        await t.send(sender=SENDER, recipients=["ann@example.com"], data=_data())
        await t.close()
    assert info.value.bounce is None
    assert [m.recipients for m in handler.messages] == [["ann@example.com"]]
    assert t.connections_opened == 1


class Refusing(Mailbox):
    """Refuses at the stage it is told, with the reply it is told."""

    def __init__(self, *, pipelining: bool, stage: str, reply: str) -> None:
        super().__init__(pipelining=pipelining)
        self.stage, self.reply = stage, reply

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.stage == "mail":
            return self.reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.stage == "rcpt" and address.startswith("gone"):
            return self.reply
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stage == "data":
            return self.reply
        return await super().handle_DATA(server, session, envelope)


@MODES
@pytest.mark.parametrize(
    ("stage", "reply", "bounce"),
    [
        ("mail", "550 5.7.1 sender not allowed", None),
        ("rcpt", "550 5.1.1 no such user", "hard"),
        ("rcpt", "552 5.2.2 mailbox full", "soft"),
        ("data", "554 5.6.0 message refused", "soft"),
    ],
    ids=["mail", "rcpt-hard", "rcpt-soft", "data"],
)
async def test_a_refusal_is_judged_by_its_stage(
    settings: Settings, pipelining: bool, stage: str, reply: str, bounce: str | None
) -> None:
    handler = Refusing(pipelining=pipelining, stage=stage, reply=reply)
    with aiosmtpd(handler) as port:
        t = _transport(settings, port)
        with pytest.raises(PermanentSendError) as info:
            await t.send(sender=SENDER, recipients=["gone@example.com"], data=_data())
        handler.stage = "none"  # the relay takes the next one on the same session
        await t.send(sender=SENDER, recipients=["ann@example.com"], data=_data())
        await t.close()
    assert (info.value.code, info.value.bounce) == (int(reply[:3]), bounce)
    assert reply[4:] in str(info.value)
    assert [m.recipients for m in handler.messages] == [["ann@example.com"]]
    assert t.connections_opened == 1


@MODES
async def test_some_recipients_refused_among_several(settings: Settings, pipelining: bool) -> None:
    handler = Refusing(pipelining=pipelining, stage="rcpt", reply="550 5.1.1 no such user")
    with aiosmtpd(handler) as port:
        t = _transport(settings, port)
        with pytest.raises(PermanentSendError, match="some recipients refused") as info:
            await t.send(
                sender=SENDER,
                recipients=["ann@example.com", "gone@example.com", "bob@example.com"],
                data=_data(),
            )
        await t.close()
    assert "gone@example.com: 550" in str(info.value)
    assert [m.recipients for m in handler.messages] == [["ann@example.com", "bob@example.com"]]


@MODES
@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
async def test_a_421_ends_the_session_and_is_transient(
    settings: Settings, pipelining: bool, stage: str
) -> None:
    handler = Refusing(pipelining=pipelining, stage=stage, reply="421 4.7.0 try again later")
    with aiosmtpd(handler) as port:
        t = _transport(settings, port)
        with pytest.raises(TransientSendError) as info:
            await t.send(sender=SENDER, recipients=["gone@example.com"], data=_data())
        handler.stage = "none"
        await t.send(sender=SENDER, recipients=["ann@example.com"], data=_data())
        await t.close()
    assert info.value.code == 421
    # a slow-down for the recipient's domain once the recipient is known (emails.pacing)
    assert info.value.deferral is (stage != "mail")
    assert t.connections_opened == 2  # the closing session was not reused
    assert [m.recipients for m in handler.messages] == [["ann@example.com"]]


@MODES
async def test_on_connection_comes_before_mail_from(settings: Settings, pipelining: bool) -> None:
    handler = Recording(pipelining=pipelining)
    seen: list[int] = []

    async def hand_over() -> bool:
        seen.append(len(handler.mail_options))
        return True

    with aiosmtpd(handler) as port:
        t = _transport(settings, port)
        for _ in range(2):
            await t.send(
                sender=SENDER, recipients=["ann@example.com"], data=_data(), on_connection=hand_over
            )
        await t.close()
    assert seen == [0, 1]
    assert len(handler.messages) == 2


class Stalling(Mailbox):
    """Takes the first message, then never answers the second one's end of data."""

    def __init__(self, *, pipelining: bool) -> None:
        super().__init__(pipelining=pipelining)
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.messages:
            await asyncio.to_thread(self.release.wait)
        return await super().handle_DATA(server, session, envelope)


@MODES
async def test_a_relay_that_stops_answering_mid_session_times_out(
    settings: Settings, pipelining: bool
) -> None:
    """Every reply has its own timeout, also on a connection that has answered before: the
    timer the first message set fires while the second one waits, and moves to its deadline."""
    handler = Stalling(pipelining=pipelining)
    with aiosmtpd(handler) as port:
        try:
            t = _transport(settings, port, smtp_timeout_seconds=0.3)
            await t.send(sender=SENDER, recipients=["ann@example.com"], data=_data("first"))
            with pytest.raises(TransientSendError, match="timed out"):
                await asyncio.wait_for(
                    t.send(sender=SENDER, recipients=["ann@example.com"], data=_data("second")),
                    10,
                )
            await t.close()
        finally:
            handler.release.set()
    assert [m.subject for m in handler.messages][:1] == ["first"]


# --- scripted relays: does the client pipeline exactly when it may? ------------------------------


class Relay:
    """A relay speaking just enough SMTP, in one of two manners:

    * ``strict_pipelining``: announces PIPELINING and answers MAIL FROM, RCPT TO and DATA only
      once DATA has arrived (RFC 2920 lets a relay hold grouped replies; a client that waits
      for MAIL's reply before sending RCPT never gets it and times out);
    * otherwise: announces no PIPELINING and, as some old relays do, acts on the first command
      of whatever arrives at once and drops the rest (a client that pipelines anyway loses its
      RCPT and DATA and times out).

    ``mail``, ``rcpt`` and ``data`` are its replies to MAIL FROM, RCPT TO and DATA.
    """

    def __init__(
        self,
        *,
        strict_pipelining: bool,
        mail: bytes = b"250 ok",
        rcpt: bytes = b"250 ok",
        data: bytes = b"354 go",
    ) -> None:
        self.strict_pipelining = strict_pipelining
        self.mail, self.rcpt, self.data = mail, rcpt, data
        self.messages: list[bytes] = []
        self.groups: list[list[bytes]] = []  # commands answered together
        self.ended = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay ready\r\n")
        held: list[bytes] = []
        pending: list[bytes] = []
        while True:
            if not pending:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                pending = chunk.splitlines(keepends=True)
                if not self.strict_pipelining:
                    pending = pending[:1]  # the rest of the chunk is dropped
            line = pending.pop(0)
            verb = line[:4].upper()
            if verb == b"EHLO":
                extension = b"250-PIPELINING\r\n" if self.strict_pipelining else b""
                writer.write(b"250-relay\r\n" + extension + b"250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                held.append(line)
                if not self.strict_pipelining:
                    await self._answer(writer, held)
            elif verb == b"DATA":
                held.append(line)
                await self._answer(writer, held)
                if self.data.startswith(b"354"):
                    self.messages.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                return
            else:  # RSET, NOOP
                writer.write(b"250 ok\r\n")

    async def _answer(self, writer: asyncio.StreamWriter, held: list[bytes]) -> None:
        replies = {b"MAIL": self.mail, b"RCPT": self.rcpt, b"DATA": self.data}
        writer.write(b"".join(replies[line[:4].upper()] + b"\r\n" for line in held))
        await writer.drain()
        self.groups.append(list(held))
        held.clear()


@asynccontextmanager
async def relay(r: Relay) -> AsyncIterator[int]:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with suppress(asyncio.IncompleteReadError, ConnectionError):  # the client hung up
                await r.serve(reader, writer)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
            r.ended.set()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("strict_pipelining", [True, False], ids=["pipelining", "old-relay"])
async def test_commands_are_pipelined_exactly_when_the_relay_offers_it(
    settings: Settings, strict_pipelining: bool
) -> None:
    r = Relay(strict_pipelining=strict_pipelining)
    async with relay(r) as port:
        t = _transport(settings, port, smtp_timeout_seconds=5)
        data = _data("piped", b"Hello\r\n.dot\r\n")
        for _ in range(2):
            await t.send(
                sender=SENDER, recipients=["ann@example.com", "bob@example.com"], data=data
            )
        await t.close()
    assert r.messages == [data.replace(b"\n.", b"\n..") + b".\r\n"] * 2
    verbs = [[line[:4] for line in group] for group in r.groups]
    if strict_pipelining:
        assert verbs == [[b"MAIL", b"RCPT", b"RCPT", b"DATA"]] * 2
    else:
        assert verbs == [[b"MAIL"], [b"RCPT"], [b"RCPT"], [b"DATA"]] * 2


async def test_a_354_for_no_recipient_gets_no_message(settings: Settings) -> None:
    """A relay that refuses every RCPT yet answers the pipelined DATA with 354 (RFC 2920 says
    it should not) gets no message: the client hangs up instead of sending one."""
    r = Relay(strict_pipelining=True, rcpt=b"550 5.1.1 no such user")
    async with relay(r) as port:
        t = _transport(settings, port, smtp_timeout_seconds=5)
        with pytest.raises(PermanentSendError) as info:
            await t.send(sender=SENDER, recipients=["gone@example.com"], data=_data())
        await asyncio.wait_for(r.ended.wait(), 10)
        await t.close()
    assert (info.value.code, info.value.bounce) == (550, "hard")
    assert r.messages == []


async def test_a_large_pipelined_group_is_read_whole(settings: Settings) -> None:
    """150 recipients answered with long replies, all at once: more than aiosmtplib takes as
    one reply (32 KiB), which is no reason to give up on a group of 152."""
    long_ok = b"250 2.1.5 " + b"recipient ok, " * 20
    r = Relay(strict_pipelining=True, rcpt=long_ok)
    recipients = [f"p{n}@example.com" for n in range(150)]
    async with relay(r) as port:
        t = _transport(settings, port, smtp_timeout_seconds=5)
        await t.send(sender=SENDER, recipients=recipients, data=_data())
        await t.close()
    assert len(r.messages) == 1
    assert len(r.groups[0]) == 152
    assert len(long_ok) * 150 > 32 * 1024


async def test_a_garbled_reply_ends_the_session(settings: Settings) -> None:
    """A reply that cannot be parsed leaves the replies still due unread: the session is
    closed, never reused with them taken for the next message's."""
    r = Relay(strict_pipelining=True, mail=b"garbage", data=b"503 no valid recipients")
    async with relay(r) as port:
        t = _transport(settings, port, smtp_timeout_seconds=5)
        with pytest.raises(TransientSendError, match="Malformed"):
            await t.send(sender=SENDER, recipients=["ann@example.com"], data=_data())
        r.mail, r.data = b"250 ok", b"354 go"
        await t.send(sender=SENDER, recipients=["ann@example.com"], data=_data())
        await t.close()
    assert len(r.messages) == 1
    assert t.connections_opened == 2
