"""Compile-time changes to an email's HTML: UTM parameters on links, ``mj-style inline`` CSS,
tags folded onto their own lines. Each runs once per template, never per contact."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from contacts.hits import TRAP_URL

#: The layout's hidden link, which only machines follow (see ``contacts.hits``): never tagged.
TRAP_HOST = urlsplit(TRAP_URL).hostname

__all__ = [
    "TRAP_HOST",
    "Utm",
    "append_utm",
    "fold_tags",
    "splice_query",
    "take_inline_styles",
    "utm_query",
]

_INLINE_STYLE = re.compile(
    r"<mj-style\b(?P<attrs>[^>]*)>(?P<css>.*?)</mj-style\s*>", re.IGNORECASE | re.DOTALL
)
_INLINE_ATTR = re.compile(r"""\binline\s*=\s*["']inline["']""", re.IGNORECASE)
#: A start tag with attributes and no Jinja in it: ``<td style="...">``.
_TAG_ATTRIBUTES = re.compile(
    r"(<[a-zA-Z][a-zA-Z0-9-]*) "  # the tag's name, then the one space to become a line break
    r"""((?:[^\s"'<>/={}]+(?:\s*=\s*(?:"[^"{}]*"|'[^'{}]*'|[^\s"'<>{}]+))?\s*)+/?>)"""
)
_HREF = re.compile(
    r"""(?P<before><a\b[^>]*?\shref\s*=\s*)(?P<q>["'])(?P<url>[^"']*)(?P=q)""", re.IGNORECASE
)


@dataclass(frozen=True)
class Utm:
    """UTM parameters a campaign appends to its links (``utm_source=...``); empty values are
    left out. ``domains`` limits them to the company's own sites (and their subdomains)."""

    source: str = ""
    medium: str = ""
    campaign: str = ""
    content: str = ""
    term: str = ""
    domains: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Utm | None:
        if not values:
            return None
        domains = values.get("domains") or ()
        return cls(
            **{k: str(values.get(k) or "") for k in ("source", "medium", "campaign", "content")},
            term=str(values.get("term") or ""),
            domains=tuple(str(d).lower() for d in domains),
        )

    def params(self) -> list[tuple[str, str]]:
        pairs = [
            ("utm_source", self.source),
            ("utm_medium", self.medium),
            ("utm_campaign", self.campaign),
            ("utm_content", self.content),
            ("utm_term", self.term),
        ]
        return [(k, v) for k, v in pairs if v]

    def applies_to(self, host: str) -> bool:
        host = host.lower()
        return not self.domains or any(host == d or host.endswith("." + d) for d in self.domains)


def take_inline_styles(mjml_source: str) -> tuple[str, str]:
    """Take out the ``<mj-style inline="inline">`` blocks: (source without them, their CSS)."""
    css: list[str] = []

    def take(match: re.Match[str]) -> str:
        if not _INLINE_ATTR.search(match.group("attrs")):
            return match.group(0)
        css.append(match.group("css"))
        return ""

    return _INLINE_STYLE.sub(take, mjml_source), "\n".join(css)


def utm_query(url: str, utm: Utm) -> str:
    """The query text to append to ``url`` (unescaped), or "" when it needs none."""
    if not url.lower().startswith(("http://", "https://")) or "{" in url.split("?")[0]:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if not parts.hostname or parts.hostname == TRAP_HOST or not utm.applies_to(parts.hostname):
        return ""
    present = {pair.split("=", 1)[0] for pair in parts.query.split("&") if pair}
    missing = [(k, v) for k, v in utm.params() if k not in present]
    return urlencode(missing) if missing else ""


def splice_query(raw: str, extra: str, amp: str) -> str:
    head, hash_, fragment = raw.partition("#")
    joiner = amp if "?" in head else "?"
    if head.endswith(("?", "&", "&amp;")):
        joiner = ""
    return f"{head}{joiner}{extra}{hash_}{fragment}"


def append_utm(html_doc: str, utm: Utm) -> str:
    """Add the campaign's UTM parameters to every web link that lacks them, at compile time.

    The URL may hold Jinja (``?id={{ contact.id }}``); only what is appended is escaped, the
    author's text stays byte for byte. Parameters the author already wrote win.
    """

    def add(match: re.Match[str]) -> str:
        raw = match.group("url")
        extra = utm_query(html_lib.unescape(raw).strip(), utm)
        if not extra:
            return match.group(0)
        new = splice_query(raw, html_lib.escape(extra, quote=True), "&amp;")
        return f"{match.group('before')}{match.group('q')}{new}{match.group('q')}"

    return _HREF.sub(add, html_doc)


def fold_tags(html_doc: str) -> str:
    """Start every tag that has attributes on a new line, breaking after its name.

    MJML writes a section as one line of several KB; SMTP allows 998 octets a line, so such
    HTML would need quoted-printable encoding, which costs more than anything else in building a
    message. A line break between a tag's name and its attributes is whitespace the HTML parser
    ignores, so the page is the same, and an ASCII email can go as it is (7bit).
    """
    return _TAG_ATTRIBUTES.sub(r"\1\n\2", html_doc)
