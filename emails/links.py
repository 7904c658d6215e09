"""Tracking and unsubscribe tokens, link rewriting and the open pixel.

Tokens are HMAC-SHA256 of the message id (and link position) under the workspace secret, so they
are unguessable (144 bits), carry no enumerable counter, and are *deterministic*: a retried send
renders the same tokens, and storing its links again is a no-op instead of a second set of rows.
A click token only names a row holding the original URL; the redirect never trusts anything in
the URL itself, so a tampered token cannot become an open redirect.

Unsubscribe tokens are different: the unsubscribe endpoint must work without a database lookup of
the token, so the token carries the contact id and a MAC over it.
"""

from __future__ import annotations

import base64
import hmac
import html
import re

__all__ = [
    "NOTRACK_ATTRIBUTE",
    "alert_ack_token",
    "click_token",
    "insert_pixel",
    "open_token",
    "pixel_url",
    "rewrite_links",
    "unsubscribe_token",
    "verify_alert_ack_token",
    "verify_unsubscribe_token",
    "verify_view_token",
    "view_token",
]

#: An anchor carrying this attribute is never rewritten (the layout's unsubscribe link uses it).
NOTRACK_ATTRIBUTE = "data-drip-notrack"

_TOKEN_BYTES = 18  # 144 bits; a multiple of 3 so the base64 has no padding to strip
_ID_BYTES = 8
_UNSUB_MAC_BYTES = 16
_UNSUB_LENGTH = (_ID_BYTES + _UNSUB_MAC_BYTES) * 4 // 3
_UNSUB_TOKEN = re.compile(rf"^[A-Za-z0-9_-]{{{_UNSUB_LENGTH}}}$")
_VIEW_TOKEN = re.compile(r"^(?P<id>[A-Za-z0-9-]{1,64})\.(?P<mac>[A-Za-z0-9_-]{24})$")
_ALERT_TOKEN = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,64})\.(?P<mac>[A-Za-z0-9_-]{24})$")

