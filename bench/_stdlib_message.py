"""The baseline of ``bench.render``: drip's MIME message built with the stdlib ``email`` package.

This is how ``emails.message`` built messages before it wrote bytes directly, kept here rather than
in the product so the benchmark measures both in one run: the same headers (Date, Message-ID,
From, To, Reply-To, Subject, List-Unsubscribe with RFC 8058 one-click), text then HTML in
multipart/alternative, quoted-printable UTF-8 bodies, the same boundary. ``EmailMessage`` with
``policy.SMTP`` does the header folding, encoding and serialising (``set_content``,
``add_alternative``, ``as_bytes``), which is the idiomatic stdlib way to write this message. Each
part gets the transfer encoding drip's builder would choose (7bit for ASCII with short lines, else
quoted-printable), so the two paths write the same bytes on the wire for the bodies.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime

from emails.message import message_date
from emails.render import RenderedEmail

__all__ = ["build_message_stdlib"]

_URI_LIST = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>(?:, <[\x21-\x3b\x3d\x3f-\x7e]+>)*")
_MAX_LINE = 998


class _UriListHeader(UnstructuredHeader, BaseHeader):
    """An RFC 2369 list header (``<uri>, <uri>``), folded between URIs and never RFC 2047 encoded.

    The stdlib treats unknown headers as unstructured text and encodes a token too long for one
    78-column line as ``=?utf-8?q?...?=``; receivers do not decode encoded words in a list of
    URIs, so a long ``public_base_url`` would hide the one-click unsubscribe URL.
    """

    def fold(self, *, policy: Policy) -> str:
        value = str(self)
        uris = value.split(", ")
        if not _URI_LIST.fullmatch(value) or any(
            len(self.name) + 3 + len(uri) > _MAX_LINE for uri in uris
        ):
            return super().fold(policy=policy)
        return f"{self.name}: " + f",{policy.linesep} ".join(uris) + policy.linesep


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _UriListHeader)
_POLICY = SMTP.clone(header_factory=_HEADERS)


def build_message_stdlib(
    rendered: RenderedEmail,
    *,
    from_addr: str,
    to_addr: str,
    reply_to: str | None,
    message_id: str,
    domain: str,
    unsubscribe_mailto: str | None,
    date: datetime | None = None,
) -> bytes:
    """The message as CRLF bytes, ready for SMTP DATA; the same checks as drip's (shared, they
    are not what is measured)."""
    when = message_date(message_id, domain, date)

    msg = EmailMessage(policy=_POLICY)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}@{domain}>"
    msg["From"] = from_addr
    msg["To"] = to_addr
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = rendered.subject
    if rendered.unsubscribe_url:
        targets = [f"<{rendered.unsubscribe_url}>"]
        if unsubscribe_mailto:
            mailbox = unsubscribe_mailto.removeprefix("mailto:")
            targets.append(f"<mailto:{mailbox}?subject=unsubscribe>")
        msg["List-Unsubscribe"] = ", ".join(targets)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # set_content adds MIME-Version; the first part is the plain text so clients that pick the
    # last part they understand (RFC 2046) choose the HTML.
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte=_cte(rendered.text))
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte=_cte(rendered.html))
    # Derived from the id, not random, so a retried send is byte-for-byte the same message. It
    # starts with "=_", which quoted-printable bodies can never contain (they write "=" as "=3D").
    msg.set_boundary("=_drip_" + hashlib.sha256(message_id.encode()).hexdigest()[:32])
    return msg.as_bytes()


def _cte(body: str) -> str:
    """The transfer encoding ``emails.message`` picks for this body."""
    lines = body.replace("\r\n", "\n").split("\n")
    return "7bit" if body.isascii() and max(map(len, lines)) <= 990 else "quoted-printable"
