"""The Segment-compatible events API over HTTP, against the real app and SQLite; the routing
tests add a real Temporal (time-skipping server) and a journey worker."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import Contact, Enrolment, Event
from drip.settings import Settings
from tests.engine_support import workspace_with
from tests.support import api_client, running_stack
from webhooks.problems import PROBLEM_JSON
from webhooks.routes._segment_payloads import drip_event_name, normalise_properties

KEY = "wk_test_123"


def _auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"write_keys": [SecretStr(KEY), SecretStr("wk_rotated")]})


@pytest.fixture
async def http(
    keyed: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(keyed, workspace, engine) as client:
        client.headers.update(_auth())
        yield client


def _events(engine: Engine) -> list[Event]:
    with session_scope(engine) as s:
        return list(s.exec(select(Event).order_by(col(Event.id))).all())


def _contacts(engine: Engine) -> list[Contact]:
    with session_scope(engine) as s:
        return list(s.exec(select(Contact).order_by(col(Contact.id))).all())


def _identify(email: str = "ann@example.com", user: str = "u-1") -> dict[str, Any]:
    return {
        "userId": user,
        "traits": {"email": email, "firstName": "Ann"},
        "messageId": str(uuid.uuid4()),
    }


async def test_identify_then_track_by_user_id(http: httpx.AsyncClient, engine: Engine) -> None:
    r = await http.post("/v1/identify", json=_identify())
    assert r.status_code == 200 and r.json() == {"success": True}
    [contact] = _contacts(engine)
    assert contact.email == "ann@example.com"
    assert contact.fields == {"first_name": "Ann", "user_id": "u-1"}
    assert _events(engine) == []  # identify records no event

    r = await http.post(
        "/v1/track",
        json={
            "userId": "u-1",
            "event": "Cart Abandoned",
            "properties": {"cart_id": "c9"},
            "messageId": "m-1",
            "timestamp": "2026-01-01T10:00:00Z",
            "sentAt": "2026-01-01T10:00:00Z",
        },
    )
    assert r.status_code == 200
    [event] = _events(engine)
    assert (event.contact_id, event.type, event.name) == (contact.id, "event", "cart_abandoned")
    assert event.properties == {"cart_id": "c9"}
    assert event.dedupe_key == "segment:m-1" and event.source == "segment:track"


async def test_track_with_context_email_creates_the_contact_and_page_is_stored(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    r = await http.post(
        "/v1/track",
        json={
            "anonymousId": "anon-7",
            "event": "checkout",
            "context": {"traits": {"email": "Bo@Example.com"}},
        },
    )
    assert r.status_code == 200
    [contact] = _contacts(engine)
    assert contact.email == "bo@example.com" and contact.fields == {"anonymous_id": "anon-7"}
    r = await http.post(
        "/v1/page",
        json={"anonymousId": "anon-7", "name": "Tents", "properties": {"path": "/tents"}},
    )
    assert r.status_code == 200
    assert [(e.type, e.name, e.properties) for e in _events(engine)] == [
        ("event", "checkout", {}),
        ("page", "Tents", {"path": "/tents"}),
    ]


async def test_unknown_users_are_accepted_and_ignored(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    r = await http.post("/v1/track", json={"userId": "nobody", "event": "purchase"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert _contacts(engine) == [] and _events(engine) == []


async def test_batch_stores_each_message_once(http: httpx.AsyncClient, engine: Engine) -> None:
    body = {
        "batch": [
            {"type": "identify", **_identify()},
            {
                "type": "track",
                "userId": "u-1",
                "event": "Order Completed",
                "messageId": "o1",
                "properties": {"total": "120.50", "products": [{"sku": "t1", "category": "tents"}]},
            },
            {"type": "page", "userId": "u-1", "messageId": "p1"},
            {"type": "group", "userId": "u-1", "groupId": "g"},
            {"type": "alias", "userId": "u-1", "previousId": "anon"},
        ]
    }
    for _ in range(2):
        r = await http.post("/v1/batch", json=body)
        assert r.status_code == 200 and r.json() == {"success": True}
    purchase, page = _events(engine)
    assert (purchase.type, purchase.name) == ("event", "purchase")
    assert purchase.properties["amount"] == 120.5
    assert purchase.properties["category"] == "tents"
    assert purchase.properties["items"] == [{"sku": "t1", "category": "tents"}]
    assert page.type == "page"


async def test_write_key_in_the_body_and_a_rotated_key(
    keyed: Settings, workspace: Workspace, engine: Engine
) -> None:
    async with api_client(keyed, workspace, engine) as client:
        r = await client.post("/v1/identify", json={**_identify(), "writeKey": KEY})
        assert r.status_code == 200
        r = await client.post("/v1/identify", json=_identify(), headers=_auth("wk_rotated"))
        assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, _auth("wrong"), {"authorization": "Basic !!!notbase64"}, {"authorization": "Bearer x"}],
)
async def test_a_wrong_or_missing_key_is_401_with_a_challenge(
    keyed: Settings, workspace: Workspace, engine: Engine, headers: dict[str, str]
) -> None:
    async with api_client(keyed, workspace, engine) as client:
        for path, body in [("/v1/identify", _identify()), ("/v1/batch", {"batch": "junk"})]:
            r = await client.post(path, json={**body, "writeKey": "nope"}, headers=headers)
            assert r.status_code == 401, r.text
            assert r.headers["content-type"] == PROBLEM_JSON
            assert r.headers["www-authenticate"].startswith('Basic realm="drip"')
    assert _contacts(engine) == []


async def test_without_write_keys_the_api_is_off(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    async with api_client(settings, workspace, engine) as client:
        r = await client.post("/v1/track", json={"userId": "u", "event": "x"}, headers=_auth())
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM_JSON


async def test_bodies_over_segments_limits_are_413(http: httpx.AsyncClient) -> None:
    big = {"userId": "u", "event": "x", "properties": {"blob": "x" * 33 * 1024}}
    r = await http.post("/v1/track", json=big)
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON
    # a batch may be bigger, up to 500 KB
    r = await http.post("/v1/batch", json={"batch": [{**big, "type": "track"}]})
    assert r.status_code == 200
    r = await http.post("/v1/batch", json={"batch": [{**big, "type": "track"}] * 16})
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(40):
            yield b"x" * 1024

    r = await http.post("/v1/track", content=chunks())
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/track", b"{not json"),
        ("/v1/track", b"[1, 2]"),
        ("/v1/track", b"\xff\xfe"),
        ("/v1/track", b'{"userId": "u"}'),  # no event
        ("/v1/track", b'{"event": "x"}'),  # nobody
        ("/v1/track", b'{"userId": {"a": 1}, "event": "x"}'),
        ("/v1/track", b'{"userId": "u", "event": "x", "properties": []}'),
        ("/v1/identify", b'{"userId": "u", "timestamp": "yesterday"}'),
        ("/v1/batch", b'{"batch": [{"type": "nope", "userId": "u"}]}'),
        ("/v1/batch", b'{"batch": {}}'),
        ("/v1/track", b'{"userId": "u", "event": "x", "properties": {"a": NaN}}'),
        ("/v1/identify", b'{"userId": "u", "traits": {"email": "a@b.co", "n": -Infinity}}'),
    ],
)
async def test_malformed_bodies_are_422_problems(
    http: httpx.AsyncClient, engine: Engine, path: str, body: bytes
) -> None:
    r = await http.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM_JSON and r.json()["status"] == 422
    assert _events(engine) == []


async def test_absurd_clocks_are_stored_at_our_time(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    assert (await http.post("/v1/identify", json=_identify())).status_code == 200
    for timestamp, sent_at in [
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("0001-01-01T00:00:00+14:00", None),
        ("9999-12-31T23:59:59-14:00", None),
    ]:
        message = {"userId": "u-1", "event": "x", "timestamp": timestamp, "sentAt": sent_at}
        r = await http.post("/v1/track", json=message)
        assert r.status_code == 200, r.text
    assert len(_events(engine)) == 3


def test_event_names_and_purchase_amounts() -> None:
    assert drip_event_name("Order Completed") == "purchase"
    assert drip_event_name("Product Added") == "product_added"
    assert drip_event_name("checkout") == "checkout"
    assert drip_event_name("  ") == "event"
    products = [{"price": 20, "quantity": 2}, {"price": "5.5"}]
    assert normalise_properties("purchase", {"products": products})["amount"] == 45.5
    assert normalise_properties("purchase", {"revenue": 9})["amount"] == 9.0
    assert normalise_properties("purchase", {"total": "NaN"}).get("amount") is None
    assert normalise_properties("signup", {"total": 3}) == {"total": 3}


# --- routed to journeys: real Temporal and a worker -----------------------------------------

BIG_SPENDERS = """\
id: big-spenders
name: Big spenders
trigger:
  event: purchase
  where: 'properties.amount > 100'
