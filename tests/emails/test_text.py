"""The plain-text part: the same words as the HTML, links as ``text (url)``, no markup junk."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from contacts.hits import TRAP_URL
from contacts.models import Contact
from emails import RenderedEmail
from emails._text import html_to_text
from tests.emails.conftest import BASE, RenderFn


@pytest.mark.parametrize("template", ["welcome", "tips", "welcome-reminder"])
def test_text_part_has_the_words_not_the_markup(
    render: RenderFn, ann: Contact, template: str
) -> None:
    out = render(
        template,
        ann,
        subject="TITLE ONLY {{ contact.first_name }}",
        preheader="SECRET PREVIEW {{ contact.first_name }}",
    )
    text = out.text
    assert text.startswith("Acme Outdoor\n")
    assert text.endswith("\n") and not text.endswith("\n\n")
    for junk in ["<", "{", "}", "mso", "@media", "font-family", "&amp;", "&nbsp;", "\r"]:
        assert junk not in text, junk
    assert "SECRET PREVIEW" not in text  # the hidden preheader
    assert "TITLE ONLY" not in text  # <title> lives in <head>
    assert "\n\n\n" not in text
    assert all(line == line.strip() for line in text.splitlines())


def test_welcome_text_reads_like_the_email(render: RenderFn, ann: Contact) -> None:
    out = render("welcome", ann)
    lines = out.text.splitlines()
    assert "Welcome to Acme Outdoor, Ann!" in lines
    (token0, _, _), (token1, _, _), (token2, _, _), (_, _, trap) = out.links
    assert trap == TRAP_URL  # the layout's hidden trap link, never in the text
    assert "trap.drip" not in out.text
    assert f"Find a route near you ({BASE}/t/c/{token0})" in lines
    assert f"Our shop ({BASE}/t/c/{token1}) lists everything" in out.text
    assert f"first-hike guide ({BASE}/t/c/{token2})" in out.text
    # a mailto link whose text is the address is written once, without "mailto:"
    assert "write to support@acme.example. A real person" in out.text
    assert "mailto:" not in out.text
    # <br /> is a line break
    assert "See you on the trail,\nThe Acme Outdoor team" in out.text
    # HTML source line breaks inside a paragraph are just spaces
    assert "would rather be on a ridge line" in out.text


def test_untracked_text_shows_original_urls(render: RenderFn, ann: Contact) -> None:
    out = render("tips", ann, track=False)
    assert "Acme shop (https://acme.example/shop?utm_source=drip&x=1)" in out.text
    assert (
        "Try them on a route this weekend "
        "(https://acme.example/routes?utm_source=drip&utm_campaign=tips)" in out.text
    )
    assert "boot-fitting guide (https://acme.example/guides/boot-fitting)" in out.text


def test_images_become_alt_text(render_source: Callable[..., RenderedEmail]) -> None:
    out = render_source(
        "<mj-section><mj-column>"
        '<mj-image src="https://acme.example/boots.png" alt="Trail boots" />'
        '<mj-image src="https://acme.example/spacer.png" alt="" />'
        "</mj-column></mj-section>"
    )
    assert "[Trail boots]" in out.text
    assert "spacer.png" not in out.text and "[]" not in out.text


def test_html_to_text_edge_cases() -> None:
    doc = (
        "<html><head><style>p{color:red}</style><title>T</title></head><body>"
        "<script>var x = 1;</script>"
        "<div style='display: none'>hidden <b>bold</b> hidden</div>"
        "<h1>Title</h1><p>One &amp; two&nbsp;three<br>four</p>"
        "<ul><li>first</li><li>second</li></ul>"
        "<p><a href='https://x.example/'>https://x.example/</a> "
        "<a href='https://y.example/'></a> <a href='mailto:a@x.example'>write</a>"
        "<p>unclosed paragraph<p>another"
        "</body></html>"
    )
    text = html_to_text(doc)
    assert text.startswith("Title\n\nOne & two three\nfour\n\n")
    assert [line for line in text.splitlines() if line] == [
        "Title",
        "One & two three",
        "four",
        "first",
        "second",
        "https://x.example/ https://y.example/ write (a@x.example)",
        "unclosed paragraph",
        "another",
    ]


def test_contact_text_is_literal_in_text_part(render: RenderFn) -> None:
    who = Contact(id=2, email="t@example.com", fields={"first_name": "Tom & <Jerry>"})
    out = render("welcome", who)
    assert "Welcome to Acme Outdoor, Tom & <Jerry>!" in out.text
