"""Double opt-in: the signed, expiring confirmation token and the confirmation email.

The token is ``<contact id>.<request id>.<expiry>.<mac>``: an HMAC-SHA256 (128 bits kept) over
those numbers and the form id, so it needs no table, names exactly one submission, cannot be
moved to another form, and stops working after ``CONFIRM_TTL``.
"""

from __future__ import annotations

import base64
import hmac
import html
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import cast

from fastapi import Request

from campaigns.schema import FormDefinition
from campaigns.workspace import Workspace
from contacts.models import utcnow
from drip.settings import Settings
from emails import RenderedEmail, SmtpTransport, Transport, build_message, domain_of

__all__ = ["CONFIRM_TTL", "Confirmation", "confirm_token", "send_confirmation", "verify"]

CONFIRM_TTL = timedelta(days=7)
_MAC_BYTES = 16
_TOKEN = re.compile(r"^(\d{1,18})\.(\d{1,18})\.(\d{1,12})\.([A-Za-z0-9_-]{22})$")


@dataclass(frozen=True, slots=True)
class Confirmation:
    contact_id: int
    request_id: int
    expires: datetime


def _mac(secret: bytes, form_id: str, payload: str) -> str:
    digest = hmac.digest(secret, f"optin\x00{form_id}\x00{payload}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).rstrip(b"=").decode("ascii")


def confirm_token(
    secret: bytes, *, contact_id: int, request_id: int, form_id: str, now: datetime | None = None
) -> str:
    expires = int(((now or utcnow()) + CONFIRM_TTL).timestamp())
    payload = f"{contact_id}.{request_id}.{expires}"
    return f"{payload}.{_mac(secret, form_id, payload)}"


def verify(secret: bytes, token: str, form_id: str) -> Confirmation | None:
    """The confirmation a token names if we signed it for this form (expired or not), else
    None; the caller tells an expired link (410) from a bad one (400)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    contact, request, expires, mac = match.groups()
    payload = f"{contact}.{request}.{expires}"
    if not hmac.compare_digest(mac, _mac(secret, form_id, payload)):
        return None
    return Confirmation(
        contact_id=int(contact),
        request_id=int(request),
        expires=datetime.fromtimestamp(int(expires), tz=UTC),
    )


def transport(request: Request) -> Transport:
    """The app's SMTP transport, made on first use (most API processes never send mail);
    tests may put their own on ``app.state.transport`` first."""
    state = request.app.state
    if getattr(state, "transport", None) is None:
        state.transport = SmtpTransport(cast(Settings, state.settings))
    return cast(Transport, state.transport)


async def send_confirmation(
    mailer: Transport,
    *,
    workspace: Workspace,
    form: FormDefinition,
    to: str,
    url: str,
) -> None:
    """The confirmation email: short, plain, no tracking, the link twice (button and text)."""
    config = workspace.config
    subject = f"Please confirm your subscription to {config.name}"
    text = (
        f'Hello,\n\nsomeone, probably you, signed up to "{form.title}" with this address.\n'
        f"To confirm, open this link within {CONFIRM_TTL.days} days:\n\n{url}\n\n"
        "If it was not you, ignore this email: you will not be subscribed and will hear "
        f"nothing more from us.\n\n{config.name}\n{config.postal_address}\n"
    )
    e = html.escape
    body = (
        '<!doctype html><html><body style="font-family:sans-serif;line-height:1.5">'
        f"<p>Hello,</p><p>someone, probably you, signed up to “{e(form.title)}” with this "
        f"address. To confirm, press the button within {CONFIRM_TTL.days} days:</p>"
        f'<p><a href="{e(url)}" style="display:inline-block;padding:10px 18px;'
        'background:#2f6b3f;color:#fff;text-decoration:none;border-radius:4px">'
        "Confirm my subscription</a></p>"
        f'<p>or open this link: <a href="{e(url)}">{e(url)}</a></p>'
        "<p>If it was not you, ignore this email: you will not be subscribed and will hear "
        "nothing more from us.</p>"
        f"<p><small>{e(config.name)}<br>{e(config.postal_address)}</small></p></body></html>"
    )
    data = build_message(
        RenderedEmail(subject=subject, html=body, text=text),
        from_addr=config.from_,
        to_addr=to,
        reply_to=config.reply_to,
        message_id=uuid.uuid4().hex,
        domain=domain_of(config.from_),
        unsubscribe_mailto=None,
    )
    # the envelope sender is the bare address of the workspace's ``Name <addr>``
    await mailer.send(sender=parseaddr(config.from_)[1], recipients=[to], data=data)
