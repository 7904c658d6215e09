"""The MIME message: RFC 5322 headers, RFC 8058 one-click unsubscribe, text before HTML.

The ``Message-ID`` derives only from the outbox id and the sending domain, so a retried send is
recognisably the same message (receivers and our own bounce matching rely on that). Bodies are
quoted-printable so no line exceeds SMTP's 998-octet limit whatever the HTML looks like.

Every email of a campaign has the same shape, so the message is written directly as bytes rather
than through the stdlib ``email`` package: its ``EmailMessage``/``set_content``/``as_bytes`` path
parses and re-folds every header through the header registry and costs about 1.5 ms per message,
more than everything else a send does (``bench/render.py`` measures both). Here the per-message
work is the quoted-printable encoding (``binascii``, in C) and a few string joins; header values
that need real RFC 5322 care (display names with commas or non-ASCII, IDN addresses) still go
through the stdlib, cached, because the sender's addresses repeat on every message. The tests
parse what this writes with the stdlib parser and check it round-trips.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from functools import lru_cache

from emails.render import RenderedEmail

__all__ = ["build_message", "check_attachment", "check_sender", "domain_of", "message_date"]

_ID_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")  # RFC 5322 dot-atom text
_URI = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>")
#: An address we can write as it is: ASCII, no display name, nothing needing quotes.
_PLAIN_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
#: C0 (but CR and LF, which mean a header injection and are refused), DEL and C1 controls
_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_LINE = 998
#: RFC 5322 wants header lines under 78 characters where there is a place to fold.
_FOLD_AT = 78
#: Encoded words are at most 75 characters (RFC 2047); these leave room for "Subject: ".
_WORD_PAYLOAD = 54
#: Characters an RFC 2047 Q-encoded word may carry as they are (section 5, rule 3).
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
#: an RFC 2045 token (a content type's type or subtype)
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
#: the longest attachment filename or content type (their columns in ``message_attachments``)
_MAX_NAME = 255
_HEADERS = HeaderRegistry()
_POLICY = SMTP.clone(max_line_length=_FOLD_AT)
_PART_HEAD = (
    'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n'
)
#: Longest body line sent as it is: SMTP's 998 octets, less a margin for dot-stuffing.
_MAX_BODY_LINE = 990


def domain_of(address: str) -> str:
    """The domain of an address or ``Name <addr>`` header value, for the Message-ID."""
    _, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an email address: {address!r}")
    return domain.lower()


def _one_line(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} header value must be one line: {value!r}")
    if _CONTROL.search(value):
        raise ValueError(f"{name} header value has a control character: {value!r}")
    return value


@lru_cache(maxsize=512)
def _address_header(name: str, value: str) -> str:
    """An address header, folded and encoded by the stdlib (display names may need quoting or
    RFC 2047); cached, because the sender and reply-to are the same on every message."""
    _one_line(name, value)
    if _PLAIN_ADDRESS.fullmatch(value):
        return f"{name}: {value}\r\n"
    header = _HEADERS(name, value)
    if header.defects:
        raise ValueError(f"{name} is not a valid address: {value!r}")
    return header.fold(policy=_POLICY)


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 Q-encoded words, never splitting a character's UTF-8 bytes."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        if char in _Q_SAFE:
            piece = char
        elif char == " ":
            piece = "_"
        else:
            piece = "".join(f"={byte:02X}" for byte in char.encode())
        if size + len(piece) > _WORD_PAYLOAD and chunk:
            words.append("=?utf-8?q?" + "".join(chunk) + "?=")
            chunk, size = [], 0
        chunk.append(piece)
        size += len(piece)
    if chunk:
        words.append("=?utf-8?q?" + "".join(chunk) + "?=")
    return words


def _unstructured(name: str, value: str) -> str:
    """A free-text header (Subject): as it is when it is printable ASCII, folded at spaces,
    else as encoded words, one per line.

    The last line of defence for what a template renders: a line break is refused (a header
    injection), any other control character is dropped (a tab becomes a space), so no header
    carries one, encoded or not, whatever data reached the template."""
    value = _CONTROL.sub(lambda m: " " if m.group() == "\t" else "", value)
    _one_line(name, value)
    # "=?" would read as the start of an encoded word, so such text is encoded too.
    if _PRINTABLE_ASCII.fullmatch(value) and "=?" not in value:
        words = value.split(" ")
        if all(len(word) < _MAX_LINE - len(name) - 3 for word in words):
            lines: list[str] = []
            line = f"{name}:"
            for word in words:
                # fold before a word that would overrun, unless the line has no word yet
                if len(line) + 1 + len(word) > _FOLD_AT and line != f"{name}:" and word:
                    lines.append(line)
                    line = ""
                line = f"{line} {word}"
            lines.append(line)
            return "\r\n".join(lines) + "\r\n"
    return f"{name}: " + "\r\n ".join(_encoded_words(value)) + "\r\n"


def _list_unsubscribe(url: str, mailto: str | None) -> str:
    """RFC 2369/8058 list headers: the URIs are never encoded (receivers would not decode them,
    and the one-click button would disappear), folded between URIs."""
    uris = [f"<{url}>"]
    if mailto:
        uris.append(f"<mailto:{mailto.removeprefix('mailto:')}?subject=unsubscribe>")
    for uri in uris:
        if not _URI.fullmatch(uri) or len(uri) + 20 > _MAX_LINE:
            raise ValueError(f"cannot put {uri!r} in List-Unsubscribe")
    return (
        "List-Unsubscribe: "
        + ",\r\n ".join(uris)
        + "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    )


def _list_header(name: str, value: str) -> str:
    """``List-Id`` or ``Feedback-ID``, folded at spaces: the values come cleaned from
    ``emails.list_headers``; this refuses anything that could still break the header (a line
    break, a control character, non-ASCII) or a line SMTP would cut."""
    _one_line(name, value)
    if not _PRINTABLE_ASCII.fullmatch(value) or len(value) + len(name) + 2 > _MAX_LINE:
        raise ValueError(f"cannot write {value!r} as the {name} header")
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > _FOLD_AT and line != f"{name}:":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _part(subtype: str, body: str) -> bytes:
    """A text part: as it is (7bit) when it is ASCII with lines SMTP accepts, which is the
    common case and costs nothing, else quoted-printable. 7bit also never needs the 8BITMIME
    extension, and no relay re-encodes it (which would break a DKIM signature)."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    if body.isascii() and max(map(len, body.split("\n"))) <= _MAX_BODY_LINE:
        head = _PART_HEAD.format(subtype=subtype, encoding="7bit")
        return head.encode("ascii") + body.replace("\n", "\r\n").encode("ascii")
    head = _PART_HEAD.format(subtype=subtype, encoding="quoted-printable")
    return head.encode("ascii") + _quoted_printable(body)


