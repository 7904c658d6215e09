"""Errors of the emails package, split by what the caller should do about them.

::

    EmailError
    ├── TemplateError         the email cannot be produced: unknown template, MJML or Jinja
    │                         syntax error, sandbox violation, undefined variable. Retrying
    │                         will not help; the outbox row is marked failed and the author fixes
    │                         the template.
    └── SendError             the SMTP exchange failed
        ├── TransientSendError   SMTP 4xx, connection refused or dropped, timeout, TLS or
        │                        authentication trouble: retry later with backoff, because a relay
        │                        outage or a misconfiguration should delay mail, never drop it.
        └── PermanentSendError   SMTP 5xx for this message or recipient: do not retry; count it
                                 as a bounce.

Messages never contain rendered content or settings, only what went wrong and where, so they are
safe to store on the outbox row and show in logs.
"""

from __future__ import annotations

__all__ = [
    "EmailError",
    "PermanentSendError",
    "SendError",
    "TemplateError",
    "TransientSendError",
]


class EmailError(Exception):
    """Anything the emails package raises on purpose."""


class TemplateError(EmailError):
    """A template (body, subject or preheader) that cannot be rendered for this contact."""

    def __init__(self, message: str, *, template: str = "", lineno: int | None = None) -> None:
        where = template + (f":{lineno}" if template and lineno is not None else "")
        super().__init__(f"{where}: {message}" if where else message)
        self.template = template
        self.lineno = lineno
        self.reason = message


class SendError(EmailError):
    """The SMTP server or the connection to it refused the message.

    ``code`` is the SMTP reply code when the server gave one, ``None`` for connection trouble.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(f"{code} {message}" if code is not None else message)
        self.code = code
        self.reason = message


class TransientSendError(SendError):
    """Worth retrying later: the same message may well be accepted then."""


class PermanentSendError(SendError):
    """The server said no for good (5xx); retrying would only repeat the bounce.

    ``hard_bounce`` is set when the refusal was of the recipient itself (5xx to RCPT TO: no such
    mailbox): the address should get no more mail. A 5xx to the message (content, size) says
    nothing about the address, so it is not a hard bounce.
    """

    def __init__(self, message: str, *, code: int | None = None, hard_bounce: bool = False) -> None:
        super().__init__(message, code=code)
        self.hard_bounce = hard_bounce
