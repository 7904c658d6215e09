"""A NUL or another control character anywhere a client can put one (a query parameter, a path
segment, a free-text field of the admin API) is a 4xx problem, on SQLite and on PostgreSQL,
which cannot hold NUL in text and answered such a request with a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment
from drip.settings import Settings
from tests.support import api_client
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, any_engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, workspace, any_engine) as client:
        client.headers.update(make_key(any_engine))
        yield client


def _refused(r: httpx.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize(
    "path",
    [
        "/api/journeys?campaign_id=a%00b",
        "/api/contacts?q=a%00b",
        "/api/contacts?tag=a%00b",
        "/api/sales/reps?team=a%00b",
        "/api/sales/alerts?owner=a%00b",
        "/api/sales/reps/a%00b@example.com",
        "/dashboard/contacts?q=a%00b",
    ],
)
async def test_nul_in_the_query_or_path_is_a_problem(http: httpx.AsyncClient, path: str) -> None:
    r = await http.get(path)
    _refused(r)
    assert "NUL" in r.json()["detail"]


async def test_the_pixel_still_answers_its_image(http: httpx.AsyncClient) -> None:
    r = await http.get("/t/o/a%00b.gif")
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"


async def test_a_public_link_with_nul_gets_its_own_not_valid_page(http: httpx.AsyncClient) -> None:
    r = await http.get("/m/%00")
    assert r.status_code == 404 and "This link is not valid" in r.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/sales/teams", {"id": "north", "name": "North\x00"}),
        ("POST", "/api/sales/teams", {"id": "north", "name": "North\u202e"}),
        ("POST", "/api/sales/teams", {"id": "north", "name": "North\r\nBcc: x"}),
        (
            "POST",
            "/api/sales/reps",
            {"email": "rep@example.com", "name": "Rep\x00", "team": "north"},
        ),
    ],
)
async def test_control_characters_in_admin_text_are_a_422(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, object]
) -> None:
    if path == "/api/sales/reps":
        made = await http.post("/api/sales/teams", json={"id": "north", "name": "North"})
        assert made.status_code == 201, made.text
    r = await http.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "name"


async def test_a_cancel_reason_with_nul_is_a_422(
    http: httpx.AsyncClient, any_engine: Engine
) -> None:
    with session_scope(any_engine) as s:
        contact, _ = repository.upsert_contact(s, "ann@example.com")
        assert contact.id is not None
        s.add(
            Enrolment(
                campaign_id="welcome",
                campaign_version="v1",
                contact_id=contact.id,
                workflow_id="journey/welcome/1/1",
            )
        )
    with session_scope(any_engine) as s:
        enrolment = s.exec(select(Enrolment)).one()
    r = await http.post(f"/api/journeys/{enrolment.id}/cancel", json={"reason": "bye\x00"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "reason"
