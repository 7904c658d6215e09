"""What a transactional email's template needs from the caller's ``data``, checked before sending.

A receipt rendered without its order number must not go out with a blank where the number was,
nor fail in the worker minutes later where the app that asked cannot see it: the API checks
``data`` against the template first and answers 422 naming what is missing. What counts as
needed is what the renderer would fail on: ``data.X`` printed, compared or filtered, but not
under ``default()``, ``is defined`` or a truth test (``emails._lint_jinja.unguarded_reads``,
the same rules lint applies to ``contact.X``). Names other than ``data`` and those drip itself
provides (``contact``, ``workspace``, the links: ``emails.lint.BODY_NAMES``) are never
defined, whatever the data says, so they are reported as template errors.

The template's sources are its file with its partials spliced in, its ``.txt`` part and its
layout, as ``emails.templates`` compiles them; the subject is a source of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta

from emails._lint_jinja import unguarded_reads
from emails._sandbox import Sandbox
from emails.errors import TemplateError
from emails.lint import BODY_NAMES, TEXT_NAMES
from emails.templates import _LAYOUT, _LAYOUT_LINE, _splice

if TYPE_CHECKING:
    from campaigns.workspace import Workspace

__all__ = ["DATA_NAME", "TemplateNeeds", "needs_of", "template_sources"]

#: the name the caller's data has in templates (``emails.render.template_data``)
DATA_NAME = "data"
_ENV = Sandbox(autoescape=False, undefined=jinja2.Undefined)


@dataclass(frozen=True)
class TemplateNeeds:
    """What a template (and subject) needs: the keys of ``data`` it reads unguarded, the names
    it reads that nothing can provide, and its errors (syntax, unknown layout or partial)."""

    needed: list[str] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def missing(self, data: Mapping[str, Any]) -> list[str]:
        """The needed keys ``data`` lacks; the renderer drops None values
        (``emails.templates.Record``), so a null is missing too."""
        return [key for key in self.needed if data.get(key) is None]


def template_sources(workspace: Workspace, name: str) -> list[tuple[str, str, frozenset[str]]]:
    """``(what, source, names drip provides there)`` of every Jinja text of template ``name``.
    Raises TemplateError (an unknown template, an unreadable file, an unknown partial)."""
    path = workspace.templates.get(name)
    if path is None:
        raise TemplateError("unknown template", template=name)
    folder = workspace.root / "emails"
    source = _read(path, name)
    partials = {
        p.stem: _read(p, f"partials/{p.name}") for p in sorted(folder.glob("partials/*.mjml"))
    }
    found = [(name, _splice(source, name, partials, {}), BODY_NAMES)]
    text = path.with_suffix(".txt")
    if text.is_file():
        found.append(
            (f"{name}.txt", _splice(_read(text, text.name), text.name, partials, {}), BODY_NAMES)
        )
    chosen = _LAYOUT_LINE.match(source)
    layout_name = chosen.group("name") if chosen else workspace.config.layout
    if layout_name:
        layout_path = folder / "layouts" / f"{layout_name}.mjml"
        if not layout_path.is_file():
            raise TemplateError(f"unknown layout {layout_name!r}", template=name)
        layout = _read(layout_path, f"layouts/{layout_name}.mjml")
    else:
        layout = _LAYOUT
    found.append(("layout", _splice(layout, "layout", partials, {}), BODY_NAMES))
    return found


def needs_of(workspace: Workspace, template: str, subject: str | None) -> TemplateNeeds:
    """What ``template`` (and ``subject``, when the caller gives one) needs; never raises for
    a template's fault (it is one of the errors)."""
    try:
        sources = template_sources(workspace, template)
    except TemplateError as exc:
        return TemplateNeeds(errors=[str(exc)])
    if subject is not None:
        sources.append(("subject", subject, TEXT_NAMES))
    needed: dict[str, None] = {}
    undefined: dict[str, None] = {}
    errors: list[str] = []
    for what, source, names in sources:
        try:
            tree = _ENV.parse(source)
            reads = unguarded_reads(source, DATA_NAME)
        except jinja2.TemplateSyntaxError as exc:
            errors.append(f"{what}: syntax error on line {exc.lineno}: {exc.message}")
            continue
        for unknown in sorted(meta.find_undeclared_variables(tree) - names - {DATA_NAME}):
            undefined[f"{what}: {unknown}"] = None
        needed.update(dict.fromkeys(reads))
    return TemplateNeeds(needed=list(needed), undefined=list(undefined), errors=errors)


def _read(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template: {exc}", template=name) from None
