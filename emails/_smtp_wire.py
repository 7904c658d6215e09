"""One SMTP mail transaction on an aiosmtplib connection, with ESMTP PIPELINING (RFC 2920)
where the relay offers it, and without the per-message work aiosmtplib's ``mail``/``rcpt``/
``data`` repeat.

Why not ``client.mail()``, ``client.rcpt()``, ``client.data()``: ``bench.send`` found drip's
client CPU-bound, and most of its time in that path went to things a drip message does not
need: two regular-expression passes over every message in DATA (line endings, then leading
dots) although ``build_message`` makes CRLF lines already; an e-mail address parse per command;
one round trip, with its timer and wake-ups, per command. Here the message is checked for bare
CR or LF and dot-stuffed with ``bytes`` methods (the same bytes aiosmtplib would send, see
``data_bytes``), plain addresses skip the parser, and on a relay announcing PIPELINING (every
mainstream relay does) MAIL FROM, every RCPT TO and DATA go out in one write and their replies
are read after: two round trips a message instead of four.

The replies are interpreted exactly as the one-by-one path does, in order, so a caller cannot
tell the two apart: a refused MAIL raises ``SMTPSenderRefused``, each refused RCPT becomes an
``SMTPRecipientRefused`` (all of them refused: ``SMTPRecipientsRefused``), a refused DATA or
message ``SMTPDataError``; a 421 closes the connection, as aiosmtplib does. A refused group
leaves no reply unread, so the session can take RSET and the next message.

aiosmtplib's protocol drops a reply that arrives before the previous one was read, which is
why it cannot pipeline; ``_PipeliningProtocol`` is the smallest change that fixes that (keep
such replies while pipelined replies are expected) and is written to be proposed upstream
together with a ``pipeline()`` call on ``SMTP``. Until then ``ready`` installs it on a
connected client by changing the protocol object's class (it adds no state but a counter and a
timer, as class defaults): whenever no pipelined replies are expected it reads replies as
aiosmtplib's protocol does, only cheaper (one-line replies parsed directly, one timeout timer a
connection instead of ``asyncio.wait_for`` for every reply). It relies on aiosmtplib 5.1's
protocol internals (``_buffer``, ``_response_waiter``, ``_response_pending``), hence the pin.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
    SMTPProtocol,
    normalize_message_line_endings,
)

__all__ = ["Transaction", "data_bytes", "quote", "ready"]

_COMPLETED = 250
_WILL_FORWARD = 251
_START_INPUT = 354
_CLOSING = 421  # the server is going away: aiosmtplib closes the connection on it

#: what aiosmtplib refuses in any command argument (CR/LF/NUL would smuggle in commands)
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: an address that ``email.utils.parseaddr`` returns unchanged and aiosmtplib accepts: an
#: RFC 5321 dot-atom local part and a domain of letters, digits and hyphens (nearly every
#: recipient). Anything else goes through aiosmtplib's own ``quote_address``.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def quote(address: str) -> str:
    """``<address>`` as aiosmtplib's ``quote_address`` makes it (ValueError for an address that
    cannot go on a command line), without its parse for a plain address."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return _quote_parsed(address)


@functools.lru_cache(maxsize=256)  # the sender is the same for every message
def _quote_parsed(address: str) -> str:
    return quote_address(address)


def data_bytes(message: bytes) -> bytes:
    """What goes on the wire after DATA's 354: ``message`` with bare CR and LF made CRLF, a
    final CRLF, every line starting with "." given another one, then ".\\r\\n". The same bytes
    as aiosmtplib's ``execute_data_command`` sends, which does it with two regex substitutions
    over every message (a third of drip's client time in ``bench.send``). drip's messages are
    CRLF already, which two C-speed passes confirm: CR and LF are all in pairs when deleting
    them removes twice as many bytes as there are CRLFs."""
    crlf = message.count(b"\r\n")
    if len(message) - len(message.translate(None, b"\r\n")) != 2 * crlf:
        message = normalize_message_line_endings(message)
    elif not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\n.", b"\n..") + b".\r\n"


def _command(*parts: bytes) -> bytes:
    line = b" ".join(parts)
    if _CONTROL.search(line):
        raise ValueError("Command arg contains a prohibited control character")
    return line + b"\r\n"


