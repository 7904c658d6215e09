"""Templates are written by marketers: whatever they write, the result is an email or a
TemplateError saying what is wrong, never another exception, never a way out of the sandbox."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import emails.templates
from contacts.models import Contact
from emails import RenderedEmail, TemplateEngine, TemplateError, compile_fragment
from emails.templates import MAX_OUTPUT_CHARS, MAX_TEMPLATE_BYTES
from tests.emails.conftest import FRAGMENT

RenderSource = Callable[..., RenderedEmail]

ESCAPES = {
    "class": "{{ ''.__class__ }}",
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "attr filter": "{{ ''|attr('__class__') }}",
    "format": "{{ '{0.__class__}'.format(contact) }}",
    "format_map": "{{ '{x.__class__}'.format_map({'x': 1}) }}",
    "record internals": "{{ contact._values }}",
    "record class by item": "{{ contact['__class__'] }}",
    "dunder in if": "{% if ''.__class__ %}yes{% endif %}",
    "globals": "{{ self.__init__.__globals__ }}",
    "func globals": "{{ (contact.email.upper).__self__ }}",
}
UNDEFINED = {
    "name": "{{ undefined_name }}",
    "field": "{{ contact.no_such_field }}",
    "range": "{{ range(3) | list }}",
    "lipsum": "{{ lipsum() }}",
    "cycler": "{{ cycler(1, 2).next() }}",
    "joiner": "{{ joiner() }}",
    "namespace": "{{ namespace(a=1) }}",
    "dict": "{{ dict(a=1) }}",
    "config": "{{ config }}",
    "settings": "{{ settings.secret_key }}",
    "loop": "{% for x in nothing %}{{ x }}{% endfor %}",
}
FILE_ACCESS = {
    "include": "{% include 'x' %}",
    "import": "{% import 'x' as m %}",
    "from import": "{% from 'x' import y %}",
    "extends": "{% extends 'x' %}",
    "include in subject position": "ok {% include '/etc/passwd' %}",
    "include a variable": "{% include contact.email %}",
    "include a path": "{% include '../../etc/passwd' %}",
}
#: The issue's own list of SSTI and leak attempts: each fails with our error, showing nothing.
ISSUE_ATTEMPTS = {
    "mro": "{{ ''.__class__.__mro__ }}",
    "config": "{{ config }}",
    "cycler globals": "{{ cycler.__init__.__globals__ }}",
    "passwd": "{% include '/etc/passwd' %}",
}
BOMBS = {
    "string repeat": "{{ 'a' * 10000000 }}",
    "repeat reversed": "{{ 10000000 * 'a' }}",
    "nested repeat": "{{ 'a' * 1000 * 1000 }}",
    "list repeat": "{{ [1, 2] * 10000000 }}",
    "power": "{{ 9 ** 9999999 }}",
}


def _render(render_source: RenderSource, expr: str) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        render_source(FRAGMENT.format(expr))
    return info.value


@pytest.mark.parametrize("expr", ESCAPES.values(), ids=ESCAPES.keys())
def test_sandbox_escapes_are_refused(render_source: RenderSource, expr: str) -> None:
    err = _render(render_source, expr)
    assert err.template == "custom"
    assert "unsafe" in str(err) or "not allowed" in str(err), str(err)


@pytest.mark.parametrize("expr", UNDEFINED.values(), ids=UNDEFINED.keys())
def test_undefined_names_are_errors(render_source: RenderSource, expr: str) -> None:
    err = _render(render_source, expr)
    assert "undefined" in str(err), str(err)


@pytest.mark.parametrize("expr", FILE_ACCESS.values(), ids=FILE_ACCESS.keys())
def test_no_file_access(render_source: RenderSource, expr: str) -> None:
    err = _render(render_source, expr)
    assert (
        "import and extends are not allowed" in str(err)
        or "is not a partial" in str(err)
        or "include takes the name of a partial" in str(err)
    ), str(err)
    assert err.lineno == 1


@pytest.mark.parametrize("expr", ISSUE_ATTEMPTS.values(), ids=ISSUE_ATTEMPTS.keys())
def test_ssti_and_leak_attempts_fail_with_our_error(render_source: RenderSource, expr: str) -> None:
    err = _render(render_source, expr)
    text = str(err)
    assert err.template == "custom"
    for leak in ("root:", "<class", "secret", "__builtins__", "<built-in", "SECRET"):
        assert leak not in text, text


@pytest.mark.parametrize("expr", BOMBS.values(), ids=BOMBS.keys())
def test_resource_bombs_are_refused(render_source: RenderSource, expr: str) -> None:
    err = _render(render_source, expr)
    assert "too large" in str(err), str(err)


def test_small_arithmetic_still_works(render_source: RenderSource) -> None:
    out = render_source(FRAGMENT.format("[{{ '-' * 3 }}{{ 2 ** 10 }}{{ [0] * 2 }}]"))
    assert "[---1024[0, 0]]" in out.html


def test_runaway_output_is_stopped(render_source: RenderSource) -> None:
    err = _render(render_source, "{% for i in 'a' * 100000 %}{{ 'b' * 100000 }}{% endfor %}")
    assert f"output larger than {MAX_OUTPUT_CHARS} characters" in str(err)


def test_runtime_errors_in_templates(render_source: RenderSource) -> None:
    err = _render(render_source, "{{ 1 / 0 }}")
    assert "ZeroDivisionError" in str(err)
    err = _render(render_source, "{{ contact.first_name | truncate('x') }}")
    assert err.template == "custom"


def test_syntax_error_reports_the_authors_line(render_source: RenderSource) -> None:
    source = (
        "<mj-section>\n"
        "  <mj-column>\n"
        "    <mj-text>\n"
        "      Hello {{ contact.first_name | default('friend') }}\n"
        "      {% if contact.city %}from {{ contact.city }\n"
        "    </mj-text>\n"
        "  </mj-column>\n"
        "</mj-section>\n"
    )
    with pytest.raises(TemplateError) as info:
        render_source(source)
    assert info.value.lineno == 5
    assert str(info.value).startswith("custom:5: syntax error")


def test_unclosed_block_is_a_syntax_error(render_source: RenderSource) -> None:
    with pytest.raises(TemplateError, match="syntax error") as info:
        render_source(FRAGMENT.format("{% if contact.city %}x"))
    assert info.value.lineno is not None


@pytest.mark.parametrize(
    "source",
    [
        "<mjml><mj-body><mj-section></mj-section></mj-body></mjml>",
        "<MJML>\n<mj-body></mj-body>\n</MJML>",
        "<mj-head><mj-title>x</mj-title></mj-head>",
        "<mj-body><mj-section></mj-section></mj-body>",
    ],
)
def test_whole_documents_are_refused(render_source: RenderSource, source: str) -> None:
    with pytest.raises(TemplateError, match="body fragment"):
        render_source(source)


@pytest.mark.parametrize(
    "source",
    [
        "<mj-section><mj-column><mj-text>unclosed</mj-text></mj-column>",
        "<mj-section><mj-column><mj-text>never closed</mj-column></mj-section>",
        "<mj-section <<<",
    ],
)
def test_invalid_mjml_is_refused(render_source: RenderSource, source: str) -> None:
    with pytest.raises(TemplateError, match="MJML error") as info:
        render_source(source)
    assert info.value.template == "custom"


def test_oversize_template_is_refused(render_source: RenderSource) -> None:
    source = FRAGMENT.format("x" * MAX_TEMPLATE_BYTES)
    with pytest.raises(TemplateError, match=f"larger than {MAX_TEMPLATE_BYTES} bytes"):
        render_source(source)


def test_compile_fragment_directly() -> None:
    with pytest.raises(TemplateError, match="larger than"):
        compile_fragment("é" * (MAX_TEMPLATE_BYTES // 2 + 1), "big")  # bytes, not characters
    with pytest.raises(TemplateError, match="include"):
        compile_fragment("{% include 'x' %}", "inc")
    with pytest.raises(TemplateError, match="body fragment"):
        compile_fragment("<mjml></mjml>", "doc")
    template = compile_fragment(FRAGMENT.format("hi {{ contact.first_name }}"), "ok")
    assert template is compile_fragment(FRAGMENT.format("hi {{ contact.first_name }}"), "ok")


@pytest.mark.parametrize(
    ("field", "source"),
    [
        ("subject", "{{ ''.__class__ }}"),
        ("subject", "{{ undefined_name }}"),
        ("subject", "{{ 'a' * 10000000 }}"),
        ("subject", "Hi {% include 'x' %}"),
        ("subject", "Hi {{ contact.first_name "),
        ("preheader", "{{ cycler }}"),
        ("preheader", "{% for %}"),
    ],
)
def test_subject_and_preheader_are_sandboxed(
    render_source: RenderSource, field: str, source: str
) -> None:
    with pytest.raises(TemplateError) as info:
        render_source(FRAGMENT.format("fine"), **{field: source})
    assert f"custom: {field}" in str(info.value)


def test_text_templates_directly() -> None:
    engine = TemplateEngine({})
    contact = emails.templates.Record({"first_name": "Ann"})
    assert engine.render_text("Hi {{ c.first_name }} & co", {"c": contact}, what="s") == (
        "Hi Ann & co"
    )
    with pytest.raises(TemplateError, match="not allowed"):
        engine.render_text("{{ c.__class__ }}", {"c": contact}, what="s")


def test_template_error_message_carries_no_contact_data(render_source: RenderSource) -> None:
    who = Contact(id=1, email="private@example.com", fields={"first_name": "Private Name"})
    with pytest.raises(TemplateError) as info:
        render_source(FRAGMENT.format("{{ contact.first_name }} {{ oops }}"), who)
    assert "Private Name" not in str(info.value)
    assert "private@example.com" not in str(info.value)