def _quoted_printable(body: str) -> bytes:
    """UTF-8, quoted-printable, CRLF line ends; soft line breaks keep lines within 76."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(body.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", b"\r\n")


def message_date(message_id: str, domain: str, date: datetime | None) -> datetime:
    """The ``Date`` of a message (``date``, or now), once ``message_id`` and ``domain`` are
    known to form a Message-ID; ValueError for either, or for a date without a time zone."""
    if not _ID_PART.fullmatch(message_id) or not _ID_PART.fullmatch(domain):
        raise ValueError(f"cannot form a Message-ID from {message_id!r} and {domain!r}")
    when = date or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    return when


def build_message(
    rendered: RenderedEmail,
    *,
    from_addr: str,
    to_addr: str,
    reply_to: str | None,
    message_id: str,
    domain: str,
    unsubscribe_mailto: str | None,
    date: datetime | None = None,
    list_id: str | None = None,
    feedback_id: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> bytes:
    """The message as CRLF bytes, ready for SMTP DATA (and for DKIM signing).

    ``list_id`` and ``feedback_id`` are the values ``emails.list_headers`` builds for marketing
    mail (a campaign's or a broadcast's); without them the message has neither header.
    ``attachments`` are (filename, content type, bytes) of a transactional email: the message
    is then ``multipart/mixed``, the text and HTML alternatives first, each file after them."""
    when = message_date(message_id, domain, date)
    # Derived from the id, not random, so a retried send is byte-for-byte the same message. It
    # starts with "=_", which quoted-printable bodies can never contain (they write "=" as "=3D"),
    # and a 7bit body could only by quoting a hash of this message's id it cannot know.
    boundary = "=_drip_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    head = [
        f"Date: {format_datetime(when)}\r\n",
        f"Message-ID: <{message_id}@{domain}>\r\n",
        _address_header("From", from_addr),
        _address_header("To", to_addr),
    ]
    if reply_to:
        head.append(_address_header("Reply-To", reply_to))
    head.append(_unstructured("Subject", rendered.subject))
    if rendered.unsubscribe_url:
        head.append(_list_unsubscribe(rendered.unsubscribe_url, unsubscribe_mailto))
    if list_id:
        head.append(_list_header("List-Id", list_id))
    if feedback_id:
        head.append(_list_header("Feedback-ID", feedback_id))
    # Text first: clients pick the last alternative they can show (RFC 2046), so the HTML.
    head.append("MIME-Version: 1.0\r\n")
    alternative = (
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n".encode("ascii"),
        _part("plain", rendered.text),
        f"\r\n--{boundary}\r\n".encode("ascii"),
        _part("html", rendered.html),
        f"\r\n--{boundary}--\r\n".encode("ascii"),
    )
    if not attachments:
        return b"".join(("".join(head).encode("ascii"), *alternative))
    mixed = boundary + "_mixed"
    parts = [
        "".join(head).encode("ascii"),
        f'Content-Type: multipart/mixed;\r\n boundary="{mixed}"\r\n\r\n--{mixed}\r\n'.encode(
            "ascii"
        ),
        *alternative,
    ]
    for filename, content_type, content in attachments:
        parts.append(f"\r\n--{mixed}\r\n".encode("ascii"))
        parts.append(_attachment(filename, content_type, content))
    parts.append(f"\r\n--{mixed}--\r\n".encode("ascii"))
    return b"".join(parts)


def check_sender(from_addr: str, reply_to: str | None) -> None:
    """ValueError unless ``build_message`` can write these as the From and Reply-To headers:
    for values a caller gives (the transactional API), checked when it asks, not at send time."""
    _address_header("From", from_addr)
    if not parseaddr(from_addr)[1]:
        raise ValueError(f"From is not a valid address: {from_addr!r}")
    if reply_to:
        _address_header("Reply-To", reply_to)


def check_attachment(filename: str, content_type: str) -> tuple[str, str]:
    """The (type, subtype) of an attachment ``build_message`` can write; ValueError for a
    filename that is empty, too long or not one line, or a content type that is not
    ``type/subtype``."""
    if not filename or len(filename) > _MAX_NAME:
        raise ValueError(f"an attachment's filename has 1 to {_MAX_NAME} characters")
    _one_line("filename", filename)
    maintype, slash, subtype = content_type.partition("/")
    if (
        len(content_type) > _MAX_NAME
        or not slash
        or not _TOKEN.fullmatch(maintype)
        or not _TOKEN.fullmatch(subtype)
    ):
        raise ValueError(f"not a MIME content type: {content_type!r}")
    return maintype.lower(), subtype.lower()


def _attachment(filename: str, content_type: str, content: bytes) -> bytes:
    """One attached file as a MIME part, base64 (lines of 76, never touched by a relay, so
    the DKIM signature holds). The stdlib writes its headers: a filename may need RFC 2231
    encoding, and a line break or control character in it is refused (ValueError), never
    written into a header."""
    maintype, subtype = check_attachment(filename, content_type)
    part = EmailMessage(policy=_POLICY)
    part.set_content(
        content, maintype, subtype, disposition="attachment", filename=filename, cte="base64"
    )
    del part["MIME-Version"]
    return part.as_bytes()