class _PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, keeping the replies that arrive while pipelined replies are
    expected (``expect``) instead of dropping those that come before the previous one was read;
    ``read_response`` hands them out in order. With nothing expected it is aiosmtplib's."""

    #: replies still to be read for the commands written together (none: not pipelining)
    _expected = 0

    #: when the read waiting now times out, and the timer that checks (``_watch``): one timer
    #: a connection, moved along, rather than one set and cancelled for every reply
    _deadline = math.inf
    _watchdog: asyncio.TimerHandle | None = None

    def _watch(self) -> None:
        self._watchdog = None
        waiter = self._response_waiter
        if waiter is None or waiter.done() or not self._response_pending:
            return  # no read waits: the next one sets the timer again
        if self._loop.time() >= self._deadline:
            waiter.set_exception(
                aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
            )
        elif self._deadline != math.inf:
            self._watchdog = self._loop.call_at(self._deadline, self._watch)

    def expect(self, replies: int) -> None:
        self._expected = replies

    def _read_response_from_buffer(self) -> aiosmtplib.SMTPResponse | None:
        # The reply to nearly every command is one line ("250 2.1.0 Ok"): take it without
        # aiosmtplib's line loop; anything else (several lines, no text, garbage) goes there.
        buffer = self._buffer
        end = buffer.find(b"\n")
        if 4 <= end < MAX_LINE_LENGTH and buffer[3] == 0x20 and buffer[:3].isdigit():
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            text = line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape")
            return aiosmtplib.SMTPResponse(int(line[:3]), text)
        return super()._read_response_from_buffer()

    def data_received(self, data: bytes) -> None:
        if not self._expected:
            super().data_received(data)
            return
        # Pipelined replies: keep every one, also those that come before the previous one was
        # read (aiosmtplib would drop them as unsolicited), and bound the buffer by how many
        # are expected rather than by one reply's size.
        waiter = self._response_waiter
        if waiter is None:
            return
        self._buffer.extend(data)
        if len(self._buffer) > MAX_RESPONSE_LENGTH * self._expected:
            del self._buffer[:]
            if self.transport is not None:
                self.transport.close()  # the reads fail as "connection lost"
            return
        if self._response_pending and not waiter.done():
            try:
                reply = self._read_response_from_buffer()
            except Exception as exc:
                self._set_response_exception(waiter, exc)
            else:
                if reply is not None:
                    waiter.set_result(reply)

    async def read_response(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 (aiosmtplib's signature)
    ) -> aiosmtplib.SMTPResponse:
        """aiosmtplib's ``read_response``, handing out kept replies first, and without
        ``asyncio.wait_for`` (a second future, a callback, a timer and a loop turn for every
        reply, even one that is already there: a tenth of the client's time in ``bench.send``)."""
        waiter = self._response_waiter
        if self._expected:
            # A reply the waiter holds came before anything still in the buffer; a lost
            # connection or a parse error it holds came after it.
            if self._buffer and (
                waiter is None or not waiter.done() or waiter.cancelled() or waiter.exception()
            ):
                reply = self._read_response_from_buffer()
                if reply is not None:
                    self._expected -= 1
                    return reply
            self._expected -= 1
        if waiter is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._response_pending = True
        try:
            if not waiter.done():
                self._deadline = math.inf if timeout is None else self._loop.time() + timeout
                if self._watchdog is None and timeout is not None:
                    self._watchdog = self._loop.call_at(self._deadline, self._watch)
                await waiter
            return waiter.result()
        finally:
            self._response_pending = False
            # as aiosmtplib: no new waiter once disconnected
            self._response_waiter = None if self.transport is None else self._loop.create_future()


async def ready(client: aiosmtplib.SMTP) -> None:
    """Make a newly connected client ready for ``Transaction``: greeted (EHLO, or HELO when
    EHLO is refused, as aiosmtplib's ``mail()`` would on first use, so the extensions are known)
    and with a protocol that can read pipelined replies."""
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    if type(protocol) is SMTPProtocol:
        protocol.__class__ = _PipeliningProtocol


class Transaction:
    """MAIL FROM, RCPT TO per recipient, DATA and the message, on ``client`` (``ready`` first):
    ``mail`` sends (with PIPELINING, every command up to DATA) and reads MAIL FROM's reply, so
    a connection found closed fails there, before any of the message went out; ``finish`` reads
    the rest and sends the message. ValueError (an address that cannot go on a command line)
    is raised on construction, before anything is sent."""

    def __init__(
        self,
        client: aiosmtplib.SMTP,
        sender: str,
        recipients: list[str],
        data: bytes,
        *,
        options: list[str],
        encoding: str,
    ) -> None:
        self.client = client
        self.sender = sender
        self.recipients = recipients
        self._mail = _command(
            b"MAIL",
            b"FROM:" + quote(sender).encode(encoding),
            *(o.encode("ascii") for o in options),
        )
        self._rcpts = [_command(b"RCPT", b"TO:" + quote(r).encode(encoding)) for r in recipients]
        self._data = data_bytes(data)
        self.pipelined = client.supports_extension("pipelining")
        self._protocol: _PipeliningProtocol | None = None

    async def mail(self) -> None:
        """Send MAIL FROM (pipelined: with every RCPT TO and DATA) and read its reply."""
        protocol = self.client.protocol
        if not isinstance(protocol, _PipeliningProtocol):
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._protocol = protocol
        if self.pipelined:
            protocol.expect(len(self._rcpts) + 2)
            protocol.write(b"".join((self._mail, *self._rcpts, b"DATA\r\n")))
        else:
            protocol.write(self._mail)
        reply = await self._reply()
        if reply.code != _COMPLETED:
            if self.pipelined:
                await self._discard(len(self._rcpts) + 1)
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, self.sender)

    async def finish(self) -> list[aiosmtplib.SMTPRecipientRefused]:
        """Read (or send and read) each RCPT TO, then DATA, send the message and read the
        verdict; the refused recipients when some were accepted."""
        refused: list[aiosmtplib.SMTPRecipientRefused] = []
        for recipient, line in zip(self.recipients, self._rcpts, strict=True):
            self._send_unless_pipelined(line, "Server not connected")
            reply = await self._reply()
            if reply.code not in (_COMPLETED, _WILL_FORWARD):
                refused.append(
                    aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
                )
        if len(refused) == len(self.recipients):
            if self.pipelined:
                await self._discard(1)  # DATA's reply: a refusal, or 354 for nobody (closed)
            raise aiosmtplib.SMTPRecipientsRefused(refused)
        self._send_unless_pipelined(b"DATA\r\n", "Connection lost")
        reply = await self._reply()
        if reply.code != _START_INPUT:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        self._write(self._data, "Connection lost")
        reply = await self._reply()
        if reply.code != _COMPLETED:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return refused

    def _write(self, data: bytes, closed: str) -> None:
        if self.client.protocol is None or self._protocol is None:
            raise aiosmtplib.SMTPServerDisconnected(closed)  # closed after a 421, as aiosmtplib
        self._protocol.write(data)

    def _send_unless_pipelined(self, line: bytes, closed: str) -> None:
        if self.pipelined:
            if self.client.protocol is None:  # closed after a 421: nothing more will come
                raise aiosmtplib.SMTPServerDisconnected(closed)
            return
        self._write(line, closed)

    async def _reply(self) -> aiosmtplib.SMTPResponse:
        """The next reply; as aiosmtplib's ``execute_command``, a lost connection or a timeout
        closes the client (its state is unknown) and so does a 421; so does a reply that cannot
        be parsed, after which the replies still due could be taken for the next commands'."""
        assert self._protocol is not None
        try:
            reply = await self._protocol.read_response(timeout=self.client.timeout)
        except aiosmtplib.SMTPException:
            self.client.close()
            raise
        if reply.code == _CLOSING:
            self.client.close()
        return reply

    async def _discard(self, replies: int) -> None:
        """Read the replies left of a refused pipelined group, so the session is in step for
        RSET. A 354 means the relay would take a message for no one: close instead of sending
        one (RFC 2920 allows a lone "."; closing never delivers anything)."""
        for _ in range(replies):
            if self.client.protocol is None:
                return
            try:
                reply = await self._reply()
            except aiosmtplib.SMTPException:
                return  # the connection is closed; the refusal already read is the verdict
            if reply.code == _START_INPUT:
                self.client.close()
                return
