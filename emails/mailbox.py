"""The dev mailbox: a local SMTP server that keeps every email as an ``.eml`` file.

``drip dev`` points the worker's SMTP sender at this server, so journeys send real SMTP without a
real inbox; ``/dev/mailbox`` in the API shows what arrived. Messages are plain files under
``settings.mailbox_dir`` (one RFC 5322 message each, written atomically), so they survive a
restart and any mail client or ``grep`` can read them.

Only the storage and the SMTP server live here (stdlib and aiosmtpd, nothing of ours but the
settings' paths); the web pages are ``webhooks/routes/mailbox.py``, which is why this lives in
``emails`` and not beside ``drip dev``: the web layer may import ``emails``, never ``drip``.
``drip.mailbox`` re-exports it for older imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any
from weakref import WeakSet

from aiosmtpd.smtp import SMTP

__all__ = [
    "InvalidMessageName",
    "MailboxEntry",
    "MailboxError",
    "MailboxHandler",
    "MessageNotFound",
    "list_messages",
    "message_path",
    "read_message",
    "read_raw",
    "start_mailbox",
    "stop_mailbox",
    "store_message",
]

#: What a stored message may be called: no separators, no leading dot, so a name taken from a URL
#: can never leave the mailbox folder. Our own names are ``<UTC time>-<8 hex>.eml``.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.eml$")
_STAMP = "%Y%m%dT%H%M%S.%fZ"


class MailboxError(Exception):
    """Base of the mailbox's errors; the routes answer 404 for all of them."""


class InvalidMessageName(MailboxError, ValueError):
    """The name is not one the mailbox could have written (e.g. ``../drip.db``)."""


class MessageNotFound(MailboxError, LookupError):
    """No message of that name (deleted, or never received)."""


@dataclass(frozen=True)
class MailboxEntry:
    """One stored message as the list page shows it; headers decoded, missing ones empty."""

    name: str
    received_at: datetime
    from_: str
    to: str
    subject: str
    date: str
    message_id: str


def new_message_name(now: datetime | None = None) -> str:
    """``20261105T142233.123456Z-1a2b3c4d.eml``: sorts by arrival, unique without a lock."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime(_STAMP)
    return f"{stamp}-{uuid.uuid4().hex[:8]}.eml"


def message_path(mailbox_dir: Path, name: str) -> Path:
    """The file of message ``name``; refuses any name that could point outside the mailbox."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidMessageName(f"not a mailbox message name: {name!r}")
    path = mailbox_dir / name
    if path.resolve().parent != mailbox_dir.resolve():  # a symlinked folder is still ours
        raise InvalidMessageName(f"not a mailbox message name: {name!r}")
    return path


