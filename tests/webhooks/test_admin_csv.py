"""CSV import and export over HTTP: bad rows reported by line, formulas defused on the way out."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.webhooks._admin import make_key
from webhooks.admin.contacts_csv import escape_cell
from webhooks.problems import PROBLEM_JSON


@pytest.fixture
def auth(engine: Engine) -> dict[str, str]:
    return make_key(engine)


async def _import(
    http: httpx.AsyncClient, auth: dict[str, str], text: str, **params: str
) -> httpx.Response:
    return await http.post(
        "/api/contacts/import",
        content=text.encode(),
        params=params,
        headers={**auth, "content-type": "text/csv; charset=utf-8"},
    )


async def test_import_creates_updates_and_reports_bad_rows(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    text = (
        "email,first_name,company\n"
        "ann@example.com,Ann,Acme\n"
        "not-an-address,Bob,\n"
        "\n"
        ",Nobody,\n"
        "cat@example.com,Cat,Cats,extra\n"
        "ANN@example.com,,Acme Outdoor\n"
        "dan@example.com,Dan,\n"
    )
    r = await _import(http, auth, text, consent_source="import:fair-2026")
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["created"], report["updated"]) == (2, 1)
    assert [(p["line"], p["email"]) for p in report["invalid"]] == [
        (3, "not-an-address"),
        (5, ""),
        (6, ""),
    ]
    ann = (
        await http.get("/api/contacts", params={"email": "ann@example.com"}, headers=auth)
    ).json()
    (contact,) = ann["items"]
    assert contact["fields"] == {"first_name": "Ann", "company": "Acme Outdoor"}
    assert contact["consent_source"] == "import:fair-2026"


@pytest.mark.parametrize(
    ("text", "content_type", "status"),
    [
        ("name\nann\n", "text/csv", 422),  # no email column
        ("email,First Name\na@example.com,x\n", "text/csv", 422),
        ("", "text/csv", 422),
        ("email\na@example.com\n", "application/json", 415),
    ],
)
async def test_unusable_files_are_refused_whole(
    http: httpx.AsyncClient, auth: dict[str, str], text: str, content_type: str, status: int
) -> None:
    r = await http.post(
        "/api/contacts/import",
        content=text.encode(),
        headers={**auth, "content-type": content_type},
    )
    assert r.status_code == status and r.headers["content-type"] == PROBLEM_JSON
    assert "/tmp" not in r.text  # the temporary file's path is not shown
    assert (await http.get("/api/contacts", headers=auth)).json()["items"] == []
    bad = await http.post(
        "/api/contacts/import",
        content=b"\xff\xfe\x00",
        headers={**auth, "content-type": "text/csv"},
    )
    assert bad.status_code == 422


async def test_export_escapes_formulas(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    await http.post(
        "/api/contacts",
        json={
            "email": "mal@example.com",
            "fields": {
                "first_name": '=HYPERLINK("http://evil.example","click")',
                "note": "+1 555",
                "city": "@SUM(A1)",
                "age": -3,
            },
            "tags": ["-vip"],
        },
        headers=auth,
    )
    await http.post(
        "/api/contacts", json={"email": "ok@example.com", "tags": ["vip"]}, headers=auth
    )
    r = await http.get("/api/contacts/export", headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["email"] for row in rows] == ["mal@example.com", "ok@example.com"]
    mal = rows[0]
    assert mal["first_name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert mal["note"] == "'+1 555" and mal["city"] == "'@SUM(A1)"
    assert mal["tags"] == "'-vip" and mal["age"] == "-3"  # a number is a number
    only_vip = await http.get(
        "/api/contacts/export", params={"tag": "vip", "field": "first_name"}, headers=auth
    )
    rows = list(csv.DictReader(io.StringIO(only_vip.text)))
    assert [row["email"] for row in rows] == ["ok@example.com"]
    assert list(rows[0])[-1] == "first_name" and "note" not in rows[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        (None, ""),
        (-5, -5),
        (True, "true"),
    ],
)
def test_escape_cell(value: object, expected: object) -> None:
    assert escape_cell(value) == expected
