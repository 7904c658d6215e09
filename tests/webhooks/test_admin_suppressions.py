"""``/api/suppressions`` over HTTP: add, list in pages, remove, CSV import and export that
round-trip; scopes; bad input answered with a problem (422, 404, 415), never a 500."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


@pytest.fixture
def auth(engine: Engine) -> dict[str, str]:
    return make_key(engine, "suppressions:read", "suppressions:write")


async def test_add_list_remove_and_the_csv_round_trip(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    made = await http.post(
        "/api/suppressions", json={"entry": " Ann@Example.com", "reason": "asked"}, headers=auth
    )
    assert made.status_code == 200 and made.json()["created"] is True, made.text
    assert made.json()["value"] == "ann@example.com" and made.json()["kind"] == "address"
    assert made.json()["source"].startswith("api:drip_")
    again = await http.post(
        "/api/suppressions", json={"entry": "ann@example.com", "reason": "legal"}, headers=auth
    )
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["reason"] == "legal"
    imported = await http.post(
        "/api/suppressions/import",
        content=b"email_or_domain,reason\ncompetitor.com,competitor\nnope,typo\nbo@x.org,\n",
        headers={**auth, "content-type": "text/csv"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["added"] == 2 and imported.json()["updated"] == 0
    assert [(p["line"], p["value"]) for p in imported.json()["invalid"]] == [(3, "nope")]

    first = await http.get("/api/suppressions", params={"limit": 2}, headers=auth)
    assert [i["value"] for i in first.json()["items"]] == ["ann@example.com", "competitor.com"]
    rest = await http.get(
        "/api/suppressions", params={"cursor": first.json()["next_cursor"]}, headers=auth
    )
    assert [i["value"] for i in rest.json()["items"]] == ["bo@x.org"]
    assert rest.json()["next_cursor"] is None
    domains = await http.get("/api/suppressions", params={"kind": "domain"}, headers=auth)
    assert [i["value"] for i in domains.json()["items"]] == ["competitor.com"]

    exported = await http.get("/api/suppressions/export", headers=auth)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    for value in ("ann@example.com", "competitor.com", "bo@x.org"):
        removed = await http.delete(f"/api/suppressions/{value}", headers=auth)
        assert removed.status_code == 204
    assert (await http.get("/api/suppressions", headers=auth)).json()["items"] == []
    back = await http.post(
        "/api/suppressions/import",
        content=exported.content,
        headers={**auth, "content-type": "text/csv"},
    )
    assert back.json() == {"added": 3, "updated": 0, "invalid": []}
    listed = (await http.get("/api/suppressions", headers=auth)).json()["items"]
    assert [(i["value"], i["reason"]) for i in listed] == [
        ("ann@example.com", "legal"),
        ("competitor.com", "competitor"),
        ("bo@x.org", "on the suppression list"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "says"),
    [
        ("post", "", {"json": {"entry": "not an address"}}, 422, "neither an address nor"),
        ("post", "", {"json": {"entry": "a@b.com", "reason": "x\x1by"}}, 422, "control"),
        ("post", "", {"json": {"entry": "a@b.com", "extra": 1}}, 422, ""),
        ("delete", "/nobody@example.com", {}, 404, "not on the suppression list"),
        ("delete", "/nobody@localhost.", {}, 422, "cannot end with a period"),
        ("delete", "/localhost", {}, 404, ""),
        (
            "post",
            "/import",
            {"content": b"name\nann\n", "headers": {"content-type": "text/csv"}},
            422,
            "nothing imported",
        ),
        (
            "post",
            "/import",
            {"content": b"\xff\xfe", "headers": {"content-type": "text/csv"}},
            422,
            "not UTF-8",
        ),
        ("post", "/import", {"json": {"entry": "a@b.com"}}, 415, "text/csv"),
    ],
)
async def test_bad_input_is_a_problem(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    says: str,
) -> None:
    headers = {**auth, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = await http.request(
        method.upper(), f"/api/suppressions{path}", headers=headers, **kwargs
    )  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert says in response.text


async def test_scopes(http: httpx.AsyncClient, engine: Engine) -> None:
    reader = make_key(engine, "suppressions:read", name="reader")
    other = make_key(engine, "contacts:read", name="other")
    assert (await http.get("/api/suppressions", headers=reader)).status_code == 200
    assert (await http.get("/api/suppressions/export", headers=reader)).status_code == 200
    assert (await http.get("/api/suppressions", headers=other)).status_code == 403
    add = await http.post("/api/suppressions", json={"entry": "a@b.com"}, headers=reader)
    assert add.status_code == 403
    assert (await http.get("/api/suppressions")).status_code == 401
