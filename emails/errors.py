"""Errors of the emails package, split by what the caller should do about them.

::

    EmailError
    ├── TemplateError         the email cannot be produced: unknown template, MJML or Jinja
    │   │                     syntax error, sandbox violation, undefined variable. Retrying
    │   │                     will not help; the outbox row is marked failed and the author fixes
    │   │                     the template.
    │   └── TemplateBudgetError  the render went over its budget (time, output, or an operation
    │                            that would build something too large); the render was stopped.
    └── SendError             the SMTP exchange failed
        ├── TransientSendError   SMTP 4xx, connection refused or dropped, timeout, TLS or
        │   │                    authentication trouble: retry later with backoff, because a relay
        │   │                    outage or a misconfiguration should delay mail, never drop it.
        │   ├── SendWithdrawn    given up before any of it went on a connection: the worker is
        │   │                    stopping (another worker sends it), or the caller's last check
        │   │                    just before MAIL FROM said no. Nothing reached the relay.
        │   └── DomainDeferred   held back for the recipient's domain (its backoff, pace or
        │                        warm-up cap): send it at ``retry_at``; other domains go on.
        └── PermanentSendError   SMTP 5xx for this message or recipient: do not retry; count it
                                 as a hard or soft bounce (``bounce``), see below.

Messages never contain rendered content or settings, only what went wrong and where, so they are
safe to store on the outbox row and show in logs.

Bounces. A permanent refusal is a *hard* bounce when it says the address itself is no good (it
suppresses the contact at once), a *soft* bounce when the address may work another day (mailbox
full, message refused as spam or too big; ``soft_bounce_limit`` of them suppress), or no bounce
at all (``None``) when it says nothing about the recipient: the relay refused our sender. The
table is ``emails.sender.bounce_kind``; ``contacts.repository.record_bounce`` applies the rule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

__all__ = [
    "Bounce",
    "DomainDeferred",
    "EmailError",
    "PermanentSendError",
    "SendError",
    "SendWithdrawn",
    "TemplateBudgetError",
    "TemplateError",
    "TransientSendError",
]

#: What a permanent refusal says about the recipient's address (see the module docstring).
Bounce = Literal["hard", "soft"]


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


class TemplateBudgetError(TemplateError):
    """A render over its budget (``DRIP_TEMPLATE_RENDER_SECONDS``, ``DRIP_TEMPLATE_OUTPUT_CHARS``)
    was stopped, so one careless template cannot wedge a worker; ``lineno`` is the template's
    line when Jinja knows it (subjects, preheaders, text parts; an MJML body's lines change)."""


class SendError(EmailError):
    """The SMTP server or the connection to it refused the message.

    ``code`` is the SMTP reply code when the server gave one, ``None`` for connection trouble.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(f"{code} {message}" if code is not None else message)
        self.code = code
        self.reason = message


class TransientSendError(SendError):
    """Worth retrying later: the same message may well be accepted then.

    ``deferral`` marks the receiving side asking us to slow down (``421 4.7.0 Try again
    later``, a relay's ``454`` quota): the recipient's domain group backs off
    (``emails.pacing``), the other domains do not."""

    deferral: bool = False


class SendWithdrawn(TransientSendError):
    """Not sent, and nothing of the message reached the relay, so sending it again later (here
    or on another worker) cannot make a duplicate. A caller unaware of it sees a transient
    error and retries, which is right."""


class DomainDeferred(TransientSendError):
    """Not sent now because of the recipient's domain group (``emails.pacing``): it is backing
    off after a deferral, its pace has no slot within the caller's horizon, or its warm-up cap
    for the day is reached. Send it again at ``retry_at``; mail to other domains goes on."""

    def __init__(
        self, message: str, *, retry_at: datetime, group: str, code: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_at = retry_at
        self.group = group
        self.deferral = True


class PermanentSendError(SendError):
    """The server said no for good (5xx); retrying would only repeat the refusal.

    ``bounce`` says what the refusal means for the address: ``"hard"`` (no such mailbox or
    domain: send it nothing more), ``"soft"`` (mailbox full, content or policy refused: counted,
    suppressed after ``soft_bounce_limit``), ``None`` (not about the recipient, e.g. our sender
    was refused: the message failed but the contact is not counted). ``status`` is the RFC 3463
    enhanced status code of the reply (``"5.1.1"``) when it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        bounce: Bounce | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.bounce: Bounce | None = bounce
        self.status = status

    @property
    def hard_bounce(self) -> bool:
        """The address itself was refused: it should get no more mail."""
        return self.bounce == "hard"
