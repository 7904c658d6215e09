"""The plain-text part, derived from the rendered HTML.

Deriving it (rather than asking authors for a second template) keeps both parts saying the same
thing, including the footer; spam filters penalise a multipart message whose text part is empty or
unrelated to its HTML. Links are written ``text (url)`` so a text-only reader can still follow
them, and the hidden preheader, styles and Outlook conditional comments are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from html.parser import HTMLParser

__all__ = [
    "LINK_END",
    "LINK_START",
    "finish_text",
    "html_to_text",
    "html_to_text_template",
    "text_to_template",
]

#: Around a web link's URL in a text template, so the renderer can swap in the tracked URL.
#: Control characters no template or contact value can produce (the text sandbox strips them).
LINK_START = "\x02"
LINK_END = "\x03"
_MARKED = re.compile(f"{LINK_START}([^{LINK_START}{LINK_END}]*){LINK_END}")
_WEB = re.compile(r"^https?://", re.IGNORECASE)
#: A URL in an author's text part; trailing punctuation ends a sentence, not the URL.
_TEXT_URL = re.compile(
    r"""https?://(?:{{[^}]*}}|[^\s<>"'\x02\x03])+?(?=[.,;:!?)\]]*(?:\s|$))""", re.IGNORECASE
)

_BLOCK = frozenset(
    {
        "address", "article", "blockquote", "div", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "ol", "p", "section", "table", "tr", "ul",
    }
)  # fmt: skip
_SKIP = frozenset({"head", "style", "script", "title", "noscript", "template"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextParser(HTMLParser):
    def __init__(self, *, mark_links: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self._mark = mark_links
        self.out: list[str] = []
        self._skip_depth = 0  # inside <head>, <style>, a display:none element ...
        self._stack: list[tuple[str, bool]] = []  # open elements and whether each one skips
        self._link: tuple[str, int] | None = None  # href, index in out where its text starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        skips = tag in _SKIP or _HIDDEN.search(dict(attrs).get("style") or "") is not None
        if tag not in _VOID:
            self._stack.append((tag, skips))
            if skips:
                self._skip_depth += 1
        if self._skip_depth:
            return
        if tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK:
            self.out.append("\n\n" if tag in {"p", "h1", "h2", "h3", "table"} else "\n")
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.out.append(f"[{alt}]")
        elif tag == "a":
            href = (dict(attrs).get("href") or "").strip()
            self._link = (href, len(self.out)) if href else None

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Pop up to the matching open tag, tolerating the unclosed <p>s real HTML has.
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                for _, skipped in self._stack[i:]:
                    if skipped:
                        self._skip_depth -= 1
                del self._stack[i:]
                break
        else:
            return
        if self._skip_depth:
            return
        if tag == "a" and self._link is not None:
            href, start = self._link
            self._link = None
            label = " ".join("".join(self.out[start:]).split())
            if href.startswith("mailto:"):
                href = href[len("mailto:") :]
            shown = f"{LINK_START}{href}{LINK_END}" if self._mark and _WEB.match(href) else href
            if label and label != href:
                self.out.append(f" ({shown})")
            elif not label:
                self.out.append(shown)
        elif tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            # Line breaks in HTML source are just spaces; structure decides where lines end.
            self.out.append(data.replace("\r", " ").replace("\n", " "))


def _convert(html_doc: str, *, mark_links: bool) -> str:
    parser = _TextParser(mark_links=mark_links)
    parser.feed(html_doc)
    parser.close()
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.out).split("\n"))
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


def html_to_text(html_doc: str) -> str:
    """Readable plain text of an email's HTML."""
    return _convert(html_doc, mark_links=False)


def html_to_text_template(html_template: str) -> str:
    """The text part as a Jinja template, from the HTML template (Jinja tags and all).

    Converting once per template instead of once per email is what makes the text part cheap:
    tags and expressions are just text to the HTML parser, so they come through in place, and
    the text sandbox renders them per contact. Web links come out marked (see ``LINK_START``).
    """
    return _convert(html_template, mark_links=True)


def text_to_template(text: str, tag_url: Callable[[str], str] | None) -> str:
    """An author's own text part, with its web links marked like a derived one; ``tag_url``
    may add to each URL (the campaign's UTM parameters)."""

    def mark(match: re.Match[str]) -> str:
        url = match.group(0)
        return f"{LINK_START}{tag_url(url) if tag_url else url}{LINK_END}"

    return _TEXT_URL.sub(mark, text.replace("\r\n", "\n"))


def finish_text(text: str, links: Mapping[str, str]) -> str:
    """A rendered text template made final: each marked URL replaced by ``links[url]`` (the
    tracked URL) or itself, and the blank lines that skipped ``{% if %}`` blocks leave tidied."""
    if LINK_START in text:
        text = _MARKED.sub(lambda m: links.get(m.group(1), m.group(1)), text)
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"
