"""The files each email template is built from, by content hash, for the compiled plan.

A deploy records the exact text of every file a campaign's emails are built from: the template
(``emails/NAME.mjml``), its plain-text part (``emails/NAME.txt``) if there is one, its layout
(``emails/layouts/NAME.mjml``, chosen by the template's first line ``{# layout: NAME #}`` or
workspace.yaml's ``layout``) and the partials it and its layout include, transitively. The plan
names them by SHA-256 (``Plan.templates``), so its version changes when any of them changes and a
running journey renders the files of the version it started with, however the folder changes.

Only the files are read here (this package imports nothing of ``emails``); the rules that pick
them mirror ``emails.templates``, which compiles them. A layout the workspace names but does not
have is recorded with an empty hash, so rendering the deployed version fails with the same
"unknown layout" the workspace folder would give. The built-in layout ships with the engine and
is not recorded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MISSING", "TemplateSources", "content_hash", "template_files"]

#: The hash recorded for a file the template needs but the workspace lacks (a named layout).
MISSING = ""

# The same patterns as emails.templates: an include names a partial, a first-line comment a layout.
_INCLUDE = re.compile(r"""{%-?\s*include\s+(["'])(?P<name>[^"'{}%]*)\1\s*-?%}""")
_LAYOUT_LINE = re.compile(r"\A\s*{#\s*layout:\s*(?P<name>[^\s#]*)\s*#}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


def content_hash(text: str) -> str:
    """The key a template file's text is stored and named under."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TemplateSources:
    """Reads a workspace's ``emails/`` folder once per file and keeps every text by its hash
    (what a deploy stores), so templates sharing a layout or partial read it once."""

    folder: Path
    default_layout: str | None = None
    #: hash -> text of every file read so far
    texts: dict[str, str] = field(default_factory=dict)
    _by_path: dict[str, str | None] = field(default_factory=dict)

    def _hash_of(self, relative: str) -> str | None:
        """The hash of ``emails/<relative>``, or None if there is no such file.

        Raises OSError or UnicodeDecodeError for a file that exists but cannot be read as
        UTF-8: the workspace loader reports that as a problem of the template."""
        if relative not in self._by_path:
            path = self.folder / relative
            if not path.is_file():
                self._by_path[relative] = None
            else:
                text = path.read_text(encoding="utf-8")
                digest = content_hash(text)
                self.texts[digest] = text
                self._by_path[relative] = digest
        return self._by_path[relative]

    def files(self, name: str) -> dict[str, str]:
        """``{path under emails/: hash}`` of the files template ``name`` is built from."""
        out: dict[str, str] = {}
        main = f"{name}.mjml"
        digest = self._hash_of(main)
        if digest is None:
            return out
        out[main] = digest
        text_digest = self._hash_of(f"{name}.txt")
        if text_digest is not None:
            out[f"{name}.txt"] = text_digest
        source = self.texts[digest]
        chosen = _LAYOUT_LINE.match(source)
        layout = chosen.group("name") if chosen else self.default_layout
        pending = [source]
        if layout:
            relative = f"layouts/{layout}.mjml"
            layout_digest = self._hash_of(relative) if _NAME.fullmatch(layout) else None
            out[relative] = layout_digest if layout_digest is not None else MISSING
            if layout_digest is not None:
                pending.append(self.texts[layout_digest])
        while pending:
            for match in _INCLUDE.finditer(pending.pop()):
                key = match.group("name").removeprefix("partials/").removesuffix(".mjml")
                relative = f"partials/{key}.mjml"
                if not _NAME.fullmatch(key) or relative in out:
                    continue
                partial = self._hash_of(relative)
                if partial is not None:
                    out[relative] = partial
                    pending.append(self.texts[partial])
        return out


def template_files(
    folder: Path, names: Mapping[str, object], default_layout: str | None = None
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The files of each template in ``names`` and every text by hash (see TemplateSources)."""
    sources = TemplateSources(folder, default_layout)
    return {name: sources.files(name) for name in names}, sources.texts
