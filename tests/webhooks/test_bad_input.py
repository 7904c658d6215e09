"""Bad input gets a clear 4xx (problem JSON, or the page again for browsers), never a 500."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts.db import session_scope
from contacts.models import Contact, Event
from webhooks.problems import PROBLEM_JSON
from webhooks.routes.tracking import GIF


def _no_rows(engine: Engine) -> None:
    with session_scope(engine) as s:
        assert s.exec(select(Contact)).all() == []
        assert s.exec(select(Event)).all() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"consent": True},
        {"email": "", "consent": True},
        {"email": "not-an-email", "consent": True},
        {"email": "a@b", "consent": True},
        {"email": ["x@example.com"], "consent": True},
        {"email": "x@example.com" + "x" * 400, "consent": True},
    ],
)
async def test_json_post_without_a_valid_email_is_422_problem(
    http: httpx.AsyncClient, engine: Engine, body: dict[str, object]
) -> None:
    r = await http.post("/forms/newsletter", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM_JSON
    problem = r.json()
    assert problem["status"] == 422 and problem["title"]
    assert "email" in [e["field"] for e in problem["errors"]]
    _no_rows(engine)


async def test_consent_is_required(http: httpx.AsyncClient, engine: Engine) -> None:
    r = await http.post("/forms/newsletter", json={"email": "x@example.com"})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["consent"]
    _no_rows(engine)


async def test_html_post_with_a_bad_email_rerenders_the_form_with_the_error(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    r = await http.post(
        "/forms/newsletter", data={"email": "nope", "first_name": "<b>Ann</b>", "consent": "yes"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/html")
    assert "Email address is not a valid email address" in r.text
    assert 'aria-invalid="true"' in r.text
    assert "&lt;b&gt;Ann&lt;/b&gt;" in r.text and "<b>Ann</b>" not in r.text  # escaped
    _no_rows(engine)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{not json"),
        ("application/json", b"\xff\xfe"),
    ],
)
async def test_malformed_bodies_are_400(
    http: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    r = await http.post("/forms/newsletter", content=body, headers={"content-type": content_type})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM_JSON


async def test_unknown_form(http: httpx.AsyncClient) -> None:
    assert (await http.get("/forms/nope")).status_code == 404
    r = await http.post("/forms/nope", json={"email": "x@example.com", "consent": True})
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM_JSON


async def test_honeypot_is_accepted_silently_and_stores_nothing(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    r = await http.post(
        "/forms/newsletter",
        data={"email": "bot@example.com", "consent": "yes", "website": "http://spam.example"},
    )
    assert r.status_code == 200
    _no_rows(engine)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "A" * 40,
        "..%2F..%2Fetc%2Fpasswd",
        "a/b/c",
        "%00",
        "x" * 5000,
        "'; DROP TABLE messages; --",
    ],
)
async def test_garbage_pixel_token_still_gets_the_gif(http: httpx.AsyncClient, token: str) -> None:
    r = await http.get(f"/t/o/{token}.gif")
    assert r.status_code == 200
    assert r.content == GIF and r.headers["content-type"] == "image/gif"
    assert "no-store" in r.headers["cache-control"]


@pytest.mark.parametrize("token", ["garbage", "A" * 40, "x" * 5000, "https:%2F%2Fevil.example"])
async def test_garbage_click_token_is_404_never_a_redirect(
    http: httpx.AsyncClient, token: str
) -> None:
    r = await http.get(f"/t/c/{token}", follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers


async def test_the_form_page_is_accessible_without_javascript(http: httpx.AsyncClient) -> None:
    r = await http.get("/forms/newsletter")
    assert r.status_code == 200
    html = r.text
    assert '<form method="post"' in html and "<script" not in html
    for field in ("email", "first_name", "consent"):
        assert f'<label for="f-{field}"' in html or f'for="f-{field}"' in html
        assert f'id="f-{field}"' in html
    assert "Acme Outdoor Ltd" in html  # postal address


async def test_method_not_allowed_keeps_its_allow_header(http: httpx.AsyncClient) -> None:
    """A 405 problem keeps Starlette's ``Allow`` header (RFC 9110 requires it)."""
    r = await http.delete("/forms/newsletter")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"] == "GET, POST"  # both routes of the path (test_answers.py)
