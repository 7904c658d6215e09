"""The dev mailbox pages (``DRIP_ENV=dev`` only): what the embedded SMTP server received.

A message page shows the headers and the HTML part in a sandboxed iframe, so opening an email here
loads its images, tracking pixel included, the way a real mail client does; clicking a link goes
through click tracking. Plain HTML, no scripts, no external assets; the storage is
``emails.mailbox``.

The pages fit a phone (390 px) without sideways scrolling: long addresses, message ids and
header values wrap anywhere, tables become one card per row on narrow screens, and the email
itself scrolls inside its iframe. Every page links back to the dashboard, whose navigation
links here in dev.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from drip.settings import Settings
from emails.mailbox import MailboxError, list_messages, read_message, read_raw
from webhooks.deps import SettingsDep
from webhooks.problems import PROBLEM_JSON, problem

__all__ = ["router"]

router = APIRouter(prefix="/dev/mailbox", tags=["dev mailbox"])

#: The list page shows this many messages; older ones stay on disk.
LIST_LIMIT = 500

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
}
#: For the email's own HTML. ``sandbox`` keeps it in an opaque origin with no scripts even when
#: opened directly (not only inside our iframe); images and styles load from anywhere, as in a
#: mail client, which is what makes the open pixel fire.
_EMAIL_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox allow-popups allow-popups-to-escape-sandbox; "
    "default-src 'none'; img-src * data: cid:; style-src * 'unsafe-inline'; font-src * data:; "
    "frame-ancestors 'self'",
}
_TEXT = "text/plain; charset=utf-8"
#: what a message's pages answer for a name the mailbox has not (or a part it lacks)
_MISSING: dict[int | str, dict[str, object]] = {
    404: {
        "description": "no such message, or no such part (problem JSON)",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}
_SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Date", "Message-ID")

_STYLE = """
*,*::before,*::after{box-sizing:border-box}
body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#1b1b1b;
overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .6rem;
vertical-align:top;border-bottom:1px solid #ddd}th{background:#f3f3f3}
a{color:#0645ad}a:focus{outline:3px solid #ffbf47}dt{font-weight:600}dd{margin:0 0 .4rem 0}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);column-gap:1rem}
iframe{display:block;width:100%;height:75vh;border:1px solid #bbb;background:#fff}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}pre{white-space:pre-wrap}
nav ul{list-style:none;padding:0;display:flex;gap:.5rem 1.5rem;flex-wrap:wrap}
header.top{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;padding-bottom:.5rem;
border-bottom:1px solid #ddd}
@media (min-width:641px){th{white-space:nowrap}}
@media (max-width:640px){
table,thead,tbody,tr,th,td,caption{display:block}
thead{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
tr{border:1px solid #ddd;border-radius:6px;margin-bottom:.6rem}
td,th{border-bottom:1px solid #eee}td:last-child{border-bottom:0}
td[data-label]::before{content:attr(data-label);display:block;font-weight:600;font-size:.85em;
color:#555}
dl{grid-template-columns:minmax(0,1fr)}dd{margin-bottom:.6rem}
}
"""


def _mailbox_dir(settings: Settings) -> Path:
    return settings.mailbox_dir


def _page(title: str, body: str) -> HTMLResponse:
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · drip dev mailbox</title><style>{_STYLE}</style></head>"
        '<body><header class="top"><a href="/dashboard">← Dashboard</a></header>'
        f"<main>{body}</main></body></html>"
    )
    return HTMLResponse(doc, headers=_PAGE_HEADERS)


def _not_found(name: str) -> Response:
    return problem(404, "Message not found", f"no message {name!r} in the dev mailbox")


def _message(settings: Settings, name: str) -> EmailMessage | Response:
    """The stored message, or the 404 for a name the mailbox has not (or could not have)."""
    try:
        return read_message(_mailbox_dir(settings), name)
    except MailboxError:
        return _not_found(name)


def _part(settings: Settings, name: str, subtype: str, label: str) -> str | Response:
    """The message's ``text/<subtype>`` part, or the 404 if it has none (or is not there)."""
    msg = _message(settings, name)
    if isinstance(msg, Response):
        return msg
    part = msg.get_body((subtype,))
    if part is None:
        return problem(404, f"No {label} part", f"message {name!r} has no {label} part")
    return str(part.get_content())


def _rows(cells: Iterable[tuple[str, str]]) -> str:
    """Table cells, each labelled for the narrow layout (where a row becomes a card)."""
    return "".join(f'<td data-label="{label}">{c}</td>' for label, c in cells)


@router.get("", response_class=HTMLResponse, summary="Every email the dev SMTP server received")
def list_page(settings: SettingsDep) -> Response:
    mailbox_dir = _mailbox_dir(settings)
    entries = list_messages(mailbox_dir, limit=LIST_LIMIT)
    intro = (
        f"<p>Emails sent to the dev SMTP server (port {settings.smtp_port}), newest first, "
        f"stored in <code>{html.escape(str(mailbox_dir))}</code>. Reload to see new ones.</p>"
    )
    if not entries:
        table = "<p>No email yet. Submit a form to start a journey.</p>"
    else:
        rows = "".join(
            "<tr>"
            + _rows(
                (
                    (
                        "Received",
                        f'<time datetime="{e.received_at.isoformat()}">'
                        f"{e.received_at:%Y-%m-%d %H:%M:%S} UTC</time>",
                    ),
                    ("To", html.escape(e.to)),
                    (
                        "Subject",
                        f'<a href="mailbox/{quote(e.name)}">'
                        f"{html.escape(e.subject or '(no subject)')}</a>",
                    ),
                    ("From", html.escape(e.from_)),
                )
            )
            + "</tr>"
            for e in entries
        )
        table = (
            f"<table><caption>{len(entries)} message{'s' if len(entries) != 1 else ''}"
            '</caption><thead><tr><th scope="col">Received</th><th scope="col">To</th>'
            '<th scope="col">Subject</th><th scope="col">From</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    return _page("Inbox", f"<h1>Dev mailbox</h1>{intro}{table}")


@router.get(
    "/{name}",
    response_class=HTMLResponse,
    summary="One email: headers and HTML part",
    responses=_MISSING,
)
def message_page(name: str, settings: SettingsDep) -> Response:
    msg = _message(settings, name)
    if isinstance(msg, Response):
        return msg
    subject = str(msg.get("Subject", "")) or "(no subject)"
    shown = "".join(
        f"<dt>{h}</dt><dd>{html.escape(str(msg[h]))}</dd>" for h in _SHOWN_HEADERS if h in msg
    )
    every = "".join(
        f"<tr><th scope='row'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in msg.items()
    )
    base = quote(name)
    html_body, text_body = msg.get_body(("html",)), msg.get_body(("plain",))
    links = [f'<li><a href="{base}/raw">Raw source</a></li>']
    if text_body is not None:
        links.insert(0, f'<li><a href="{base}/text">Text part</a></li>')
    if html_body is not None:
        links.insert(0, f'<li><a href="{base}/html">HTML part on its own</a></li>')
        body = (
            '<iframe sandbox="allow-popups allow-popups-to-escape-sandbox" '
            f'src="{base}/html" title="HTML part of the email"></iframe>'
        )
    elif text_body is not None:
        body = f"<pre>{html.escape(str(text_body.get_content()))}</pre>"
    else:
        body = "<p>This email has neither an HTML nor a text part.</p>"
    content = (
        '<p><a href="../mailbox">← All messages</a></p>'
        f"<h1>{html.escape(subject)}</h1><dl>{shown}</dl>"
        f'<nav aria-label="Parts of this email"><ul>{"".join(links)}</ul></nav>{body}'
        f"<details><summary>All headers</summary><table>{every}</table></details>"
    )
    return _page(subject, content)


@router.get(
    "/{name}/html",
    response_class=HTMLResponse,
    summary="The HTML part as sent (sandboxed: no scripts, images load)",
    responses=_MISSING,
)
def html_part(name: str, settings: SettingsDep) -> Response:
    part = _part(settings, name, "html", "HTML")
    return part if isinstance(part, Response) else HTMLResponse(part, headers=_EMAIL_HEADERS)


@router.get(
    "/{name}/text", response_class=Response, summary="The plain-text part", responses=_MISSING
)
def text_part(name: str, settings: SettingsDep) -> Response:
    part = _part(settings, name, "plain", "text")
    if isinstance(part, Response):
        return part
    return Response(part, media_type=_TEXT, headers=_PAGE_HEADERS)


@router.get(
    "/{name}/raw",
    response_class=Response,
    summary="The message source (RFC 5322)",
    responses=_MISSING,
)
def raw_message(name: str, settings: SettingsDep) -> Response:
    try:
        raw = read_raw(_mailbox_dir(settings), name)
    except MailboxError:
        return _not_found(name)
    return Response(raw, media_type=_TEXT, headers=_PAGE_HEADERS)
