"""Public forms against abuse, over HTTP: the honeypot, the per-IP rate limit, allowlisted
redirects (never an open redirect), the optional origin allowlist, hidden fields, the embed
snippet, and the workspace checks on form redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.errors import CampaignError
from campaigns.workspace import Workspace, load_workspace
from contacts.db import session_scope
from contacts.models import Contact, Event
from drip.settings import Settings
from tests.support import api_client, copy_workspace
from webhooks.problems import PROBLEM_JSON

GOOD = {"email": "ann@example.com", "consent": "yes"}


def _rows(engine: Engine) -> tuple[list[Contact], list[Event]]:
    with session_scope(engine) as s:
        return list(s.exec(select(Contact)).all()), list(s.exec(select(Event)).all())


@pytest.fixture
async def guarded(
    tmp_path: Path, settings: Settings, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    """The demo workspace with ``form_origins`` set."""
    root = copy_workspace(tmp_path)
    with (root / "workspace.yaml").open("a") as f:
        f.write("form_origins:\n  - https://shop.acme.example\n")
    async with api_client(settings, load_workspace(root), engine) as client:
        yield client


async def test_a_filled_honeypot_looks_like_success_and_stores_nothing(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    page = await http.post("/forms/newsletter", data={**GOOD, "website": "http://spam.example"})
    assert page.status_code == 200 and "Thanks!" in page.text
    api = await http.post("/forms/newsletter", json={**GOOD, "website": "x", "email": "bad"})
    assert api.status_code == 202 and api.json()["status"] == "accepted"
    assert _rows(engine) == ([], [])


async def test_the_honeypot_is_hidden_from_people_and_assistive_technology(
    http: httpx.AsyncClient,
) -> None:
    html = (await http.get("/forms/newsletter")).text
    assert 'class="hp" aria-hidden="true"' in html
    assert 'name="website" type="text" tabindex="-1" autocomplete="off"' in html


async def test_more_than_ten_posts_a_minute_from_one_ip_get_429(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    for _ in range(10):
        r = await http.post("/forms/newsletter", json={**GOOD, "website": "bot"})
        assert r.status_code == 202
    api = await http.post("/forms/newsletter", json=GOOD)
    assert api.status_code == 429 and api.headers["content-type"] == PROBLEM_JSON
    # the limit is a sliding window estimated from two fixed ones (webhooks._ratelimit): the
    # previous window's ten posts weigh until a tenth of the next window has passed, so the
    # wait can exceed the minute by up to six seconds, depending on when in the minute this ran
    assert api.json()["status"] == 429 and 1 <= int(api.headers["retry-after"]) <= 66
    page = await http.post("/forms/newsletter", data=GOOD)
    assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
    assert "retry-after" in page.headers
    # the limit is per form: another form still takes this address's posts
    other = await http.post("/forms/webinar", json={"email": "bob@example.com", "consent": True})
    assert other.status_code == 202
    contacts, _ = _rows(engine)
    assert [c.email for c in contacts] == ["bob@example.com"]


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/phish",
        "http://www.acme.example/thanks",  # not https
        "//evil.example/",
        "https://www.acme.example@evil.example/",
        "https://evil.example\\@www.acme.example/",
        "https://evil.example/?https://www.acme.example",
        "https://www.acme.example.evil.example/",
        "javascript:alert(1)",
        "https://www.acme.example:99999/",
        "x" * 3000,
    ],
)
async def test_a_redirect_outside_the_allowlist_is_refused_with_400(
    http: httpx.AsyncClient, engine: Engine, target: str
) -> None:
    api = await http.post("/forms/newsletter", json={**GOOD, "redirect": target})
    assert api.status_code == 400 and api.headers["content-type"] == PROBLEM_JSON
    assert api.json()["title"] == "Redirect not allowed"
    page = await http.post(
        "/forms/newsletter", data=GOOD, params={"redirect": target}, follow_redirects=False
    )
    assert page.status_code == 400 and "location" not in page.headers
    assert page.headers["content-type"].startswith("text/html")
    assert _rows(engine) == ([], [])


async def test_an_allowlisted_redirect_sends_the_browser_on_with_303(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    target = "https://www.acme.example/welcome?from=form"
    shown = await http.get("/forms/newsletter", params={"redirect": target})
    assert f'name="redirect" value="{target.replace("&", "&amp;")}"' in shown.text
    csp = shown.headers["content-security-policy"]
    assert "form-action 'self' https://www.acme.example;" in csp  # the 303 may go there
    ignored = await http.get("/forms/newsletter", params={"redirect": "https://evil.example/"})
    assert "evil.example" not in ignored.text
    r = await http.post(
        "/forms/newsletter", data={**GOOD, "redirect": target}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == target
    api = await http.post("/forms/newsletter", json={**GOOD, "redirect": target})
    assert api.status_code == 202 and api.json()["redirect"] == target
    assert len(_rows(engine)[0]) == 1


async def test_hidden_fields_come_from_the_query_or_their_defaults(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    page = await http.get("/forms/catalogue", params={"utm_source": "instagram"})
    assert '<input type="hidden" name="utm_source" value="instagram">' in page.text
    assert '<input type="hidden" name="signup_form" value="catalogue">' in page.text
    # the catalogue form redirects browsers to the shop after the post
    r = await http.post(
        "/forms/catalogue",
        data={**GOOD, "utm_source": "instagram"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "https://www.acme.example/thanks"


async def test_form_origins_refuse_posts_from_other_sites(
    guarded: httpx.AsyncClient, engine: Engine
) -> None:
    evil = await guarded.post(
        "/forms/newsletter", data=GOOD, headers={"origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    by_referer = await guarded.post(
        "/forms/newsletter", json=GOOD, headers={"referer": "https://evil.example/page"}
    )
    assert by_referer.status_code == 403 and by_referer.headers["content-type"] == PROBLEM_JSON
    assert _rows(engine) == ([], [])
    for headers in (
        {"origin": "https://shop.acme.example"},
        {"origin": "http://testserver"},  # our own hosted page
        {},  # not a browser: a server or an app
    ):
        r = await guarded.post("/forms/newsletter", json=GOOD, headers=headers)
        assert r.status_code == 202, headers


async def test_the_embed_snippet_is_a_plain_form_that_posts_to_the_api(
    http: httpx.AsyncClient,
) -> None:
    r = await http.get("/forms/catalogue/embed")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    snippet = r.text
    assert '<form class="drip-form" action="http://testserver/forms/catalogue" method="post"' in (
        snippet
    )
    assert "<script" not in snippet
    assert 'name="email" type="email"' in snippet and 'name="consent"' in snippet
    assert 'name="website" type="text" tabindex="-1"' in snippet and 'aria-hidden="true"' in snippet
    assert '<input type="hidden" name="utm_source" value="website">' in snippet
    assert '<label for="drip-catalogue-email">Email address *</label>' in snippet
    assert (await http.get("/forms/nope/embed")).status_code == 404


async def test_unreadable_or_hostile_posts_are_4xx_never_500(http: httpx.AsyncClient) -> None:
    bodies: list[dict[str, object]] = [
        {"email": "a@example.com", "consent": ["yes"]},
        {"email": "a@example.com", "consent": {"x": 1}},
        {"email": "a@example.com", "consent": True, "redirect": 5},
        {"email": "a@example.com", "consent": True, "redirect": ["https://www.acme.example/"]},
    ]
    for body in bodies:
        r = await http.post("/forms/newsletter", json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code)
        assert r.headers["content-type"] == PROBLEM_JSON


def test_a_form_redirect_off_the_allowlist_fails_loading_with_file_and_line(
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    path = root / "forms" / "catalogue.yaml"
    path.write_text(path.read_text().replace("www.acme.example/thanks", "evil.example/"))
    with pytest.raises(CampaignError) as info:
        load_workspace(root)
    (problem,) = info.value.problems
    line = path.read_text().splitlines().index("redirect: https://evil.example/") + 1
    assert str(problem) == (
        f"acme/forms/catalogue.yaml:{line}:11: redirect: host 'evil.example' is not in "
        "workspace.yaml form_redirect_hosts (allowed: www.acme.example)"
    )


@pytest.mark.parametrize("name", ["website", "consent", "redirect", "email"])
def test_hidden_fields_may_not_take_reserved_or_used_names(tmp_path: Path, name: str) -> None:
    root = copy_workspace(tmp_path)
    path = root / "forms" / "catalogue.yaml"
    path.write_text(path.read_text().replace("  signup_form:", f"  {name}:"))
    with pytest.raises(CampaignError) as info:
        load_workspace(root)
    assert any("is used twice or reserved" in str(p) for p in info.value.problems)


def test_the_demo_workspace_declares_topics(workspace: Workspace) -> None:
    assert [t.id for t in workspace.config.topics] == ["trails", "gear", "deals"]
    assert workspace.forms["catalogue"].double_opt_in
