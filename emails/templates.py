"""Templates: MJML body fragments in a layout, personalised with sandboxed Jinja.

Authors write only the middle of the email; a layout around it adds the preheader, a header and a
footer with the postal address and the unsubscribe link. The built-in layout (``layout.mjml``)
can be replaced by the workspace's own (``emails/layouts/NAME.mjml``, chosen in workspace.yaml
with ``layout: NAME`` or per template with a first line ``{# layout: NAME #}``), but every layout
must show the postal address and the unsubscribe link: compliance is the engine's job, so a
template cannot forget the footer, and a fragment that tries to be a whole document is refused.
Shared pieces live in ``emails/partials/NAME.mjml`` and are pulled in with
``{% include "NAME" %}``, resolved when the template compiles, never at render time.

Everything that does not depend on the contact compiles once per distinct content (layout,
partials, fragment and the campaign's UTM parameters): partials are spliced in, MJML turns the
result into HTML (Jinja tags pass through it untouched), ``mj-style inline`` CSS is inlined with
css-inline (mjml-python leaves that to us), UTM parameters are appended to the links, and Jinja
compiles the HTML. The plain-text part compiles at the same time, from a ``.txt`` file beside the
template or else derived from that HTML, so per contact there are only two Jinja renders.

Jinja is sandboxed because templates are written by marketers, not developers, and a template
must never reach settings, environment variables or files (SSTI): no globals, no loader (an
include names a partial, resolved by us), underscore attributes blocked by the sandbox, and
undefined names are errors rather than blanks, except through ``default()``, so
``{{ contact.first_name | default('friend') }}`` works. Size, output and render time are bounded
so one bad template cannot exhaust the worker.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import css_inline
import jinja2
import mjml
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from emails import _deadline as deadline
from emails._budget import BUDGET
from emails._deadline import RenderOvertime
from emails._html import (
    Utm,
    append_utm,
    fold_tags,
    splice_query,
    take_inline_styles,
    utm_query,
)
from emails._sandbox import OverBudget, RenderBudget, Sandbox, printable
from emails._text import LINK_END, LINK_START, html_to_text_template, text_to_template
from emails.errors import TemplateBudgetError, TemplateError

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_SECONDS",
    "MAX_TEMPLATE_BYTES",
    "CompiledEmail",
    "Record",
    "RenderBudget",
    "TemplateEngine",
    "compile_email",
    "compile_fragment",
]

#: Largest template source accepted; real emails are a few KB, and MJML's cost grows with size.
MAX_TEMPLATE_BYTES = 200_000
#: Default budgets of one render (settings ``DRIP_TEMPLATE_OUTPUT_CHARS`` and
#: ``DRIP_TEMPLATE_RENDER_SECONDS``); Gmail clips messages over ~100 KB anyway.
MAX_OUTPUT_CHARS = RenderBudget().output_chars
MAX_RENDER_SECONDS = RenderBudget().seconds
#: Loops inside loops multiply: two levels over contact data are plenty for an email.
_MAX_LOOP_DEPTH = 2

#: Where a layout puts the template's content.
PLACEHOLDER = "<!-- drip:content -->"
_LAYOUT = files("emails").joinpath("layout.mjml").read_text(encoding="utf-8")
_DOCUMENT_TAGS = ("<mjml", "<mj-body", "<mj-head")
_FORBIDDEN_NODES = (nodes.Import, nodes.FromImport, nodes.Extends)
#: A layout must carry both, so no email goes out without them (CAN-SPAM, GDPR, RFC 8058).
_LAYOUT_MUST = (
    (re.compile(r"{{-?\s*workspace\.postal_address\b"), "the postal address"),
    (re.compile(r"{{-?\s*unsubscribe_url\s*-?}}"), "the unsubscribe link"),
)
_INCLUDE = re.compile(r"""{%-?\s*include\s+(["'])(?P<name>[^"'{}%]*)\1\s*-?%}""")
_PARTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_LAYOUT_LINE = re.compile(r"\A\s*{#\s*layout:\s*(?P<name>[^\s#]*)\s*#}")
_INCLUDE_DEPTH = 5


class Record:
    """Read-only values seen as attributes in templates (``contact.first_name``), and nothing else.

    A plain dict would shadow fields named ``items``, ``keys`` or ``get`` with its methods; this
    class has no public attributes, so every name is looked up in the values, and a missing one
    is undefined (so ``default()`` applies).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = {k: v for k, v in values.items() if v is not None}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:
        return f"Record({sorted(self._values)})"


class _Undefined(jinja2.StrictUndefined):
    """Undefined names fail when printed or iterated, as StrictUndefined does, but test false in
    ``{% if contact.company %}`` so optional fields need no ``is defined`` ceremony. An attribute
    the sandbox refused (``__class__``) fails even there."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]  # StrictUndefined types it as failing
        if self._undefined_exception is SecurityError:
            self._fail_with_undefined_error()
        return False


_HTML = Sandbox(autoescape=True, undefined=_Undefined)
_TEXT = Sandbox(autoescape=False, undefined=_Undefined)
# In the text part, LINK_START/LINK_END mark where a link's URL stands so the renderer can put
# the tracked URL there; a contact's own data must not be able to forge such a mark.


#: Printed values that are sized first (a list of one long string many times over).
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _unmarked(value: Any) -> Any:
    if isinstance(value, str):
        if LINK_START in value or LINK_END in value:
            return value.replace(LINK_START, "").replace(LINK_END, "")
    elif isinstance(value, _CONTAINERS):
        printable(value)
    return value


_TEXT.finalize = _unmarked


def _ascii_html(value: Any) -> Any:
    """A non-ASCII value (a contact's name) as escaped HTML with character references: the
    same text on screen, and an email whose HTML stays 7-bit ASCII needs no transfer encoding
    (see ``emails.message``)."""
    if isinstance(value, str):
        if not value.isascii():
            # escaped first, so the Markup wraps only escaped text and character references
            refs = escape(value).encode("ascii", "xmlcharrefreplace").decode("ascii")
            return Markup(refs)  # noqa: S704
    elif isinstance(value, _CONTAINERS):
        printable(value)
    return value


_HTML.finalize = _ascii_html

_compiled: OrderedDict[str, Any] = OrderedDict()
_compiled_lock = threading.Lock()
_COMPILED_MAX = 256


def _check_source(source: str, name: str, env: SandboxedEnvironment) -> None:
    """Refuse oversize sources, Jinja syntax errors and imports, with the author's line numbers
    (after MJML the lines no longer match the file)."""
    if len(source.encode()) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template larger than {MAX_TEMPLATE_BYTES} bytes", template=name)
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"syntax error: {exc.message}", template=name, lineno=exc.lineno
        ) from None
    for node in tree.find_all(_FORBIDDEN_NODES):
        raise TemplateError(
            "import and extends are not allowed in templates (a layout is chosen with "
            '{# layout: NAME #}, shared pieces are included with {% include "NAME" %})',
            template=name,
            lineno=node.lineno,
        )
    if _loop_depth(tree) > _MAX_LOOP_DEPTH:
        raise TemplateError(
            f"loops nest more than {_MAX_LOOP_DEPTH} deep", template=name, lineno=None
        )
    for node in tree.find_all(nodes.Include):
        target = node.template
        if not (isinstance(target, nodes.Const) and isinstance(target.value, str)):
            raise TemplateError(
                'include takes the name of a partial in quotes: {% include "footer" %}',
                template=name,
                lineno=node.lineno,
            )
        if node.ignore_missing or not node.with_context:
            raise TemplateError(
                'write a plain {% include "NAME" %}; its options are not supported',
                template=name,
                lineno=node.lineno,
            )


def _loop_depth(node: nodes.Node) -> int:
    inner = max((_loop_depth(child) for child in node.iter_child_nodes()), default=0)
    return inner + 1 if isinstance(node, nodes.For) else inner


@dataclass(frozen=True)
class CompiledEmail:
    """A template compiled for rendering: the HTML, and the plain text (None when it could not
    be derived ahead of time: the renderer then derives it from each rendered HTML)."""

    html: jinja2.Template
    text: jinja2.Template | None


def _splice(
    source: str,
    name: str,
    partials: Mapping[str, str],
    used: dict[str, str],
    depth: int = 0,
    chain: tuple[str, ...] = (),
) -> str:
    """``source`` with every ``{% include "NAME" %}`` replaced by that partial's source."""
    _check_source(source, name, _HTML)

    def replace(match: re.Match[str]) -> str:
        wanted = match.group("name")
        key = wanted.removeprefix("partials/").removesuffix(".mjml")
        lineno = source.count("\n", 0, match.start()) + 1
        if not _PARTIAL_NAME.fullmatch(key) or key not in partials:
            known = ", ".join(sorted(partials)) or "none"
            raise TemplateError(
                f"include: {wanted!r} is not a partial (the files in emails/partials/: {known})",
                template=name,
                lineno=lineno,
            )
        if key in chain or depth >= _INCLUDE_DEPTH:
            raise TemplateError(
                f"include: partials nest too deep or include themselves ({' > '.join(chain)})",
                template=name,
                lineno=lineno,
            )
        used[key] = partials[key]
        return _splice(
            partials[key], f"partials/{key}.mjml", partials, used, depth + 1, (*chain, key)
        )

    return _INCLUDE.sub(replace, source)


def _remember(key: str, value: Any) -> None:
    with _compiled_lock:
        _compiled[key] = value
        while len(_compiled) > _COMPILED_MAX:
            _compiled.popitem(last=False)


def compile_email(
    source: str,
    name: str = "",
    *,
    layout: str | None = None,
    layout_name: str = "layout.mjml",
    partials: Mapping[str, str] | None = None,
    text_source: str | None = None,
    utm: Utm | None = None,
) -> CompiledEmail:
    """Compile a template (its layout, partials and text part) once per distinct content."""
    partials = partials or {}
    layout_source = _LAYOUT if layout is None else layout
    key = hashlib.sha256(
        repr((source, layout_source, sorted(partials.items()), text_source, utm)).encode()
    ).hexdigest()
    with _compiled_lock:
        cached = _compiled.get(key)
        if cached is not None:
            _compiled.move_to_end(key)
            return cached  # type: ignore[no-any-return]
    used: dict[str, str] = {}
    body = _splice(source, name, partials, used)
    lowered = body.lower()
    if any(tag in lowered for tag in _DOCUMENT_TAGS):
        raise TemplateError(
            "a template is a body fragment (mj-section or mj-wrapper elements); the layout "
            "adds <mjml>, <mj-head> and <mj-body> with the footer",
            template=name,
        )
    frame = _splice(layout_source, layout_name, partials, used)
    if frame.count(PLACEHOLDER) != 1:
        raise TemplateError(
            f"a layout must contain {PLACEHOLDER} exactly once, where the content goes",
            template=layout_name,
        )
    for pattern, what in _LAYOUT_MUST:
        if not pattern.search(frame):
            raise TemplateError(
                f"a layout must show {what} (its footer needs {{{{ workspace.postal_address }}}}"
                " and a link to {{ unsubscribe_url }})",
                template=layout_name,
            )
    document, inline_css = take_inline_styles(frame.replace(PLACEHOLDER, body))
    try:
        html = str(mjml.mjml2html(document))
    except Exception as exc:  # mjml-python raises ValueError, but any failure is the template's
        raise TemplateError(f"MJML error: {exc}", template=name) from None
    if inline_css.strip():
        try:
            html = css_inline.CSSInliner(
                inline_style_tags=False,
                keep_style_tags=True,
                load_remote_stylesheets=False,
                extra_css=inline_css,
            ).inline(html)
        except ValueError as exc:
            raise TemplateError(f"mj-style inline: {exc}", template=name) from None
    if utm is not None and utm.params():
        html = append_utm(html, utm)
    html = fold_tags(html)
    try:
        template = _HTML.from_string(html)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error after MJML: {exc.message}", template=name) from None
    compiled = CompiledEmail(html=template, text=_text_part(html, text_source, name, utm))
    _remember(key, compiled)
    return compiled


def _text_part(
    html: str, text_source: str | None, name: str, utm: Utm | None
) -> jinja2.Template | None:
    """The plain-text part's template: the author's ``.txt`` sibling, or derived from the HTML
    (links marked so tracked URLs can be put in per contact)."""
    if text_source is not None:
        text_name = name.removesuffix(".mjml") + ".txt"
        _check_source(text_source, text_name, _TEXT)
        if any(True for _ in _TEXT.parse(text_source).find_all(nodes.Include)):
            raise TemplateError(
                "include is for MJML partials, not the text part", template=text_name
            )
        if utm is not None and utm.params():
            with_utm = utm

            def tag(url: str) -> str:
                extra = utm_query(url, with_utm)
                return splice_query(url, extra, "&") if extra else url

            return _TEXT.from_string(text_to_template(text_source, tag))
        return _TEXT.from_string(text_to_template(text_source, None))
    try:
        return _TEXT.from_string(html_to_text_template(html))
    except jinja2.TemplateSyntaxError:
        # Jinja that only makes sense inside the HTML's markup (a tag spanning attributes, an
        # if opened in a hidden element): derive the text from each rendered email instead.
        return None


def compile_fragment(source: str, name: str = "") -> jinja2.Template:
    """The Jinja template of a whole email (built-in layout + fragment), compiled once per
    content."""
    return compile_email(source, name).html


_Stamp = tuple[int, int] | None


def _stamp(path: Path) -> _Stamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _read(path: Path, name: str) -> str:
    stamp = _stamp(path)
    if stamp is not None and stamp[1] > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"larger than {MAX_TEMPLATE_BYTES} bytes", template=name)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template: {exc}", template=name) from None


class TemplateEngine:
    """Finds a workspace's templates by name and renders them and subject lines.

    ``folder`` holds ``layouts/`` and ``partials/`` (by default the templates' own folder);
    ``layout`` names the workspace's default layout (None: the built-in one). A template is
    compiled again only when a file it was built from (itself, its ``.txt``, its layout, a
    partial) changes size or modification time, so editing under ``drip dev`` takes effect
    without a restart while a send costs a few ``stat`` calls.
    """

    def __init__(
        self,
        templates: Mapping[str, Path],
        *,
        folder: Path | None = None,
        layout: str | None = None,
        budget: RenderBudget | None = None,
    ) -> None:
        self._paths = dict(templates)
        self.budget = budget or RenderBudget()
        first = next(iter(self._paths.values()), None)
        self._folder = folder if folder is not None else (first.parent if first else None)
        self._layout = layout
        self._files: dict[tuple[str, Utm | None], tuple[list[tuple[Path, _Stamp]], CompiledEmail]]
        self._files = {}
        self._lock = threading.Lock()

    def email(self, name: str, utm: Utm | None = None) -> CompiledEmail:
        """The compiled template ``name`` (with ``utm`` on its links)."""
        path = self._paths.get(name)
        if path is None:
            raise TemplateError("unknown template", template=name)
        with self._lock:
            known = self._files.get((name, utm))
        if known is not None and all(_stamp(dep) == stamp for dep, stamp in known[0]):
            return known[1]
        deps, compiled = self._compile(name, path, utm)
        with self._lock:
            self._files[(name, utm)] = (deps, compiled)
        return compiled

    def body(self, name: str) -> jinja2.Template:
        return self.email(name).html

    def _compile(
        self, name: str, path: Path, utm: Utm | None
    ) -> tuple[list[tuple[Path, _Stamp]], CompiledEmail]:
        deps: list[tuple[Path, _Stamp]] = [(path, _stamp(path))]
        if deps[0][1] is None:
            raise TemplateError("cannot read template: no such file", template=name)
        source = _read(path, name)
        text_path = path.with_suffix(".txt")
        deps.append((text_path, _stamp(text_path)))
        text_source = _read(text_path, f"{name}.txt") if deps[-1][1] is not None else None
        partials: dict[str, str] = {}
        layout: str | None = None
        layout_name = "layout.mjml"
        chosen = _LAYOUT_LINE.match(source)
        layout_key = chosen.group("name") if chosen else self._layout
        if self._folder is not None:
            partial_dir = self._folder / "partials"
            deps.append((partial_dir, _stamp(partial_dir)))
            for file in sorted(partial_dir.glob("*.mjml")):
                deps.append((file, _stamp(file)))
                partials[file.stem] = _read(file, f"partials/{file.name}")
        if layout_key:
            layouts = self._folder / "layouts" if self._folder is not None else None
            layout_path = layouts / f"{layout_key}.mjml" if layouts is not None else None
            if (
                layout_path is None
                or not _PARTIAL_NAME.fullmatch(layout_key)
                or not layout_path.is_file()
            ):
                known = ", ".join(sorted(p.stem for p in layouts.glob("*.mjml"))) if layouts else ""
                raise TemplateError(
                    f"unknown layout {layout_key!r} (the files in emails/layouts/: "
                    f"{known or 'none'})",
                    template=name,
                )
            deps.append((layout_path, _stamp(layout_path)))
            layout_name = f"layouts/{layout_path.name}"
            layout = _read(layout_path, layout_name)
        compiled = compile_email(
            source,
            name,
            layout=layout,
            layout_name=layout_name,
            partials=partials,
            text_source=text_source,
            utm=utm,
        )
        return deps, compiled

    def render_body(self, name: str, context: Mapping[str, Any]) -> str:
        return render_bounded(self.body(name), context, name, self.budget, lines=False)

    def render_text(self, source: str, context: Mapping[str, Any], *, what: str) -> str:
        """Render a one-line text template (subject, preheader): Jinja without autoescape,
        because the MIME layer encodes it and HTML entities would show up literally."""
        if "{" not in source:  # nothing to personalise: no Jinja needed
            return source
        return render_bounded(_text_template(source, what), context, what, self.budget)


def _text_template(source: str, what: str) -> jinja2.Template:
    key = "text:" + source
    with _compiled_lock:
        cached = _compiled.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
    _check_source(source, what, _TEXT)
    if any(True for _ in _TEXT.parse(source).find_all(nodes.Include)):
        raise TemplateError("include is not allowed here", template=what)
    template = _TEXT.from_string(source)
    _remember(key, template)
    return template


def render_bounded(
    template: jinja2.Template,
    context: Mapping[str, Any],
    name: str,
    budget: RenderBudget | None = None,
    *,
    lines: bool = True,
) -> str:
    """Render, turning every failure into TemplateError and stopping runaway output or time.

    Output is counted between chunks; time is kept by the watchdog (``emails._deadline``), which
    interrupts the render where it is; operations that would build something over the budget
    are refused by the sandbox before they run (``emails._sandbox``). ``lines``: whether the
    template's lines are the author's (False for HTML that came out of MJML), so an error can
    name one.
    """
    budget = budget or RenderBudget()
    limit = budget.output_chars
    chunks: list[str] = []
    size = 0
    try:
        budget_set = BUDGET.set(budget)
        try:
            ticket = deadline.start(budget.seconds)
            try:
                stream: Iterator[str] = template.root_render_func(
                    template.new_context(dict(context))
                )
                for chunk in stream:
                    size += len(chunk)
                    chunks.append(chunk)
                    if size > limit:
                        raise TemplateBudgetError(
                            f"output larger than {limit} characters (DRIP_TEMPLATE_OUTPUT_CHARS)",
                            template=name,
                        )
            finally:
                overtime = deadline.stop(ticket)
        finally:
            BUDGET.reset(budget_set)
        if overtime:
            raise RenderOvertime
    except TemplateError:
        raise
    except RenderOvertime as exc:
        raise TemplateBudgetError(
            f"render took over {budget.seconds:g}s and was stopped (DRIP_TEMPLATE_RENDER_SECONDS)",
            template=name,
            lineno=_line(template, exc) if lines else None,
        ) from None
    except OverBudget as exc:
        raise TemplateBudgetError(
            f"over budget: {exc}", template=name, lineno=_line(template, exc) if lines else None
        ) from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed: {exc}", template=name) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"undefined: {exc}", template=name) from None
    except MemoryError:
        raise TemplateBudgetError("ran out of memory", template=name) from None
    except Exception as exc:  # a template's own runtime error (1/0, bad filter arg) is its bug
        raise TemplateError(f"{type(exc).__name__}: {exc}", template=name) from None
    return "".join(chunks)


def _line(template: jinja2.Template, exc: BaseException) -> int | None:
    """The template line an exception came from (the innermost frame of this template)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__jinja_template__") is template:
            found = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return found
