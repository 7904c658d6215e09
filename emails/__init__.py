"""Emails: templates (MJML + sandboxed Jinja), rendering, MIME messages, tracking links, sending.

Imports flow one way: this package uses ``drip.settings``, ``contacts`` and ``campaigns`` models
and is used by ``workflows`` and ``webhooks``; it never imports them.
"""

from emails.dkim import DkimSigner
from emails.errors import (
    EmailError,
    PermanentSendError,
    SendError,
    TemplateError,
    TransientSendError,
)
from emails.links import (
    click_token,
    insert_pixel,
    open_token,
    pixel_url,
    rewrite_links,
    unsubscribe_token,
    verify_unsubscribe_token,
)
from emails.message import build_message, domain_of
from emails.render import RenderedEmail, Renderer
from emails.sender import SmtpTransport, Transport, classify_smtp_error
from emails.templates import TemplateEngine, compile_fragment

__all__ = [
    "DkimSigner",
    "EmailError",
    "PermanentSendError",
    "RenderedEmail",
    "Renderer",
    "SendError",
    "SmtpTransport",
    "TemplateEngine",
    "TemplateError",
    "TransientSendError",
    "Transport",
    "build_message",
    "classify_smtp_error",
    "click_token",
    "compile_fragment",
    "domain_of",
    "insert_pixel",
    "open_token",
    "pixel_url",
    "rewrite_links",
    "unsubscribe_token",
    "verify_unsubscribe_token",
]
