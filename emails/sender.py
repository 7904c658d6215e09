"""Sending: a small Transport interface and its SMTP implementation.

The journey only needs "hand these bytes to someone who delivers them", so that is the whole
interface: tests plug in a real local SMTP server, and a user can plug in an HTTP ESP API. The
transport's one other duty is to say whether a failure is worth retrying: every error it raises is
a TransientSendError or a PermanentSendError (see ``emails.errors``).

SmtpTransport keeps a small pool of idle connections: opening a connection (TCP, EHLO, TLS,
AUTH) costs more than sending one message over it. A reused connection is checked with NOOP
before a message goes on it, so a connection the relay dropped while idle is replaced before
anything is sent: a message is handed to SMTP at most once per ``send``, whatever the pool does.

With ``DRIP_DKIM_*`` set, every message is DKIM-signed just before it goes out (journey emails,
sales alerts and test sends alike).

Relays limit senders (connections at once, messages per second) and answer an excess with 421 or
451, which would only turn into retries: ``smtp_max_connections`` caps transactions in flight and
``smtp_rate_per_second`` spaces them out, per worker process (with several workers, divide the
relay's limit between them).

Stopping. A caller that keeps a record of what it sends (the journeys' outbox) passes
``on_connection``: it is awaited once a connection is ready and just before MAIL FROM, so the
record says "sending" only from the moment the message's bytes are about to go out, never while
the send merely waits for a connection (``smtp_max_connections``, ``smtp_rate_per_second``).
``stop_sending`` (a worker that is stopping) makes every send without a connection yet give up
at once with ``SendWithdrawn`` while the transactions already under way finish; its
``StopTally`` says how many did which.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

import aiosmtplib

from emails._smtp_wire import Transaction, ready
from emails.dkim import DkimSigner
from emails.errors import (
    Bounce,
    PermanentSendError,
    SendError,
    SendWithdrawn,
    TransientSendError,
)
from emails.pacing import DomainPacer, Ticket

if TYPE_CHECKING:
    from drip.settings import Settings

__all__ = [
    "OnConnection",
    "Pace",
    "SmtpTransport",
    "StopTally",
    "Transport",
    "bounce_kind",
    "classify_smtp_error",
    "enhanced_status",
    "is_deferral",
]

#: The caller's last word before MAIL FROM: True sends, False gives up (``SendWithdrawn``).
OnConnection = Callable[[], Awaitable[bool]]


class Transport(Protocol):
    """Delivers one prepared message; raises TransientSendError or PermanentSendError.

    ``on_connection``, when given, is awaited exactly once, when the message is about to go out
    and none of it has: a transport with connections calls it once one is ready for this
    message, just before MAIL FROM; one without calls it just before handing the message
    over. If it returns False, nothing is sent and ``SendWithdrawn`` is raised; whatever it
    raises propagates unchanged.

    A transport that paces by receiving domain raises ``DomainDeferred`` (with ``retry_at``)
    for a send its domain holds back; ``when`` is the caller's clock for a warm-up's day and
    ``horizon`` how long the send may wait for its domain's pace.
    """

    async def send(
        self,
        *,
        sender: str,
        recipients: list[str],
        data: bytes,
        on_connection: OnConnection | None = None,
        when: datetime | None = None,
        horizon: float = 30.0,
    ) -> None: ...


#: Where in the transaction the server refused: the sender, the recipient or the message.
Stage = Literal["mail", "rcpt", "data"]

#: An RFC 3463 enhanced status code opening a reply's text (RFC 2034): class.subject.detail
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
#: Reply codes to RCPT TO that refuse the address itself: no such mailbox (550), not local
#: (551), mailbox name not allowed (553), domain accepts no mail (556, RFC 7504).
_ADDRESS_REFUSED = frozenset({550, 551, 553, 556})


def enhanced_status(code: int, message: str) -> str | None:
    """The enhanced status code a reply's text starts with (``"5.1.1"``), or None. A code whose
    class disagrees with the reply code's (``550 4.2.2``) is ignored: one of the two is wrong."""
    match = _ENHANCED.match(message.lstrip())
    if match is None or match.group(1) != str(code)[:1]:
        return None
    return match.group(0)