def store_message(
    mailbox_dir: Path, raw: bytes, *, mail_from: str = "", rcpt_tos: list[str] | None = None
) -> str:
    """Write one message and return its name.

    The envelope is kept the way a delivering MTA keeps it (``Return-Path``, ``X-Original-To``),
    so a Bcc recipient is visible too. The file appears complete or not at all (temp file in the
    same folder, fsync, rename), so the list page never shows half a message.
    """
    mailbox_dir.mkdir(parents=True, exist_ok=True)
    newline = b"\r\n" if b"\r\n" in raw[:4096] else b"\n"
    trace = b""
    if mail_from or rcpt_tos is not None:
        trace += b"Return-Path: <" + mail_from.encode("utf-8", "replace") + b">" + newline
    if rcpt_tos:
        trace += b"X-Original-To: " + ", ".join(rcpt_tos).encode("utf-8", "replace") + newline
    name = new_message_name()
    fd, tmp = tempfile.mkstemp(dir=mailbox_dir, prefix=".incoming-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(trace + raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, mailbox_dir / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return name


def _received_at(path: Path) -> datetime:
    try:
        return datetime.strptime(path.name.split("-", 1)[0], _STAMP).replace(tzinfo=UTC)
    except ValueError:  # a file someone dropped in by hand
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _header(msg: email.message.Message, name: str) -> str:
    try:
        value = msg.get(name)
        return "" if value is None else " ".join(str(value).split())
    except Exception:  # a malformed header is shown empty rather than breaking the whole list
        return ""


def list_messages(mailbox_dir: Path, *, limit: int | None = None) -> list[MailboxEntry]:
    """Stored messages, newest first; only headers are parsed, so long lists stay quick."""
    if not mailbox_dir.is_dir():
        return []
    paths = [p for p in mailbox_dir.iterdir() if _NAME.fullmatch(p.name) and p.is_file()]
    paths.sort(key=lambda p: (_received_at(p), p.name), reverse=True)
    parser = BytesHeaderParser(policy=email.policy.default)
    entries: list[MailboxEntry] = []
    for path in paths[:limit]:
        try:
            with path.open("rb") as f:
                headers = parser.parse(f)
        except OSError:  # deleted while we were listing
            continue
        entries.append(
            MailboxEntry(
                name=path.name,
                received_at=_received_at(path),
                from_=_header(headers, "From"),
                to=_header(headers, "To") or _header(headers, "X-Original-To"),
                subject=_header(headers, "Subject"),
                date=_header(headers, "Date"),
                message_id=_header(headers, "Message-ID"),
            )
        )
    return entries


def read_raw(mailbox_dir: Path, name: str) -> bytes:
    """The message exactly as stored (with the envelope trace headers)."""
    try:
        return message_path(mailbox_dir, name).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise MessageNotFound(f"no message {name!r} in the mailbox") from None


def read_message(mailbox_dir: Path, name: str) -> EmailMessage:
    """One message parsed with the modern email policy (``get_body``, decoded headers)."""
    return email.message_from_bytes(read_raw(mailbox_dir, name), policy=email.policy.default)


class MailboxHandler:
    """aiosmtpd handler: accepts any sender and recipient, and stores each message."""

    def __init__(self, mailbox_dir: Path) -> None:
        self.mailbox_dir = mailbox_dir

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content or envelope.content
        try:
            name = await asyncio.to_thread(
                store_message,
                self.mailbox_dir,
                raw,
                mail_from=str(envelope.mail_from or ""),
                rcpt_tos=[str(r) for r in envelope.rcpt_tos],
            )
        except OSError as exc:
            # A transient reply, so the sender retries instead of losing the email.
            return f"451 Requested action aborted: cannot store the message ({exc.strerror})"
        return f"250 OK stored as {name}"


async def start_mailbox(mailbox_dir: Path, port: int, host: str = "127.0.0.1") -> asyncio.Server:
    """Serve SMTP on ``host:port`` in the running event loop (no thread), storing into the folder.

    Raises OSError if the port is taken. SMTPUTF8 is on, as on real servers, so international
    addresses are accepted. The folder is created with the first message.
    """
    loop = asyncio.get_running_loop()
    handler = MailboxHandler(mailbox_dir)

    def session() -> SMTP:
        protocol = SMTP(handler, hostname="drip-mailbox", enable_SMTPUTF8=True, loop=loop)
        _sessions.setdefault(server, WeakSet()).add(protocol)
        return protocol

    server = await loop.create_server(session, host=host, port=port)
    return server


#: Open SMTP sessions per server: Python 3.11's ``Server.close`` leaves accepted connections
#: open, and a sender's pooled connection would keep its session task alive past shutdown.
_sessions: dict[asyncio.Server, WeakSet[SMTP]] = {}


async def stop_mailbox(server: asyncio.Server) -> None:
    """Stop accepting mail and hang up on connected senders.

    A message whose DATA was acknowledged is already on disk; one in flight is lost and the
    sender, seeing the connection drop, retries it later, as it would with any real server.
    """
    server.close()
    for protocol in list(_sessions.pop(server, ())):
        if protocol.transport is not None:
            protocol.transport.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), timeout=5)
