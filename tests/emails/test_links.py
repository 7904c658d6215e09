"""Click and open tracking, and unsubscribe tokens."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest

from contacts.hits import TRAP_URL
from contacts.models import Contact
from drip.settings import Settings
from emails import (
    RenderedEmail,
    click_token,
    insert_pixel,
    open_token,
    pixel_url,
    rewrite_links,
    unsubscribe_token,
    verify_unsubscribe_token,
)
from tests.emails.conftest import BASE, FRAGMENT, RenderFn

SECRET = b"a-secret-for-tests"
HREF = re.compile(r"""<a\b[^>]*?\bhref="([^"]*)\"""", re.IGNORECASE)
CLICK = re.compile(rf"^{re.escape(BASE)}/t/c/([A-Za-z0-9_-]{{24}})$")

WELCOME_LINKS = [
    "https://acme.example/routes?utm_source=drip&utm_campaign=welcome",
    "https://acme.example/shop?utm_source=drip&x=1",
    "https://acme.example/guides/first-hike",
]


def hrefs(doc: str) -> list[str]:
    return [html.unescape(h) for h in HREF.findall(doc)]


def test_every_web_link_is_tracked(render: RenderFn, ann: Contact, settings: Settings) -> None:
    out = render("welcome", ann, message_id="msg-1")
    # the layout's hidden trap link (only machines follow it) comes last
    assert [url for _, _, url in out.links] == [*WELCOME_LINKS, TRAP_URL]
    assert [pos for _, pos, _ in out.links] == [0, 1, 2, 3]
    secret = settings.secret()
    for token, position, _ in out.links:
        assert token == click_token(secret, "msg-1", position)
    tracked = [h for h in hrefs(out.html) if h.startswith(f"{BASE}/t/c/")]
    assert tracked == [f"{BASE}/t/c/{token}" for token, _, _ in out.links]
    for h in tracked:
        assert CLICK.match(h)
    # no original web link is left in the HTML, only the untracked kinds
    untracked = [h for h in hrefs(out.html) if not h.startswith(f"{BASE}/t/c/")]
    assert untracked == ["mailto:support@acme.example", out.unsubscribe_url, out.view_url]
    for url in WELCOME_LINKS:
        assert f'"{html.escape(url)}"' not in out.html


@pytest.mark.parametrize("template", ["tips", "welcome-reminder"])
def test_ampersands_are_unescaped_in_stored_urls(
    render: RenderFn, ann: Contact, template: str
) -> None:
    out = render(template, ann)
    urls = [url for _, _, url in out.links]
    assert "https://acme.example/shop?utm_source=drip&x=1" in urls
    assert not any("&amp;" in url for url in urls)
    assert len(urls) == len(set(hrefs(out.html)) - {out.unsubscribe_url, out.view_url})


def test_unsubscribe_and_mailto_are_not_rewritten(render: RenderFn, ann: Contact) -> None:
    out = render("welcome", ann)
    assert f'href="{out.unsubscribe_url}"' in out.html
    assert 'href="mailto:support@acme.example"' in out.html
    assert out.unsubscribe_url not in [url for _, _, url in out.links]


def test_tokens_are_deterministic_per_message(render: RenderFn, ann: Contact) -> None:
    first = render("welcome", ann, message_id="msg-a")
    again = render("welcome", ann, message_id="msg-a")
    other = render("welcome", ann, message_id="msg-b")
    assert first.links == again.links and first.html == again.html
    assert first.open_token == again.open_token
    assert {t for t, _, _ in first.links}.isdisjoint({t for t, _, _ in other.links})
    assert first.open_token != other.open_token
    assert [u for _, _, u in first.links] == [u for _, _, u in other.links]


def test_pixel_once_just_before_body_end(
    render: RenderFn, ann: Contact, settings: Settings
) -> None:
    out = render("welcome", ann, message_id="msg-p")
    assert out.open_token == open_token(settings.secret(), "msg-p")
    pixel = f"{BASE}/t/o/{out.open_token}.gif"
    assert out.html.count("/t/o/") == 1
    img = re.search(r'<img src="([^"]+)"[^>]*/>\s*</body>', out.html)
    assert img is not None and img.group(1) == pixel
    assert out.html.rstrip().endswith("</body></html>")
    assert pixel not in out.text  # the text part is derived before the pixel goes in


def test_open_and_click_tokens_never_collide() -> None:
    clicks = {click_token(SECRET, "m", i) for i in range(50)}
    assert len(clicks) == 50
    assert open_token(SECRET, "m") not in clicks
    assert click_token(SECRET, "m1", 0) != click_token(SECRET, "m", 10)
    assert open_token(SECRET, "m") != open_token(b"other-secret", "m")


def test_no_tracking_leaves_links_and_adds_no_pixel(render: RenderFn, ann: Contact) -> None:
    out = render("welcome", ann, track=False)
    assert out.links == [] and out.open_token == ""
    assert "/t/c/" not in out.html and "/t/o/" not in out.html
    assert hrefs(out.html) == [
        WELCOME_LINKS[0],
        WELCOME_LINKS[1],
        WELCOME_LINKS[2],
        "mailto:support@acme.example",
        out.unsubscribe_url,
        out.view_url,
        TRAP_URL,
    ]
    assert f"({WELCOME_LINKS[1]})" in out.text


def test_author_links_of_every_kind(render_source: Callable[..., RenderedEmail]) -> None:
    body = FRAGMENT.format(
        '<a href="HTTPS://Acme.example/A">a</a> '
        '<a href="tel:+441234">tel</a> '
        '<a href="#top">anchor</a> '
        '<a href="ftp://acme.example/f">ftp</a> '
        '<a href="https://acme.example/optout" data-drip-notrack>opt out</a> '
        '<a data-drip-notrack href="https://acme.example/own">own</a> '
        '<a href="http://acme.example/plain">plain http</a>'
    )
    out = render_source(body)
    assert [url for _, _, url in out.links] == [
        "HTTPS://Acme.example/A",
        "http://acme.example/plain",
        TRAP_URL,
    ]
    for kept in [
        "tel:+441234",
        "#top",
        "ftp://acme.example/f",
        "https://acme.example/optout",
        "https://acme.example/own",
    ]:
        assert f'href="{kept}"' in out.html


def test_rewrite_links_quoting_styles() -> None:
    doc = (
        "<a href='https://a.example/1?x=1&amp;y=2'>one</a>"
        "<a class=x href=https://a.example/2>two</a>"
        '<A HREF = "https://a.example/3">three</A>'
        '<abbr href="https://a.example/not-an-anchor">x</abbr>'
        '<a data-href="https://a.example/data">no href</a>'
        f'<a href="{BASE}/u/sometoken">unsubscribe</a>'
    )
    new, links = rewrite_links(doc, message_id="m", secret=SECRET, base_url=BASE)
    assert [url for _, _, url in links] == [
        "https://a.example/1?x=1&y=2",
        "https://a.example/2",
        "https://a.example/3",
    ]
    for token, position, _ in links:
        assert token == click_token(SECRET, "m", position)
        assert f'"{BASE}/t/c/{token}"' in new
    assert "https://a.example/not-an-anchor" in new
    assert "https://a.example/data" in new
    assert f'href="{BASE}/u/sometoken"' in new
    assert ">one</a>" in new and ">two</a>" in new and ">three</A>" in new


def test_insert_pixel_without_body_appends() -> None:
    assert insert_pixel("<p>x</p>", "https://t/o/x.gif").startswith("<p>x</p><img ")
    doc = insert_pixel("<body>a</body><!-- </body> -->x</body>", pixel_url(BASE, "tok"))
    assert doc.count("<img") == 1 and doc.endswith("/></body>")


# --- unsubscribe tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("contact_id", [0, 1, 42, 2**31, 2**63 - 1])
def test_unsubscribe_token_round_trip(contact_id: int) -> None:
    token = unsubscribe_token(SECRET, contact_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert verify_unsubscribe_token(SECRET, token) == contact_id


@pytest.mark.parametrize("contact_id", [-1, 2**63])
def test_unsubscribe_token_refuses_out_of_range_ids(contact_id: int) -> None:
    with pytest.raises(ValueError):
        unsubscribe_token(SECRET, contact_id)


def _flip(token: str, at: int) -> str:
    swap = "A" if token[at] != "A" else "B"
    return token[:at] + swap + token[at + 1 :]


def test_tampered_unsubscribe_tokens_are_refused() -> None:
    token = unsubscribe_token(SECRET, 42)
    bad = [
        *(_flip(token, i) for i in range(len(token))),  # every single-character change
        token[:-1],
        token[1:],
        token + "A",
        token + "\n",
        " " + token,
        token + "=",
        token.upper() if token.upper() != token else token.lower(),
        "",
        "garbage",
        "A" * 32,
        "!" * 32,
        "é" * 32,
        unsubscribe_token(SECRET, 43)[:11] + token[11:],  # another id with this MAC
    ]
    for candidate in bad:
        assert verify_unsubscribe_token(SECRET, candidate) is None, candidate


def test_unsubscribe_token_from_another_secret_is_refused() -> None:
    token = unsubscribe_token(b"someone-else", 42)
    assert verify_unsubscribe_token(SECRET, token) is None
    assert verify_unsubscribe_token(b"someone-else", token) == 42


def test_rendered_unsubscribe_url_verifies_with_settings_secret(
    render: RenderFn, ann: Contact, settings: Settings
) -> None:
    out = render("tips", ann)
    token = out.unsubscribe_url.rsplit("/", 1)[1]
    assert verify_unsubscribe_token(settings.secret(), token) == ann.id
    assert verify_unsubscribe_token(b"not-the-secret", token) is None