steps:
  - id: thanks
    send_email:
      template: welcome
      subject: Thank you
  - id: later
    wait:
      duration: 30d
"""


async def _enrolments(engine: Engine, count: int) -> list[Enrolment]:
    for _ in range(100):
        with session_scope(engine) as s:
            rows = list(s.exec(select(Enrolment).order_by(col(Enrolment.id))).all())
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    return rows


async def test_same_message_id_twice_is_stored_once_and_signalled_once(
    time_env: WorkflowEnvironment, keyed: Settings, engine: Engine, tmp_path: Path
) -> None:
    workspace = workspace_with(tmp_path, BIG_SPENDERS)
    async with running_stack(time_env.client, keyed, engine, workspace) as http:
        http.headers.update(_auth())
        assert (await http.post("/v1/identify", json=_identify())).status_code == 200
        assert (
            await http.post("/v1/identify", json=_identify("cy@example.com", "u-2"))
        ).status_code == 200
        order = {"event": "Order Completed", "properties": {"total": 150}, "messageId": "o-1"}
        for _ in range(2):
            r = await http.post("/v1/track", json={**order, "userId": "u-1"})
            assert r.status_code == 200
        small = {"event": "Order Completed", "properties": {"revenue": 50}, "messageId": "o-2"}
        assert (await http.post("/v1/track", json={**small, "userId": "u-2"})).status_code == 200

        [enrolment] = await _enrolments(engine, 1)
        events = _events(engine)
        history = await time_env.client.get_workflow_handle(enrolment.workflow_id).fetch_history()
    assert [e.dedupe_key for e in events] == ["segment:o-1", "segment:o-2"]
    assert all(e.routed_at is not None for e in events)
    assert events[0].properties["amount"] == 150.0
    ann = _contacts(engine)[0]
    assert enrolment.campaign_id == "big-spenders" and enrolment.contact_id == ann.id
    signals = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert len(signals) == 1


# --- browsers: analytics.js's short paths, text/plain bodies and CORS ----------------------

SHOP = "https://shop.acme.example"


def _browser_call(body: dict[str, Any]) -> dict[str, Any]:
    """What analytics.js's fetch dispatcher sends: JSON as text/plain, the key in the body."""
    return {
        "content": json.dumps({**body, "writeKey": KEY}).encode(),
        "headers": {"content-type": "text/plain", "origin": SHOP},
    }