# An opening <a> tag and its href value (quoted either way, or bare). MJML always writes double
# quotes, but hand-written mj-raw may not. Non-greedy attribute runs keep this linear.
_ANCHOR_HREF = re.compile(
    r"""(?P<before><a\b[^>]*?\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s>"']+))""",
    re.IGNORECASE,
)
_TRACKABLE = re.compile(r"^\s*https?://", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac(secret: bytes, *parts: str) -> bytes:
    # The purpose comes first and NUL separates parts, so an open token can never equal a click
    # token and ("ab", "c") never collides with ("a", "bc").
    return hmac.digest(secret, "\x00".join(parts).encode(), "sha256")


def open_token(secret: bytes, message_id: str) -> str:
    """The token of a message's open pixel; stored on the outbox row to find the message."""
    return _b64(_mac(secret, "open", message_id)[:_TOKEN_BYTES])


def click_token(secret: bytes, message_id: str, position: int) -> str:
    """The token of the ``position``-th tracked link of a message (the primary key of its row)."""
    return _b64(_mac(secret, "click", message_id, str(position))[:_TOKEN_BYTES])


def unsubscribe_token(secret: bytes, contact_id: int) -> str:
    """A token that names a contact and proves we issued it; it does not expire, because
    RFC 8058 unsubscribe links must keep working in old emails."""
    if not 0 <= contact_id < 2**63:
        raise ValueError(f"contact id out of range: {contact_id}")
    payload = contact_id.to_bytes(_ID_BYTES, "big")
    mac = hmac.digest(secret, b"unsubscribe\x00" + payload, "sha256")
    return _b64(payload + mac[:_UNSUB_MAC_BYTES])


def verify_unsubscribe_token(secret: bytes, token: str) -> int | None:
    """The contact id in a token we issued, or None for anything else (tampered, truncated)."""
    if not _UNSUB_TOKEN.fullmatch(token):  # fullmatch: ``$`` alone would accept a trailing "\n"
        return None
    raw = base64.urlsafe_b64decode(token)
    payload, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
    expected = hmac.digest(secret, b"unsubscribe\x00" + payload, "sha256")
    if not hmac.compare_digest(mac, expected[:_UNSUB_MAC_BYTES]):
        return None
    return int.from_bytes(payload, "big")


def view_token(secret: bytes, message_id: str) -> str:
    """The token of a message's "view in your browser" page: the message id and a MAC over it,
    so the page needs no token table and a guessed id without the MAC shows nothing."""
    if not _VIEW_TOKEN.fullmatch(f"{message_id}.{'A' * 24}"):
        raise ValueError(f"message id not usable in a view token: {message_id!r}")
    return f"{message_id}.{_b64(_mac(secret, 'view', message_id)[:_TOKEN_BYTES])}"


def verify_view_token(secret: bytes, token: str) -> str | None:
    """The message id in a view token we issued, or None for anything else."""
    match = _VIEW_TOKEN.fullmatch(token)
    if match is None:
        return None
    message_id = match.group("id")
    expected = _b64(_mac(secret, "view", message_id)[:_TOKEN_BYTES])
    if not hmac.compare_digest(match.group("mac"), expected):
        return None
    return message_id


def alert_ack_token(secret: bytes, alert_id: str) -> str:
    """The token of a lead alert's acknowledge link: the alert id and a MAC over it, like a view
    token but for its own purpose, so one can never stand for the other. It does not expire: an
    old alert acknowledged late is still worth recording, and the page only offers a button."""
    if not _ALERT_TOKEN.fullmatch(f"{alert_id}.{'A' * 24}"):
        raise ValueError(f"alert id not usable in an acknowledge token: {alert_id!r}")
    return f"{alert_id}.{_b64(_mac(secret, 'alert-ack', alert_id)[:_TOKEN_BYTES])}"


def verify_alert_ack_token(secret: bytes, token: str) -> str | None:
    """The alert id in an acknowledge token we issued, or None for anything else."""
    match = _ALERT_TOKEN.fullmatch(token)
    if match is None:
        return None
    alert_id = match.group("id")
    expected = _b64(_mac(secret, "alert-ack", alert_id)[:_TOKEN_BYTES])
    if not hmac.compare_digest(match.group("mac"), expected):
        return None
    return alert_id


def pixel_url(base_url: str, token: str) -> str:
    return f"{base_url}/t/o/{token}.gif"


def insert_pixel(html_doc: str, url: str) -> str:
    """Add the 1x1 open pixel just before ``</body>``, last in the document, so a client that
    stops loading images early has shown the content first."""
    img = (
        f'<img src="{html.escape(url)}" alt="" width="1" height="1" border="0" '
        'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;" />'
    )
    at = html_doc.rfind("</body")
    if at < 0 or not _BODY_END.match(html_doc, at):
        ends = list(_BODY_END.finditer(html_doc))  # </BODY>, or </body > with a space
        if not ends:
            return html_doc + img
        at = ends[-1].start()
    return html_doc[:at] + img + html_doc[at:]


def rewrite_links(
    html_doc: str, *, message_id: str, secret: bytes, base_url: str
) -> tuple[str, list[tuple[str, int, str]]]:
    """Point every http(s) link through click tracking.

    Returns the new HTML and ``(token, position, original_url)`` for each rewritten link, the
    rows the click redirect will look up. mailto:, tel:, anchors, our own unsubscribe links and
    anchors marked with ``data-drip-notrack`` are left alone: tracking an unsubscribe would make
    it depend on the tracking endpoint, and the others are not web requests at all.
    """
    skip_prefix = f"{base_url}/u/"
    links: list[tuple[str, int, str]] = []

    def replace(match: re.Match[str]) -> str:
        before = match.group("before")
        raw = match.group("dq")
        if raw is None:
            raw = match.group("sq")
        if raw is None:
            raw = match.group("bare")
        url = html.unescape(raw).strip()
        if (
            not _TRACKABLE.match(url)
            or url.startswith(skip_prefix)
            or NOTRACK_ATTRIBUTE in before.lower()
            or _notrack_after(match)
        ):
            return match.group(0)
        position = len(links)
        token = click_token(secret, message_id, position)
        links.append((token, position, url))
        return f'{before}"{base_url}/t/c/{token}"'

    return _ANCHOR_HREF.sub(replace, html_doc), links


def _notrack_after(match: re.Match[str]) -> bool:
    """Whether the notrack marker comes after the href within the same tag."""
    end = match.string.find(">", match.end())
    tail = match.string[match.end() : end if end >= 0 else len(match.string)]
    return NOTRACK_ATTRIBUTE in tail.lower()
