"""How an email is put together: layouts, partials, a ``.txt`` text part, ``mj-style inline``
CSS and UTM parameters, each compiled once and personalised per contact."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import pytest

from campaigns.workspace import load_workspace
from contacts.hits import TRAP_URL
from contacts.models import Contact
from drip.settings import Settings
from emails import RenderedEmail, Renderer, TemplateError
from emails._text import LINK_END, LINK_START, html_to_text
from tests.emails.conftest import BASE, FRAGMENT

ANN = Contact(id=3, email="ann@example.com", fields={"first_name": "Ann"})
HREF = re.compile(r"""<a\b[^>]*?\bhref="([^"]*)\"""", re.IGNORECASE)

LAYOUT = """<mjml>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>BRAND HEADER {{ workspace.name }}</mj-text>
    </mj-column></mj-section>
<!-- drip:content -->
    <mj-section><mj-column><mj-text>
      {{ workspace.postal_address }} <a href="{{ unsubscribe_url }}">Leave</a>
    </mj-text></mj-column></mj-section>
  </mj-body>
</mjml>
"""


def _render(
    workspace: Path,
    settings: Settings,
    template: str = "custom",
    contact: Contact = ANN,
    **overrides: Any,
) -> RenderedEmail:
    renderer = Renderer(load_workspace(workspace), settings)
    kwargs: dict[str, Any] = {
        "template": template,
        "subject": "Hi {{ contact.first_name }}",
        "preheader": "",
        "contact": contact,
        "message_id": "msg-1",
        "campaign_id": "welcome",
        "step_id": "intro",
        "track": True,
    }
    kwargs.update(overrides)
    return renderer.render(**kwargs)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    stamp = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))


def _fail(workspace: Path, settings: Settings, **overrides: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        _render(workspace, settings, **overrides)
    return info.value


# --- partials ------------------------------------------------------------------------------------


def test_a_partial_is_spliced_in_and_personalised(own_workspace: Path, settings: Settings) -> None:
    emails = own_workspace / "emails"
    _write(emails / "partials" / "signoff.mjml", FRAGMENT.format("Bye {{ contact.first_name }}"))
    _write(emails / "custom.mjml", FRAGMENT.format("Hello") + '{% include "signoff" %}\n')
    out = _render(own_workspace, settings)
    assert "Hello" in out.html and "Bye Ann" in out.html
    assert "Bye Ann" in out.text


def test_partials_nest_and_may_be_named_by_path(own_workspace: Path, settings: Settings) -> None:
    emails = own_workspace / "emails"
    _write(emails / "partials" / "inner.mjml", "<mj-text>INNER</mj-text>")
    _write(
        emails / "partials" / "outer.mjml",
        "<mj-section><mj-column>{% include 'partials/inner.mjml' %}</mj-column></mj-section>",
    )
    _write(emails / "custom.mjml", '{% include "outer" %}')
    assert "INNER" in _render(own_workspace, settings).html


def test_an_unknown_partial_is_named_with_the_known_ones(
    own_workspace: Path, settings: Settings
) -> None:
    emails = own_workspace / "emails"
    _write(emails / "partials" / "signoff.mjml", FRAGMENT.format("x"))
    _write(emails / "custom.mjml", FRAGMENT.format("a") + "\n{% include 'signof' %}")
    err = _fail(own_workspace, settings)
    assert "'signof' is not a partial" in str(err) and "signoff" in str(err)
    assert err.template == "custom" and err.lineno == 3  # FRAGMENT is one line and a newline


def test_a_partial_that_includes_itself_is_refused(own_workspace: Path, settings: Settings) -> None:
    emails = own_workspace / "emails"
    _write(emails / "partials" / "loop.mjml", "{% include 'loop' %}")
    _write(emails / "custom.mjml", "{% include 'loop' %}")
    assert "include themselves" in str(_fail(own_workspace, settings))


def test_editing_a_partial_takes_effect_without_a_restart(
    own_workspace: Path, settings: Settings
) -> None:
    emails = own_workspace / "emails"
    _write(emails / "partials" / "p.mjml", FRAGMENT.format("VERSION ONE"))
    _write(emails / "custom.mjml", "{% include 'p' %}")
    renderer = Renderer(load_workspace(own_workspace), settings)

    def body() -> str:
        return renderer.render(
            template="custom",
            subject="s",
            preheader="",
            contact=ANN,
            message_id="m",
            campaign_id="c",
            step_id="s",
            track=False,
        ).html

    assert "VERSION ONE" in body()
    _write(emails / "partials" / "p.mjml", FRAGMENT.format("VERSION TWO"))
    assert "VERSION TWO" in body() and "VERSION ONE" not in body()


# --- layouts -------------------------------------------------------------------------------------


def test_a_template_chooses_its_layout(own_workspace: Path, settings: Settings) -> None:
    emails = own_workspace / "emails"
    _write(emails / "layouts" / "brand.mjml", LAYOUT)
    _write(emails / "custom.mjml", "{# layout: brand #}\n" + FRAGMENT.format("Body text"))
    out = _render(own_workspace, settings)
    assert "BRAND HEADER Acme Outdoor" in out.html and "Body text" in out.html
    assert "Acme Outdoor Ltd, 1 Harbour Street" in out.html
    assert out.unsubscribe_url in HREF.findall(out.html)
    assert "BRAND HEADER" in out.text


def test_the_workspace_default_layout_applies_to_every_template(
    own_workspace: Path, settings: Settings
) -> None:
    _write(own_workspace / "emails" / "layouts" / "brand.mjml", LAYOUT)
    config = own_workspace / "workspace.yaml"
    config.write_text(config.read_text() + "layout: brand\n", encoding="utf-8")
    out = _render(own_workspace, settings, template="welcome")
    assert "BRAND HEADER" in out.html and "Welcome to Acme Outdoor" in out.html


@pytest.mark.parametrize(
    ("layout", "complaint"),
    [
        (LAYOUT.replace("{{ workspace.postal_address }}", ""), "the postal address"),
        (LAYOUT.replace('href="{{ unsubscribe_url }}"', 'href="#"'), "the unsubscribe link"),
        (LAYOUT.replace("<!-- drip:content -->", ""), "exactly once"),
    ],
)
def test_a_layout_without_the_compliance_footer_is_refused(
    own_workspace: Path, settings: Settings, layout: str, complaint: str
) -> None:
    emails = own_workspace / "emails"
    _write(emails / "layouts" / "brand.mjml", layout)
    _write(emails / "custom.mjml", "{# layout: brand #}\n" + FRAGMENT.format("x"))
    err = _fail(own_workspace, settings)
    assert complaint in str(err) and err.template == "layouts/brand.mjml"


def test_an_unknown_layout_is_named(own_workspace: Path, settings: Settings) -> None:
    _write(own_workspace / "emails" / "custom.mjml", "{# layout: ../x #}\n" + FRAGMENT.format("x"))
    assert "unknown layout '../x'" in str(_fail(own_workspace, settings))


# --- the text part -------------------------------------------------------------------------------


def test_a_txt_sibling_is_the_text_part_with_tracked_links(
    own_workspace: Path, settings: Settings
) -> None:
    emails = own_workspace / "emails"
    _write(emails / "custom.mjml", FRAGMENT.format('<a href="https://acme.example/a">A</a>'))
    _write(
        emails / "custom.txt",
        "Hi {{ contact.first_name }},\n\nread https://acme.example/a.\n"
        "Elsewhere: https://other.example/b\nBye: {{ unsubscribe_url }}\n",
    )
    out = _render(own_workspace, settings)
    (token, _, url) = out.links[0]
    assert url == "https://acme.example/a"
    assert out.text.startswith("Hi Ann,\n\nread ")
    assert f"read {BASE}/t/c/{token}.\n" in out.text  # tracked, sentence dot kept outside
    assert "https://other.example/b" in out.text  # not in the HTML: no token, left as written
    assert out.unsubscribe_url in out.text


def test_a_contact_value_cannot_forge_a_link_mark(own_workspace: Path, settings: Settings) -> None:
    _write(own_workspace / "emails" / "custom.mjml", FRAGMENT.format("Hi {{ contact.first_name }}"))
    sneaky = Contact(id=4, email="e@example.com", fields={"first_name": f"{LINK_START}x{LINK_END}"})
    out = _render(own_workspace, settings, contact=sneaky)
    assert LINK_START not in out.text and LINK_END not in out.text
    assert "Hi x" in out.text


@pytest.mark.parametrize("track", [True, False])
def test_the_compiled_text_part_matches_deriving_it_per_email(
    workspace: Any, settings: Settings, track: bool
) -> None:
    """The text template compiled from the HTML gives what converting each rendered email
    would: for every example template, tracked or not."""
    renderer = Renderer(workspace, settings)
    contact = Contact(
        id=9,
        email="zoe@example.com",
        fields={"first_name": "Zoë & <Co>", "interest": "hiking", "company": "Acme"},
    )
    for name in workspace.templates:
        out = renderer.render(
            template=name,
            subject="s",
            preheader="p",
            contact=contact,
            message_id="msg-9",
            campaign_id="c",
            step_id="s",
            track=track,
            # the transactional receipt reads the API call's data; the others ignore it
            data={"order_id": "A-1001", "total": "42.50"},
        )
        page = out.html
        if track:
            page = re.sub(r'<img src="[^"]*/t/o/[^"]*"[^>]*/>', "", page)
        assert out.text == html_to_text(page), name


# --- inline CSS ----------------------------------------------------------------------------------


def test_mj_style_inline_is_inlined(own_workspace: Path, settings: Settings) -> None:
    emails = own_workspace / "emails"
    _write(emails / "layouts" / "styled.mjml", LAYOUT.replace(
        "<mj-body>",
        '<mj-head><mj-style inline="inline">.promo { color: #ab1234; }</mj-style>'
        "<mj-style>.kept { color: #00ff00; }</mj-style></mj-head>\n  <mj-body>",
    ))  # fmt: skip
    _write(
        emails / "custom.mjml",
        "{# layout: styled #}\n"
        + FRAGMENT.format('<span class="promo">Sale {{ contact.first_name }}</span>'),
    )
    out = _render(own_workspace, settings)
    assert re.search(r'<span\sclass="promo" style="color: ?#ab1234;?">Sale Ann</span>', out.html)
    assert ".kept" in out.html  # a normal mj-style stays in the head
    assert ".promo {" not in out.html  # the inline one is not left in a <style>


# --- UTM -----------------------------------------------------------------------------------------

UTM = {"source": "newsletter", "medium": "email", "campaign": "spring", "content": "intro"}


def _links(out: RenderedEmail) -> list[str]:
    """The author's tracked links: without the layout's hidden trap link (never tagged)."""
    urls = [url for _, _, url in out.links]
    assert urls[-1] == TRAP_URL
    return urls[:-1]


def test_utm_parameters_are_appended_to_web_links(own_workspace: Path, settings: Settings) -> None:
    _write(
        own_workspace / "emails" / "custom.mjml",
        FRAGMENT.format(
            '<a href="https://acme.example/a">a</a> '
            '<a href="https://acme.example/b?x=1&amp;utm_source=own#top">b</a> '
            '<a href="https://acme.example/c?id={{ contact.first_name }}">c</a> '
            '<a href="mailto:hi@acme.example">m</a> <a href="tel:+44123">t</a>'
        ),
    )
    out = _render(own_workspace, settings, utm=UTM)
    tail = "utm_medium=email&utm_campaign=spring&utm_content=intro"
    assert _links(out) == [
        f"https://acme.example/a?utm_source=newsletter&{tail}",
        f"https://acme.example/b?x=1&utm_source=own&{tail}#top",  # the author's source wins
        f"https://acme.example/c?id=Ann&utm_source=newsletter&{tail}",
    ]
    hrefs = [html.unescape(h) for h in HREF.findall(out.html)]
    assert "mailto:hi@acme.example" in hrefs and "tel:+44123" in hrefs
    assert not any("utm_" in h for h in hrefs if h.startswith(BASE + "/u/"))


def test_utm_only_on_the_listed_domains_and_untracked_too(
    own_workspace: Path, settings: Settings
) -> None:
    _write(
        own_workspace / "emails" / "custom.mjml",
        FRAGMENT.format(
            '<a href="https://shop.acme.example/a">a</a> <a href="https://youtube.example/v">v</a>'
        ),
    )
    out = _render(own_workspace, settings, utm={**UTM, "domains": ["acme.example"]}, track=False)
    hrefs = [html.unescape(h) for h in HREF.findall(out.html)]
    assert hrefs[0].startswith("https://shop.acme.example/a?utm_source=newsletter&")
    assert hrefs[1] == "https://youtube.example/v"
    assert f"({hrefs[0]})" in out.text


def test_no_utm_unless_the_campaign_asks(own_workspace: Path, settings: Settings) -> None:
    _write(
        own_workspace / "emails" / "custom.mjml",
        FRAGMENT.format('<a href="https://a.example/">a</a>'),
    )
    assert _links(_render(own_workspace, settings)) == ["https://a.example/"]


def test_the_example_campaign_asks_for_utm(workspace: Any) -> None:
    utm = workspace.plans["newsletter-onboarding"].utm
    assert utm["source"] == "newsletter" and utm["domains"] == ["acme.example"]
    assert workspace.plans["welcome"].utm == {}


# --- bounds --------------------------------------------------------------------------------------


def test_loops_nested_three_deep_are_refused(own_workspace: Path, settings: Settings) -> None:
    loops = (
        "{% for a in 'ab' %}{% for b in 'ab' %}{% for c in 'ab' %}x"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    _write(own_workspace / "emails" / "custom.mjml", FRAGMENT.format(loops))
    assert "loops nest more than 2 deep" in str(_fail(own_workspace, settings))
