"""The dev mailbox pages: list, one message with its HTML in a sandboxed iframe, parts, raw,
and problem JSON for anything that is not a stored message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from drip.mailbox import store_message
from drip.settings import Settings
from webhooks.routes import mailbox

HTML = (
    '<html><body><p>Hi <b>Ada</b> &amp; co</p><a href="https://acme.example/t/c/x">Go</a>'
    '<img src="http://localhost:8000/t/o/abc.gif" alt=""></body></html>'
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / ".drip", workspace=tmp_path)


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.settings = settings
    app.include_router(mailbox.router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


def _store(settings: Settings, subject: str, *, html: bool = True, text: bool = True) -> str:
    msg = EmailMessage()
    msg["From"] = "Acme Outdoor <hello@acme.example>"
    msg["To"] = "Ada <ada@example.com>"
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@acme.example>"
    if text:
        msg.set_content("Hi Ada, plain text")
    if html and text:
        msg.add_alternative(HTML, subtype="html")
    elif html:
        msg.set_content(HTML, subtype="html")
    return store_message(settings.mailbox_dir, msg.as_bytes(), mail_from="hello@acme.example")


async def test_an_empty_mailbox_says_so(http: httpx.AsyncClient) -> None:
    r = await http.get("/dev/mailbox")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "No email yet" in r.text


async def test_the_list_links_every_message_with_escaped_subjects(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    old = _store(settings, "Older")
    new = _store(settings, "<script>alert(1)</script> Welcome")

    r = await http.get("/dev/mailbox")

    assert r.status_code == 200
    assert "<script>" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Welcome" in r.text
    assert r.text.index(new) < r.text.index(old), "newest first"
    assert f'href="mailbox/{new}"' in r.text
    assert "Ada &lt;ada@example.com&gt;" in r.text
    assert "script-src" not in r.headers["content-security-policy"]  # so: no scripts at all


async def test_a_message_page_shows_headers_and_frames_the_html_part(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    name = _store(settings, "Welcome to Acme")

    r = await http.get(f"/dev/mailbox/{name}")

    assert r.status_code == 200
    assert "<h1>Welcome to Acme</h1>" in r.text
    assert "&lt;m1@acme.example&gt;" in r.text
    assert (
        f'<iframe sandbox="allow-popups allow-popups-to-escape-sandbox" src="{name}/html"' in r.text
    )
    assert f'href="{name}/text"' in r.text and f'href="{name}/raw"' in r.text
    # the relative links resolve under the mailbox
    assert httpx.URL(f"http://testserver/dev/mailbox/{name}").join(f"{name}/html").path == (
        f"/dev/mailbox/{name}/html"
    )

    part = await http.get(f"/dev/mailbox/{name}/html")
    assert part.status_code == 200
    assert part.text == HTML + "\n"  # as sent (the MIME part ends with a newline)
    csp = part.headers["content-security-policy"]
    assert csp.startswith("sandbox allow-popups allow-popups-to-escape-sandbox;")
    assert "img-src *" in csp and "script-src" not in csp

    text = await http.get(f"/dev/mailbox/{name}/text")
    assert text.status_code == 200 and text.text == "Hi Ada, plain text\n"
    assert text.headers["content-type"] == "text/plain; charset=utf-8"

    raw = await http.get(f"/dev/mailbox/{name}/raw")
    assert raw.status_code == 200
    assert raw.content == (settings.mailbox_dir / name).read_bytes()
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"


async def test_a_text_only_message_is_shown_inline(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    name = _store(settings, "Plain", html=False)
    r = await http.get(f"/dev/mailbox/{name}")
    assert r.status_code == 200
    assert "<iframe" not in r.text and "<pre>Hi Ada, plain text" in r.text
    missing = await http.get(f"/dev/mailbox/{name}/html")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/dev/mailbox/20261105T100000.000000Z-deadbeef.eml",
        "/dev/mailbox/20261105T100000.000000Z-deadbeef.eml/html",
        "/dev/mailbox/20261105T100000.000000Z-deadbeef.eml/text",
        "/dev/mailbox/20261105T100000.000000Z-deadbeef.eml/raw",
        "/dev/mailbox/secret_key/raw",
        "/dev/mailbox/..eml/raw",
        "/dev/mailbox/.hidden.eml/raw",
        "/dev/mailbox/..%2Fdrip.db/raw",
        "/dev/mailbox/%2E%2E%2F%2E%2E%2Fsecret_key",
    ],
)
async def test_anything_but_a_stored_message_is_a_404_problem(
    http: httpx.AsyncClient, settings: Settings, path: str
) -> None:
    settings.home.mkdir(parents=True)
    (settings.home / "secret_key").write_text("do not serve me")
    (settings.home / "drip.db").write_text("do not serve me")

    r = await http.get(path)

    assert r.status_code == 404
    assert "do not serve me" not in r.text
    if r.headers["content-type"] == "application/problem+json":
        problem = r.json()
        assert problem["status"] == 404 and problem["title"] and problem["detail"]
        assert problem["type"] == "about:blank"
    else:  # the path did not even match a mailbox route (the full app answers problem JSON)
        assert "/" in path.removeprefix("/dev/mailbox/").replace("%2F", "/")
