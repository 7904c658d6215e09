"""Answers that say what happened: the right status, one title per status, a page for a person's
form post and problem JSON for a program, a true ``Allow``, and an OpenAPI document that says
what the code does (schemathesis checks the whole of it in ``test_openapi_fuzz``)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import ContactStatus
from drip.settings import Settings
from emails.links import unsubscribe_token
from tests.support import api_client
from tests.webhooks._admin import make_key
from webhooks.admin._common import encode_cursor
from webhooks.main import create_app
from webhooks.openapi import CURSOR_PATTERN
from webhooks.problems import PROBLEM_JSON

KEY = "wk_answers"
SEGMENT = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
CAP = 2000  # DRIP_MAX_BODY_BYTES of the capped app


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    keyed = settings.model_copy(
        update={"write_keys": [SecretStr(KEY)], "max_body_bytes": CAP, "env": "dev"}
    )
    async with api_client(keyed, workspace, engine) as client:
        yield client


# --- forms: 415 and 422 that say what is wrong -------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "application/xml"}, {"content-type": "text/plain"}, {}],
    ids=["xml", "text", "no-content-type"],
)
async def test_a_form_post_that_is_not_a_form_is_415(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = b"<subscribe><email>x@example.com</email></subscribe>" if headers else b""
    r = await http.post("/forms/newsletter", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["title"] == "Unsupported Media Type"
    assert "Email address is required" not in r.text


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[1, 2]", "an array"), (b'"x@example.com"', "a string"), (b"3", "a number")],
)
async def test_json_that_is_not_an_object_is_named_for_what_it_is(
    http: httpx.AsyncClient, body: bytes, kind: str
) -> None:
    r = await http.post(
        "/forms/newsletter", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["detail"] == f"the body must be a JSON object, not {kind}"
    assert "not valid JSON" not in r.text


# --- 413: one title, and a page for a person's form post ---------------------------------------


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 500):
        yield b"email=x%40example.com&consent=yes&pad=" + b"x" * 462


async def test_413_has_one_title_however_the_cap_is_met(http: httpx.AsyncClient) -> None:
    """By Content-Length (the middleware refuses at once) or while streaming (the route's read
    raises): the same status, the same title."""
    declared = await http.post(
        "/forms/newsletter",
        content=b"{" + b" " * CAP + b"}",
        headers={"content-type": "application/json"},
    )
    streamed = await http.post(
        "/forms/newsletter",
        content=_chunks(CAP * 2),
        headers={"content-type": "application/json"},
    )
    for r in (declared, streamed):
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON
        assert r.json()["title"] == "Content Too Large"


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_browser_form_post_over_the_cap_gets_a_page(
    http: httpx.AsyncClient, streamed: bool
) -> None:
    content: Any = _chunks(CAP * 2) if streamed else b"email=x%40example.com&pad=" + b"x" * CAP
    r = await http.post(
        "/forms/newsletter",
        content=content,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"},
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("text/html")
    assert "Content Too Large" in r.text and f"limited to {CAP} bytes" in r.text


async def test_fastapis_422_is_a_page_for_a_form_post_and_json_for_a_program(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    admin = make_key(engine)
    r = await http.post("/api/contacts", json={"email": 5}, headers=admin)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["title"] == "Invalid request" and r.json()["errors"]
    page = await http.post("/api/contacts", data={"email": "x"}, headers=admin)
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert "Invalid request" in page.text and "the request has invalid fields" in page.text


# --- methods: HEAD on the unsubscribe link, a true Allow, no 422 for a 405 ---------------------


async def test_head_on_the_unsubscribe_link_answers_like_get_and_changes_nothing(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    with session_scope(engine) as session:
        contact, _ = repository.upsert_contact(session, "head@example.com", {})
        contact_id = contact.id
    assert contact_id is not None
    token = unsubscribe_token(settings.secret(), contact_id)
    r = await http.head(f"/u/{token}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"].startswith("text/html")
    assert (await http.head("/u/garbage")).status_code == 404
    with session_scope(engine) as session:
        assert repository.get_contact(session, contact_id).status == ContactStatus.subscribed


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/contacts", {"GET", "POST"}),
        ("PUT", "/api/contacts/1", {"GET", "PATCH", "DELETE"}),
        ("PATCH", "/api/contacts/export", {"GET"}),
        ("PATCH", "/api/contacts/import", {"POST"}),
        ("DELETE", "/forms/newsletter", {"GET", "POST"}),
        ("PUT", "/u/sometoken", {"GET", "HEAD", "POST"}),
        ("POST", "/static/dashboard.css", {"GET", "HEAD"}),  # Starlette's own 405 had no Allow
    ],
)
async def test_405_names_every_method_of_the_path(
    http: httpx.AsyncClient, engine: Engine, method: str, path: str, allowed: set[str]
) -> None:
    r = await http.request(method, path, headers=make_key(engine))
    assert r.status_code == 405, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


async def test_a_consent_ip_must_be_written_as_an_address(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    """Not the number 0 read as 0.0.0.0: the document says a string, and so does the code."""
    body = {"email": "ip@example.com", "consent": True, "consent_ip": 0}
    r = await http.post("/api/contacts", json=body, headers=make_key(engine))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["consent_ip"]


# --- the events API: what the document says is what the code takes ----------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"userId": "u1", "event": "x", "sentAt": 0},
        {"userId": "u1", "event": "x", "timestamp": 1700000000},
        {"anonymousId": "0" * 201, "event": "x"},
    ],
    ids=["sentAt-number", "timestamp-number", "anonymousId-digits-too-long"],
)
async def test_segment_refuses_what_its_schema_refuses(
    http: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    r = await http.post("/v1/track", json=message, headers=SEGMENT)
    assert r.status_code == 422, r.text
    batch = await http.post("/v1/batch", json={"batch": [], "sentAt": 0}, headers=SEGMENT)
    assert batch.status_code == 422, batch.text


async def test_segment_still_takes_iso_times_and_numeric_user_ids(
    http: httpx.AsyncClient,
) -> None:
    message = {"userId": 42, "event": "x", "sentAt": "2026-12-06T10:00:00Z"}
    assert (await http.post("/v1/track", json=message, headers=SEGMENT)).status_code == 200


# --- the OpenAPI document ----------------------------------------------------------------------


def _document(settings: Settings, workspace: Workspace, engine: Engine) -> dict[str, Any]:
    app = create_app(settings.model_copy(update={"env": "dev"}), workspace, engine=engine)
    return app.openapi()


def test_the_document_states_the_rules_the_code_enforces(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    doc = _document(settings, workspace, engine)
    schemas, paths = doc["components"]["schemas"], doc["paths"]
    # one of userId, anonymousId, not null
    for name in ("Track", "Identify", "Page", "IgnoredCall"):
        rule = schemas[name]["anyOf"]
        assert [r["required"] for r in rule] == [["userId"], ["anonymousId"]], name
    # consent_ip: an IPv4 or IPv6 address, or null
    ip = schemas["ContactCreate"]["properties"]["consent_ip"]["anyOf"]
    formats = [{"type": "string", "format": f} for f in ("ipv4", "ipv6")]
    assert ip == [*formats, {"type": "null"}] or ip == [{"anyOf": formats}, {"type": "null"}]
    # merge_id: within JSON's exact integers, as the code checks
    assert schemas["MergeRequest"]["properties"]["merge_id"]["maximum"] == 2**53 - 1
    # the mailbox's message pages document their 404
    for suffix in ("", "/html", "/text", "/raw"):
        answers = paths[f"/dev/mailbox/{{name}}{suffix}"]["get"]["responses"]
        assert PROBLEM_JSON in answers["404"]["content"]
    # a form post documents 413 and 415
    assert {"413", "415"} <= set(paths["/forms/{form_id}"]["post"]["responses"])
    # the contact routes keep their documented path (``:int`` is routing only)
    assert "/api/contacts/{contact_id}" in paths
    assert not any(":" in path for path in paths)


def test_the_cursor_pattern_is_exactly_the_cursors_the_api_makes(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    doc = _document(settings, workspace, engine)
    cursors = [
        p["schema"]
        for path, ops in doc["paths"].items()
        if path.startswith("/api/") and path != "/api/sales/alerts"
        for op in ops.values()
        for p in op.get("parameters", [])
        if p["name"] == "cursor"
    ]
    assert len(cursors) >= 3 and all(c["pattern"] == CURSOR_PATTERN for c in cursors)
    pattern = re.compile(CURSOR_PATTERN)
    for last_id in (0, 1, 9, 10, 99, 100, 12_345, 987_654_321, 10**18 - 1):
        assert pattern.match(encode_cursor(last_id)), last_id
    for bogus in ("0", "aWQ6", "aWQ6Ow", encode_cursor(10**18), "eDox", "aWQ6MTIz="):
        assert not pattern.match(bogus), bogus
