"""API keys over HTTP: 401 without a valid key, 403 without the scope, and the OpenAPI contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import apikeys
from contacts.db import session_scope
from contacts.models import ApiKey
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer drip_not-a-key"},
        {"Authorization": "Bearer something-else"},
    ],
)
async def test_missing_or_unknown_key_is_401_problem(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await http.get("/api/contacts", headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["status"] == 401


async def test_revoked_key_is_401(http: httpx.AsyncClient, engine: Engine) -> None:
    headers = make_key(engine, "contacts:read")
    assert (await http.get("/api/contacts", headers=headers)).status_code == 200
    with session_scope(engine) as s:
        (row,) = apikeys.list_keys(s)
        apikeys.revoke_key(s, row.prefix)
    r = await http.get("/api/contacts", headers=headers)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_key_without_the_scope_is_403_problem(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    headers = make_key(engine, "events:read")
    r = await http.get("/api/contacts", headers=headers)
    assert r.status_code == 403
    assert r.headers["content-type"] == PROBLEM_JSON
    assert "contacts:read" in r.json()["detail"]
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    # a write needs contacts:write, not contacts:read, and an erase needs contacts:erase
    reader = make_key(engine, "contacts:read", "contacts:write")
    assert (await http.delete("/api/contacts/1", headers=reader)).status_code == 403


async def test_auth_comes_before_the_body(http: httpx.AsyncClient, engine: Engine) -> None:
    # no key and a malformed body: 401, not a validation error that would tell the schema
    r = await http.post(
        "/api/contacts", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 401


async def test_keys_are_stored_hashed_and_last_use_recorded(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    headers = make_key(engine, "contacts:read")
    key = headers["Authorization"].removeprefix("Bearer ")
    assert key.startswith("drip_") and len(key) > 40
    await http.get("/api/contacts", headers=headers)
    with session_scope(engine) as s:
        (row,) = s.exec(select(ApiKey)).all()
    assert row.key_hash == apikeys.hash_key(key) and key not in (row.key_hash, row.prefix)
    assert key.startswith(row.prefix) and row.last_used_at is not None


def test_unknown_scopes_are_refused(engine: Engine) -> None:
    with session_scope(engine) as s, pytest.raises(apikeys.InvalidScope, match="contacts:read"):
        apikeys.create_key(s, "x", ["contacts:admin"])


async def test_bodies_over_the_cap_are_413_problem(http: httpx.AsyncClient, engine: Engine) -> None:
    headers = make_key(engine)
    big = b'{"email": "a@example.com", "fields": {"x": "' + b"a" * 1_100_000 + b'"}}'
    r = await http.post(
        "/api/contacts", content=big, headers={**headers, "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for _ in range(30):
            yield b"a" * 1_000_000

    r = await http.post(
        "/api/contacts/import", content=chunks(), headers={**headers, "content-type": "text/csv"}
    )
    assert r.status_code == 413


async def test_openapi_documents_every_admin_route_with_security_and_problems(
    http: httpx.AsyncClient,
) -> None:
    doc = (await http.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "drip_<key>",
        "description": "An API key made with `drip apikeys create NAME --scope ...`.",
    }
    operations = {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        if path.startswith("/api/")
        for method, op in item.items()
    }
    assert set(operations) == {
        ("GET", "/api/contacts"),
        ("POST", "/api/contacts"),
        ("GET", "/api/contacts/{contact_id}"),
        ("PATCH", "/api/contacts/{contact_id}"),
        ("DELETE", "/api/contacts/{contact_id}"),
        ("POST", "/api/contacts/{contact_id}/merge"),
        ("POST", "/api/contacts/{contact_id}/consent"),
        ("POST", "/api/contacts/import"),
        ("GET", "/api/contacts/export"),
        ("GET", "/api/contacts/{contact_id}/events"),
        ("GET", "/api/contacts/{contact_id}/sales"),
        ("PUT", "/api/contacts/{contact_id}/owner"),
        ("POST", "/api/contacts/{contact_id}/stage"),
        ("GET", "/api/sales/teams"),
        ("POST", "/api/sales/teams"),
        ("GET", "/api/sales/reps"),
        ("POST", "/api/sales/reps"),
        ("PATCH", "/api/sales/reps/{email}"),
        ("GET", "/api/sales/alerts"),
        ("POST", "/api/sales/alerts/{alert_id}/ack"),
        ("GET", "/api/campaigns"),
        ("GET", "/api/campaigns/{campaign_id}/stats"),
        ("GET", "/api/journeys"),
        ("POST", "/api/journeys/{journey_id}/cancel"),
        ("GET", "/api/messages/interrupted"),
        ("POST", "/api/messages/{message_id}/resend"),
        ("POST", "/api/messages"),
        ("POST", "/api/messages/batch"),
        ("GET", "/api/messages/{message_id}"),
        ("GET", "/api/broadcasts"),
        ("GET", "/api/broadcasts/{broadcast_id}"),
        ("POST", "/api/broadcasts/{broadcast_id}/dry-run"),
        ("POST", "/api/broadcasts/{broadcast_id}/send"),
        ("POST", "/api/broadcasts/{broadcast_id}/pause"),
        ("POST", "/api/broadcasts/{broadcast_id}/resume"),
        ("POST", "/api/broadcasts/{broadcast_id}/cancel"),
        ("GET", "/api/suppressions"),
        ("POST", "/api/suppressions"),
        ("DELETE", "/api/suppressions/{entry}"),
        ("POST", "/api/suppressions/import"),
        ("GET", "/api/suppressions/export"),
        ("GET", "/api/webhooks"),
        ("POST", "/api/webhooks"),
        ("GET", "/api/webhooks/{endpoint_id}"),
        ("PATCH", "/api/webhooks/{endpoint_id}"),
        ("DELETE", "/api/webhooks/{endpoint_id}"),
        ("POST", "/api/webhooks/{endpoint_id}/rotate-secret"),
        ("GET", "/api/webhooks/{endpoint_id}/deliveries"),
        ("GET", "/api/webhooks/deliveries/{delivery_id}"),
        ("POST", "/api/webhooks/deliveries/{delivery_id}/resend"),
    }
    for key, op in operations.items():
        assert op["security"] == [{"ApiKey": []}], key
        for status in ("401", "403", "422"):
            content = op["responses"][status]["content"]
            assert PROBLEM_JSON in content, (key, status)
        success = [s for s in op["responses"] if s.startswith("2")]
        assert len(success) == 1, key
