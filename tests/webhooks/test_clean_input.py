"""Data is cleaned at every door (events API, forms, admin API, CSV import): a value drip does
not store is a 422 naming the field, never stored, never silently changed, and never able to
break the queries over other contacts. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import Contact, Event
from drip.settings import Settings
from tests.support import api_client
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON

KEY = "wk_clean_test"
#: JSON text of values that once poisoned a table (1e999 is Infinity to every JSON reader)
POISON = {
    "inf": "1e999",
    "-inf": "-1e999",
    "nul": '"a\\u0000b"',
    "surrogate": '"\\ud800"',
    "override": '"\\u202eevil"',
    "escape": '"\\u001b[31m"',
}


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, any_engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    keyed = settings.model_copy(update={"write_keys": [SecretStr(KEY)]})
    async with api_client(keyed, workspace, any_engine) as client:
        yield client


def _segment() -> dict[str, str]:
    token = base64.b64encode(f"{KEY}:".encode()).decode()
    return {"authorization": f"Basic {token}", "content-type": "application/json"}


def _emails(engine: Engine) -> list[str]:
    with session_scope(engine) as s:
        return list(s.exec(select(Contact.email).order_by(col(Contact.id))).all())


def _events(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as s:
        return [(e.type, e.name) for e in s.exec(select(Event).order_by(col(Event.id))).all()]


def _refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    assert field in [e["field"] for e in r.json()["errors"]], r.json()


async def _post(http: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    return await http.post(path, content=body.encode(), headers=_segment())


@pytest.mark.parametrize("poison", list(POISON.values()), ids=list(POISON))
async def test_one_public_identify_cannot_break_lookups_for_everyone(
    http: httpx.AsyncClient, any_engine: Engine, poison: str
) -> None:
    ann = json.dumps({"userId": "u-ann", "traits": {"email": "ann@example.com"}})
    assert (await _post(http, "/v1/identify", ann)).status_code == 200

    calls = [
        ("/v1/identify", '"traits": {"email": "eve@example.com", "x": P}', "traits.x"),
        ("/v1/track", '"event": "x", "properties": {"deep": [1, P]}', "properties.deep.1"),
        ("/v1/page", '"context": {"traits": {"y": P}}', "context.traits.y"),
    ]
    for path, body, field in calls:
        sent = '{"userId": "u-eve", ' + body.replace("P", poison) + "}"
        _refused(await _post(http, path, sent), field)
    batch = '{"batch": [{"type": "identify", "userId": "u-eve", "traits": {"z": %s}}]}'
    batch = batch.replace("%s", poison)
    _refused(await _post(http, "/v1/batch", batch), "batch.0.traits.z")
    assert _emails(any_engine) == ["ann@example.com"]

    # everybody else still works: by userId, and the admin API's list and search
    r = await _post(http, "/v1/track", json.dumps({"userId": "u-ann", "event": "Signed Up"}))
    assert r.status_code == 200, r.text
    assert _events(any_engine) == [("event", "signed_up")]
    auth = make_key(any_engine)
    r = await http.get("/api/contacts", headers=auth)
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    r = await http.get(
        "/api/contacts", params={"where": 'contact.user_id == "u-ann"'}, headers=auth
    )
    assert r.status_code == 200 and len(r.json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"userId": "u\\u0000", "traits": {"email": "eve@example.com"}}', "userId"),
        ('{"userId": "u", "event": "Bought\\u202e", "properties": {}}', "event"),
        ('{"userId": "u", "messageId": "m\\r\\n1", "event": "x"}', "messageId"),
    ],
)
async def test_ids_and_names_are_one_line_of_text(
    http: httpx.AsyncClient, any_engine: Engine, body: str, field: str
) -> None:
    path = "/v1/identify" if "traits" in body else "/v1/track"
    _refused(await _post(http, path, body), field)
    assert _emails(any_engine) == []


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"email": "a" * 100 + "@example.com"}, "email"),
        ({"email": "ann@" + "x" * 250 + ".com"}, "email"),
        ({"first_name": "Ann\x00"}, "first_name"),
        ({"first_name": "Ann\r\nBcc: everyone@example.com"}, "first_name"),
        ({"first_name": "\u202eevil"}, "first_name"),
        ({"first_name": "\ud800"}, "first_name"),
    ],
)
async def test_the_public_form_refuses_what_it_used_to_store_and_email(
    http: httpx.AsyncClient, any_engine: Engine, values: dict[str, str], field: str
) -> None:
    body = {"email": "ann@example.com", "first_name": "Ann", "consent": True, **values}
    r = await http.post(
        "/forms/newsletter",
        content=json.dumps(body).encode(),  # a lone surrogate travels as its JSON escape
        headers={"content-type": "application/json"},
    )
    _refused(r, field)
    assert _emails(any_engine) == []


async def test_a_hidden_field_from_the_query_string_is_checked_too(
    http: httpx.AsyncClient, any_engine: Engine
) -> None:
    r = await http.post(
        "/forms/catalogue",
        data={"email": "ann@example.com", "consent": "yes", "utm_source": "ads\x00"},
    )
    assert r.status_code == 422 and "utm_source contains a NUL character" in r.text
    assert _emails(any_engine) == []


async def test_an_idn_address_is_one_contact_stored_as_punycode(
    http: httpx.AsyncClient, any_engine: Engine
) -> None:
    for typed in ("jörg@bücher.de", "Jörg@XN--BCHER-KVA.DE"):
        r = await http.post("/forms/newsletter", json={"email": typed, "consent": True})
        assert r.status_code == 202, r.text
    assert _emails(any_engine) == ["jörg@xn--bcher-kva.de"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ann@example.com", "fields": {"name": "a\x00b"}}, "fields.name"),
        ({"email": "ann@example.com", "fields": {"name": "\u202eevil"}}, "fields.name"),
        ({"email": "ann@example.com", "tags": ["vip\x00"]}, "tags.0"),
        ({"email": "a" * 65 + "@example.com"}, "email"),
        ({"email": "ann@example.com", "consent_source": "x\x1b"}, "consent_source"),
    ],
)
async def test_the_admin_api_refuses_them_by_field(
    http: httpx.AsyncClient, any_engine: Engine, body: dict[str, Any], field: str
) -> None:
    auth = make_key(any_engine)
    _refused(await http.post("/api/contacts", json=body, headers=auth), field)
    assert _emails(any_engine) == []
    made = await http.post("/api/contacts", json={"email": "ann@example.com"}, headers=auth)
    assert made.status_code == 201
    r = await http.patch(
        f"/api/contacts/{made.json()['id']}",
        content=b'{"set_fields": {"n": 1e999, "m": "\\ud800"}}',
        headers={**auth, "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert {"set_fields.n", "set_fields.m"} <= {e["field"] for e in r.json()["errors"]}


async def test_csv_import_reports_such_rows_by_line_and_stores_the_rest(
    http: httpx.AsyncClient, any_engine: Engine
) -> None:
    text = (
        "email,first_name\n"
        "ann@example.com,Ann\n"
        "bo@example.com,Bo\x00\n"
        "cy@example.com,\u202eevil\n"
        f"{'d' * 100}@example.com,Dee\n"
    )
    r = await http.post(
        "/api/contacts/import",
        content=text.encode(),
        headers={**make_key(any_engine), "content-type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["created"], report["updated"]) == (1, 0)
    assert [(p["line"], p["reason"].split(" ")[0]) for p in report["invalid"]] == [
        (3, "first_name"),
        (4, "first_name"),
        (5, "The"),
    ]
    assert _emails(any_engine) == ["ann@example.com"]