def bounce_kind(code: int, message: str, *, stage: Stage | None) -> Bounce | None:
    """What a permanent refusal says about the recipient's address: ``"hard"`` (it will never
    take mail: suppress now), ``"soft"`` (it may another day: count it) or None (the refusal was
    not about the recipient, so it counts for nothing).

    The enhanced status code decides when the reply has one; otherwise the reply code and the
    command it answered::

        5.1.x         bad mailbox, domain or address syntax ("5.1.1 no such user")   hard
        5.1.7, 5.1.8  bad *sender* address or domain                                 none
        5.2.1         mailbox disabled                                               hard
        5.2.x         mailbox full (5.2.2), message too big (5.2.3), list trouble    soft
        5.3.x - 5.6.x the receiving system, routing, protocol, content               soft
        5.7.x         policy: spam, reputation, authentication, blocklists           soft
        550, 551, 553, 556 to RCPT TO, without an enhanced code (or 5.0.0)           hard
        any other 5xx to RCPT TO (552, 554, ...) or any 5xx to DATA                  soft
        any 5xx to MAIL FROM, or outside a transaction (``stage`` None)              none

    5.2.1 is hard although RFC 3463 allows it to be temporary: Gmail and Yahoo answer it for
    closed or disabled accounts, which do not come back, and ESPs treat it as hard. A 5.7.x
    policy refusal is soft because it is about our mail or our IP, not the address: if it
    lasts, ``soft_bounce_limit`` refusals suppress the contact anyway. A refused sender or a
    refusal outside MAIL/RCPT/DATA (STARTTLS) is about our configuration, and counting it
    against every recipient would suppress the whole list while an operator fixes it.
    """
    if stage not in ("rcpt", "data") or not 500 <= code <= 599:
        return None
    status = enhanced_status(code, message)
    if status is not None and status != "5.0.0":
        _, subject, detail = status.split(".")
        if subject == "1":
            return None if detail in ("7", "8") else "hard"
        return "hard" if status == "5.2.1" else "soft"
    if stage == "rcpt" and code in _ADDRESS_REFUSED:
        return "hard"
    return "soft"


def _by_code(code: int, message: str, stage: Stage | None = None) -> SendError:
    # Only 5xx is a verdict about the message; anything else (4xx, or a code outside the SMTP
    # ranges from a confused server) may go through on a later try.
    if 500 <= code <= 599:
        return PermanentSendError(
            message,
            code=code,
            bounce=bounce_kind(code, message, stage=stage),
            status=enhanced_status(code, message),
        )
    return _transient(message, code, is_deferral(code, message, stage))


def is_deferral(code: int, message: str, stage: Stage | None) -> bool:
    """Whether a temporary refusal asks us to slow down for this recipient's domain, rather
    than saying the relay or the connection is in trouble: a reply to RCPT TO or DATA (the
    recipient is known by then) with an enhanced status ``4.7.x`` (Gmail's ``421 4.7.0 Try
    again later``, Microsoft's ``451 4.7.500 Server busy``) or code ``454`` (a relay's sending
    quota, SES's "Throttling failure"). The same at MAIL FROM or on connecting is about our
    sender or connection, not a domain: the send is retried as any transient failure."""
    if stage not in ("rcpt", "data"):
        return False
    if code == 454:
        return True
    status = enhanced_status(code, message)
    return status is not None and status.startswith("4.7.")


def _transient(message: str, code: int | None, deferral: bool) -> TransientSendError:
    error = TransientSendError(message, code=code)
    error.deferral = deferral
    return error


def _stage(exc: aiosmtplib.SMTPResponseException) -> Stage | None:
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "mail"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return "rcpt"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "data"
    return None