async def test_analytics_js_text_plain_to_short_paths_records_the_events(
    keyed: Settings, workspace: Workspace, engine: Engine
) -> None:
    async with api_client(keyed, workspace, engine) as client:  # no basic auth: a browser
        r = await client.post("/v1/i", **_browser_call(_identify()))
        assert r.status_code == 200 and r.json() == {"success": True}, r.text
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers
        track = {"userId": "u-1", "event": "Product Added", "messageId": "b-1", "type": "track"}
        r = await client.post("/v1/t", **_browser_call(track))
        assert r.status_code == 200, r.text
        page = {"anonymousId": "a-1", "userId": "u-1", "name": "Tents", "type": "page"}
        assert (await client.post("/v1/p", **_browser_call(page))).status_code == 200
        for short in ("g", "a"):  # group and alias: accepted, nothing stored
            ignored = {"userId": "u-1", "groupId": "g", "previousId": "a-1"}
            assert (await client.post(f"/v1/{short}", **_browser_call(ignored))).status_code == 200
        # the batching dispatcher: {"writeKey", "batch", "sentAt"} to /v1/b
        batch = {
            "batch": [{"type": "track", "userId": "u-1", "event": "checkout", "messageId": "b-2"}],
            "sentAt": "2026-01-01T10:00:00Z",
        }
        r = await client.post("/v1/b", **_browser_call(batch))
        assert r.status_code == 200, r.text
    [contact] = _contacts(engine)
    assert [(e.contact_id, e.type, e.name, e.source) for e in _events(engine)] == [
        (contact.id, "event", "product_added", "segment:track"),
        (contact.id, "page", "Tents", "segment:page"),
        (contact.id, "event", "checkout", "segment:track"),
    ]


