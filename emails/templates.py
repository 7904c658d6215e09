"""Templates: MJML body fragments in a layout we own, personalised with sandboxed Jinja.

Authors write only the middle of the email; the layout around it (``layout.mjml``) adds the
preheader, a header with the workspace name and a footer with the postal address and the
unsubscribe link. Compliance is the engine's job, so a template cannot forget the footer and a
fragment that tries to be a whole document is refused.

MJML and then Jinja compile once per distinct content (hash of layout + fragment), because the
result does not depend on the contact: Jinja tags pass through MJML untouched, and per contact only
the Jinja render runs. Measured in ``bench/render.py``: compiling costs ~1.8 ms per email (mostly
Jinja compiling MJML's output), the cached render ~0.03 ms.

Jinja is sandboxed because templates are written by marketers, not developers, and a template
must never reach settings, environment variables or files (SSTI): no globals, no loader (so no
``include``/``import``/``extends``, which are refused at compile time anyway), underscore
attributes blocked by the sandbox, and undefined names are errors rather than blanks, except
through ``default()``, so ``{{ contact.first_name | default('friend') }}`` works. Size and output
are bounded so one bad template cannot exhaust the worker.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import mjml
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from emails.errors import TemplateError

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_RENDER_SECONDS",
    "MAX_TEMPLATE_BYTES",
    "Record",
    "TemplateEngine",
    "compile_fragment",
]

#: Largest template source accepted; real emails are a few KB, and MJML's cost grows with size.
MAX_TEMPLATE_BYTES = 200_000
#: Largest rendered output; Gmail clips messages over ~100 KB anyway.
MAX_OUTPUT_CHARS = 2_000_000
#: Wall-clock budget of one render, checked between output chunks.
MAX_RENDER_SECONDS = 2.0
#: Largest string or list a template may build with ``*``.
_MAX_REPEAT = 100_000

_PLACEHOLDER = "<!-- drip:content -->"
_LAYOUT = files("emails").joinpath("layout.mjml").read_text(encoding="utf-8")
_DOCUMENT_TAGS = ("<mjml", "<mj-body", "<mj-head")
_FORBIDDEN_NODES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


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


class _Sandbox(SandboxedEnvironment):
    """The sandbox, without globals and with bounded ``*`` and ``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=_Undefined,
            loader=None,
            auto_reload=False,
            keep_trailing_newline=False,
        )
        # range, lipsum, cycler, joiner, namespace, dict: none is needed for personalisation,
        # and cycler/joiner are classic SSTI footholds.
        self.globals.clear()

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > _MAX_REPEAT
                ):
                    raise SecurityError("repetition too large")
        if (
            operator == "**"
            and isinstance(left, int | float)
            and isinstance(right, int | float)
            and abs(right) > 100
        ):
            raise SecurityError("exponent too large")
        return super().call_binop(context, operator, left, right)


_HTML = _Sandbox(autoescape=True)
_TEXT = _Sandbox(autoescape=False)

_compiled: OrderedDict[str, jinja2.Template] = OrderedDict()
_compiled_lock = threading.Lock()
_COMPILED_MAX = 256


def _check_source(source: str, name: str, env: SandboxedEnvironment) -> None:
    """Refuse oversize sources, Jinja syntax errors and file access, with the author's line
    numbers (after MJML the lines no longer match the file)."""
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
            "include, import and extends are not allowed in templates",
            template=name,
            lineno=node.lineno,
        )


def compile_fragment(source: str, name: str = "") -> jinja2.Template:
    """The Jinja template of a whole email (layout + fragment), compiled once per content."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    with _compiled_lock:
        cached = _compiled.get(digest)
        if cached is not None:
            _compiled.move_to_end(digest)
            return cached
    _check_source(source, name, _HTML)
    lowered = source.lower()
    if any(tag in lowered for tag in _DOCUMENT_TAGS):
        raise TemplateError(
            "a template is a body fragment (mj-section or mj-wrapper elements); the layout "
            "adds <mjml>, <mj-head> and <mj-body> with the footer",
            template=name,
        )
    try:
        html = mjml.mjml2html(_LAYOUT.replace(_PLACEHOLDER, source))
    except Exception as exc:  # mjml-python raises ValueError, but any failure is the template's
        raise TemplateError(f"MJML error: {exc}", template=name) from None
    try:
        template = _HTML.from_string(html)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error after MJML: {exc.message}", template=name) from None
    with _compiled_lock:
        _compiled[digest] = template
        while len(_compiled) > _COMPILED_MAX:
            _compiled.popitem(last=False)
    return template


class TemplateEngine:
    """Finds a workspace's templates by name and renders them and subject lines.

    A template file is read again only when its size or modification time changes, so editing a
    template under ``drip dev`` takes effect without a restart while a send costs one ``stat``.
    """

    def __init__(self, templates: Mapping[str, Path]) -> None:
        self._paths = dict(templates)
        self._files: dict[str, tuple[tuple[int, int], jinja2.Template]] = {}
        self._lock = threading.Lock()

    def body(self, name: str) -> jinja2.Template:
        path = self._paths.get(name)
        if path is None:
            raise TemplateError("unknown template", template=name)
        try:
            stat = path.stat()
        except OSError as exc:
            raise TemplateError(f"cannot read template: {exc.strerror}", template=name) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            known = self._files.get(name)
        if known is not None and known[0] == stamp:
            return known[1]
        if stat.st_size > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"template larger than {MAX_TEMPLATE_BYTES} bytes", template=name)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"cannot read template: {exc}", template=name) from None
        template = compile_fragment(source, name)
        with self._lock:
            self._files[name] = (stamp, template)
        return template

    def render_body(self, name: str, context: Mapping[str, Any]) -> str:
        return render_bounded(self.body(name), context, name)

    def render_text(self, source: str, context: Mapping[str, Any], *, what: str) -> str:
        """Render a one-line text template (subject, preheader): Jinja without autoescape,
        because the MIME layer encodes it and HTML entities would show up literally."""
        return render_bounded(_text_template(source, what), context, what)


def _text_template(source: str, what: str) -> jinja2.Template:
    key = "text:" + source
    with _compiled_lock:
        cached = _compiled.get(key)
        if cached is not None:
            return cached
    _check_source(source, what, _TEXT)
    template = _TEXT.from_string(source)
    with _compiled_lock:
        _compiled[key] = template
        while len(_compiled) > _COMPILED_MAX:
            _compiled.popitem(last=False)
    return template


def render_bounded(template: jinja2.Template, context: Mapping[str, Any], name: str) -> str:
    """Render, turning every failure into TemplateError and stopping runaway output or time."""
    deadline = time.monotonic() + MAX_RENDER_SECONDS
    chunks: list[str] = []
    size = 0
    try:
        stream: Iterator[str] = template.generate(context)
        for chunk in stream:
            size += len(chunk)
            chunks.append(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(
                    f"output larger than {MAX_OUTPUT_CHARS} characters", template=name
                )
            if time.monotonic() > deadline:
                raise TemplateError(f"render took over {MAX_RENDER_SECONDS}s", template=name)
    except TemplateError:
        raise
    except SecurityError as exc:
        raise TemplateError(f"not allowed: {exc}", template=name) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"undefined: {exc}", template=name) from None
    except Exception as exc:  # a template's own runtime error (1/0, bad filter arg) is its bug
        raise TemplateError(f"{type(exc).__name__}: {exc}", template=name) from None
    return "".join(chunks)