def classify_smtp_error(exc: BaseException) -> SendError:
    """Map an aiosmtplib or socket error to retry (transient) or give up (permanent), and a
    permanent one to a hard, soft or no bounce (``bounce_kind``).

    Authentication, TLS negotiation, a refused greeting and a refused EHLO count as transient
    although the server may answer 5xx: they are about the sender's connection or configuration,
    not the message, and marking every queued message failed while an operator fixes a password
    or an allowlist would lose mail.
    """
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
        if refused and all(500 <= r.code <= 599 for r in refused):
            # journeys send to one recipient: its refusal says what kind of bounce this is
            first, reply = refused[0], _message(refused[0])
            return PermanentSendError(
                f"recipient refused: {detail}",
                code=first.code,
                bounce=bounce_kind(first.code, reply, stage="rcpt"),
                status=enhanced_status(first.code, reply),
            )
        waiting = next((r for r in refused if not 500 <= r.code <= 599), None)
        deferral = waiting is not None and is_deferral(waiting.code, _message(waiting), "rcpt")
        code = waiting.code if waiting is not None else None
        return _transient(f"recipient refused: {detail}", code, deferral)
    if isinstance(
        exc,
        aiosmtplib.SMTPAuthenticationError
        | aiosmtplib.SMTPNotSupported
        | aiosmtplib.SMTPConnectResponseError
        | aiosmtplib.SMTPHeloError,
    ):
        code = getattr(exc, "code", None)
        return TransientSendError(f"SMTP setup failed: {_message(exc)}", code=code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, _message(exc), _stage(exc))
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPConnectTimeoutError):
        return TransientSendError(f"cannot connect: {_message(exc)}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return TransientSendError(f"connection lost: {_message(exc)}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TransientSendError(f"timed out: {_message(exc)}")
    if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS handshake
        return TransientSendError(f"cannot connect: {_message(exc)}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return TransientSendError(_message(exc))
    return TransientSendError(f"{type(exc).__name__}: {exc}")


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


class Pace:
    """Hands out send times at most ``per_second`` apart: each caller books the next free slot
    and sleeps until it (or until ``stop`` is set), so bursts queue up instead of hitting the
    relay at once."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0

    async def wait(self, stop: asyncio.Event) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self.interval
        if at > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), at - now)


async def _take_slot(slots: asyncio.Semaphore, stop: asyncio.Event) -> bool:
    """Take one of ``slots``; False, holding none, if ``stop`` is set first (also while
    waiting: a stopping worker hands its queued sends back at once, not one by one as the
    transactions ahead of them end)."""
    if stop.is_set():
        return False
    if not slots.locked():
        await slots.acquire()  # free: taken without yielding
        return True
    taking = asyncio.ensure_future(slots.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((taking, stopping), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled while waiting: hold nothing
        stopping.cancel()
        taking.cancel()  # a pending acquire that was just granted gives its slot back itself
        if taking.done() and not taking.cancelled():
            slots.release()
        raise
    stopping.cancel()
    if not taking.done():
        taking.cancel()
        return False
    if stop.is_set():
        slots.release()
        return False
    return True


@dataclass
class StopTally:
    """What a stopping transport did with the sends it held (``SmtpTransport.stop_sending``)."""

    #: transactions under way when the stop began (they are left to finish)
    in_flight: int = 0
    #: sends that were waiting for a connection then (they give up unsent)
    waiting: int = 0
    #: transactions that ended after the stop began: accepted, or refused by the relay
    finished: int = 0
    #: sends given up unsent since the stop began: nothing of them reached the relay
    withdrawn: int = 0
    #: transactions cancelled midway (a stop that ran out of time): the relay may have them
    cut_off: int = 0


@dataclass
class _Pooled:
    client: aiosmtplib.SMTP
    sent: int = 0
    idle_since: float = 0.0
    #: False while reused without a NOOP (it was busy a moment ago): a drop then shows at MAIL
    checked: bool = True


#: A connection that finished a message less than this long ago is reused without a NOOP round
#: trip; if the relay dropped it meanwhile, MAIL FROM fails before any of the message is sent.
_TRUST_IDLE_SECONDS = 1.0


class _Stale(Exception):
    """An unchecked pooled connection turned out closed before the transaction began."""


async def _transaction(
    conn: _Pooled, sender: str, recipients: list[str], data: bytes
) -> list[aiosmtplib.SMTPRecipientRefused]:
    """MAIL, RCPT per recipient, DATA; the refused recipients when some were accepted.

    The commands go through ``emails._smtp_wire`` rather than aiosmtplib's ``sendmail`` or
    ``mail``/``rcpt``/``data``: pipelined where the relay offers PIPELINING, without a second
    pass over the message for its SIZE, its line endings and its leading dots (``bench.send``).
    """
    client = conn.client
    options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
    encoding = "ascii"
    if not (sender.isascii() and all(r.isascii() for r in recipients)):
        options.append("SMTPUTF8")  # refused by a relay without it: a permanent error
        encoding = "utf-8"
    transaction = Transaction(client, sender, recipients, data, options=options, encoding=encoding)
    try:
        await transaction.mail()  # pipelined, RCPT and DATA too, but never the message
    except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
        if not conn.checked:
            raise _Stale from exc
        raise
    return await transaction.finish()


class SmtpTransport:
    """Delivers through an SMTP relay configured in Settings (``DRIP_SMTP_*``)."""

    def __init__(self, settings: Settings, *, pacer: DomainPacer | None = None) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.tls = settings.smtp_tls
        self.username = settings.smtp_user
        self._password = settings.smtp_password
        self.timeout = settings.smtp_timeout_seconds
        self.pool_size = settings.smtp_pool_size
        self.per_connection = settings.smtp_messages_per_connection
        self.idle_seconds = settings.smtp_idle_seconds
        self.max_connections = settings.smtp_max_connections
        self._slots = asyncio.Semaphore(settings.smtp_max_connections)
        self._pace = Pace(settings.smtp_rate_per_second)
        #: paces by receiving domain, shared by every worker (``emails.pacing``); None: not
        self.pacer = pacer
        self._idle: list[_Pooled] = []
        #: signs every message when DKIM is configured; built (and its key checked) here, so a
        #: bad key stops the worker at start-up rather than failing sends
        self.dkim = DkimSigner.from_settings(settings)
        #: connections opened, for tests and operators (how well the pool is reused)
        self.connections_opened = 0
        self._stop = asyncio.Event()
        #: set by ``stop_sending``, and counted from then on
        self.stop_tally: StopTally | None = None
        self._waiting = 0  # sends not yet handed a connection
        self._in_flight = 0  # transactions under way

    def stop_sending(self) -> StopTally:
        """Stop starting transactions: every send still waiting for a slot, its pace or a
        connection (now or later) gives up with ``SendWithdrawn``, before ``on_connection``;
        transactions under way finish. There is no way back: a stopping worker calls this
        once. Returns the tally, which keeps counting until the last transaction ends."""
        if self.stop_tally is None:
            self.stop_tally = StopTally(in_flight=self._in_flight, waiting=self._waiting)
            self._stop.set()
        return self.stop_tally

    @property
    def in_flight(self) -> int:
        """Transactions under way now (a forced stop cuts them off)."""
        return self._in_flight

    def _withdrawn(self) -> SendWithdrawn:
        assert self.stop_tally is not None
        self.stop_tally.withdrawn += 1
        return SendWithdrawn("not sent: the worker is stopping; another worker sends it")

    async def send(
        self,
        *,
        sender: str,
        recipients: list[str],
        data: bytes,
        on_connection: OnConnection | None = None,
        when: datetime | None = None,
        horizon: float = 30.0,
    ) -> None:
        """``when`` is the caller's clock for a warm-up's day (a journey's, which tests may
        skip ahead; now if None); ``horizon`` how long the send may wait for its domain's pace
        before ``DomainDeferred`` says when to try again instead."""
        if not recipients:
            raise PermanentSendError("no recipients")
        self._waiting += 1
        waiting = True
        ticket: Ticket | None = None
        try:
            if self.dkim is not None:
                # Signed here, last, so nothing changes the message after the signature; in a
                # thread, because an RSA signature is most of a millisecond of CPU.
                try:
                    data = await asyncio.to_thread(self.dkim.sign, data)
                except ValueError as exc:
                    raise PermanentSendError(str(exc)) from exc
            if self.pacer is not None:
                # before the worker's own slot, so a send waiting for its domain's pace does
                # not hold one that mail to other domains could use
                ticket = await self.pacer.enter(
                    recipients[0], when=when, horizon=horizon, stop=self._stop
                )
            if not await _take_slot(self._slots, self._stop):
                raise self._withdrawn()
            try:
                await self._pace.wait(self._stop)
                if ticket is not None and not await self.pacer.lease(ticket, self._stop):  # type: ignore[union-attr]
                    raise self._withdrawn()
                if self._stop.is_set():
                    raise self._withdrawn()
                conn = await self._connection()
                await self._hand_over(conn, on_connection)
                self._waiting -= 1
                waiting = False
                try:
                    await self._send(conn, sender, recipients, data)
                except TransientSendError as exc:
                    if ticket is not None and exc.deferral:
                        assert self.pacer is not None
                        raise await self.pacer.deferred(ticket, exc) from exc
                    raise
            finally:
                self._slots.release()
        finally:
            if waiting:
                self._waiting -= 1
            if ticket is not None and self.pacer is not None:
                await self.pacer.leave(ticket)

    async def _connection(self, *, fresh: bool = False) -> _Pooled:
        try:
            return await self._acquire(fresh=fresh)
        except Exception as exc:
            raise classify_smtp_error(exc) from exc

    async def _hand_over(self, conn: _Pooled, on_connection: OnConnection | None) -> None:
        """The point of no return: after this, the message goes on ``conn``. Nothing of it
        has been sent yet, so a stop (or the caller's no) puts the connection back unused."""
        try:
            go = not self._stop.is_set() and (on_connection is None or await on_connection())
        except BaseException:
            _close(conn.client)  # cancelled or failed mid-check: not worth a QUIT
            raise
        if not go:
            await self._release(conn, healthy=True)
            if self._stop.is_set():
                raise self._withdrawn()
            raise SendWithdrawn("not sent: the sender gave it up just before MAIL FROM")

    async def _send(self, conn: _Pooled, sender: str, recipients: list[str], data: bytes) -> None:
        self._in_flight += 1
        cut_off = True
        try:
            refused = await self._transact(conn, sender, recipients, data)
            cut_off = False
        except Exception:
            cut_off = False
            raise
        finally:
            self._in_flight -= 1
            if self.stop_tally is not None:
                if cut_off:
                    self.stop_tally.cut_off += 1
                else:
                    self.stop_tally.finished += 1
        if refused:
            # Some recipients were accepted, so a retry would send them a duplicate: give up on
            # the refused ones instead. Journeys send to one recipient, so this is rare.
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
            raise PermanentSendError(f"some recipients refused: {detail}")

    async def _transact(
        self, conn: _Pooled, sender: str, recipients: list[str], data: bytes
    ) -> list[aiosmtplib.SMTPRecipientRefused]:
        while True:
            healthy = stale = False
            try:
                refused = await _transaction(conn, sender, recipients, data)
                healthy = True
            except _Stale:
                # A connection reused without a NOOP had been dropped; nothing of the message
                # was sent on it, so the send moves to a new connection (once).
                stale = True
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                # the relay answered (a refusal): the session itself is still usable after RSET
                healthy = await _reset(conn.client)
                raise classify_smtp_error(exc) from exc
            except Exception as exc:
                raise classify_smtp_error(exc) from exc
            finally:
                conn.sent += 1
                await self._release(conn, healthy=healthy)
            if not stale:
                return refused
            # committed to this message already: a new connection even if stopping
            conn = await self._connection(fresh=True)

    async def close(self) -> None:
        """Say goodbye on every idle connection (the worker calls this when it stops)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await _quit(conn.client)

    def _client(self) -> aiosmtplib.SMTP:
        password = self._password.get_secret_value() if self._password is not None else None
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username or None,
            password=password if self.username else None,
            timeout=self.timeout,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
        )

    async def _acquire(self, *, fresh: bool = False) -> _Pooled:
        """A pooled connection (checked with NOOP unless it was in use a moment ago), else a
        new connected, authenticated one; ``fresh`` always opens a new one."""
        now = time.monotonic()
        while self._idle and not fresh:
            conn = self._idle.pop()
            idle = now - conn.idle_since
            if idle > self.idle_seconds or not conn.client.is_connected:
                await _quit(conn.client)
                continue
            conn.checked = idle >= _TRUST_IDLE_SECONDS
            if not conn.checked:
                return conn
            try:
                await conn.client.noop()
            except Exception:  # dropped while idle: nothing was sent on it, open another
                _close(conn.client)
                continue
            return conn
        client = self._client()
        try:
            await client.connect()
            await ready(client)  # EHLO now, so MAIL FROM knows whether it may pipeline
        except BaseException:
            _close(client)  # connected, then TLS or AUTH failed
            raise
        self.connections_opened += 1
        return _Pooled(client, checked=True)

    async def _release(self, conn: _Pooled, *, healthy: bool) -> None:
        """Back to the pool if it is healthy and has room, else closed. The message is already
        accepted or refused by now, so a failing QUIT must not turn it into an error."""
        if (
            healthy
            and conn.client.is_connected
            and conn.sent < self.per_connection
            and len(self._idle) < self.pool_size
        ):
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            return
        if healthy:
            await _quit(conn.client)
        _close(conn.client)


async def _reset(client: aiosmtplib.SMTP) -> bool:
    """RSET after a refused transaction; True if the session can carry another message."""
    try:
        await client.rset()
    except Exception:
        return False
    return client.is_connected


async def _quit(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        with contextlib.suppress(Exception):
            await client.quit()
    _close(client)


def _close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        client.close()