async def test_a_text_plain_body_keeps_the_call_limits_and_the_422s(
    keyed: Settings, workspace: Workspace, engine: Engine
) -> None:
    async with api_client(keyed, workspace, engine) as client:
        big = {"userId": "u", "event": "x", "properties": {"blob": "x" * 33 * 1024}}
        r = await client.post("/v1/t", **_browser_call(big))
        assert r.status_code == 413 and r.headers["access-control-allow-origin"] == "*"
        r = await client.post("/v1/t", **_browser_call({"userId": "u"}))  # no event
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON
        assert r.headers["access-control-allow-origin"] == "*"  # the page can read why
        r = await client.post(
            "/v1/t",
            content=b'{"writeKey": "wk_test_123", "userId": "u", "event": "x", "n": NaN}',
            headers={"content-type": "text/plain;charset=UTF-8"},
        )
        assert r.status_code == 422
    assert _events(engine) == []


async def test_a_wrong_write_key_in_a_text_plain_body_is_401_the_page_can_read(
    keyed: Settings, workspace: Workspace, engine: Engine
) -> None:
    async with api_client(keyed, workspace, engine) as client:
        call = _browser_call({"userId": "u-1", "event": "x"})
        call["content"] = json.dumps({"userId": "u-1", "event": "x", "writeKey": "nope"})
        r = await client.post("/v1/t", **call)
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["status"] == 401
    assert r.headers["access-control-allow-origin"] == "*"
    assert _contacts(engine) == [] and _events(engine) == []


@pytest.mark.parametrize("path", ["/v1/t", "/v1/b", "/v1/track", "/v1/batch", "/v1/identify"])
async def test_a_preflight_is_answered_with_cors_headers_and_no_key(
    keyed: Settings, workspace: Workspace, engine: Engine, path: str
) -> None:
    # analytics-next sends Authorization and X-Retry-Count; RudderStack application/json
    asked = "authorization,content-type,x-retry-count"
    preflight = {
        "origin": SHOP,
        "access-control-request-method": "POST",
        "access-control-request-headers": asked,
    }
    async with api_client(keyed, workspace, engine) as client:
        r = await client.options(path, headers=preflight)
        assert r.status_code == 204, r.text
        assert r.headers["access-control-allow-origin"] == "*"
        assert "POST" in r.headers["access-control-allow-methods"]
        assert r.headers["access-control-allow-headers"] == asked
        assert "access-control-allow-credentials" not in r.headers
        # a header list that is not one is not echoed back
        r = await client.options(
            path, headers={**preflight, "access-control-request-headers": "a\x01b"}
        )
        assert (
            r.headers["access-control-allow-headers"]
            == "Authorization, Content-Type, X-Retry-Count"
        )


async def test_browser_paths_stay_out_of_the_openapi_document(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/v1/track", "/v1/batch", "/v1/group", "/v1/alias"} <= paths.keys()
    assert not {"/v1/t", "/v1/b"} & paths.keys()
    assert "options" not in paths["/v1/track"]
