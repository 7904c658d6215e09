"""``/api/contacts`` over HTTP against the real app and database: search, create, change, erase."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, Event, Message
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


@pytest.fixture
def auth(engine: Engine) -> dict[str, str]:
    return make_key(engine)


async def _create(http: httpx.AsyncClient, auth: dict[str, str], **body: object) -> dict:  # type: ignore[type-arg]
    r = await http.post("/api/contacts", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_create_records_consent_and_change_events(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    body = await _create(
        http,
        auth,
        email=" Ann@Example.COM ",
        fields={"first_name": "Ann", "age": 41},
        tags=["b2b-lead"],
        consent=True,
        consent_ip="192.0.2.7",
    )
    assert body["email"] == "ann@example.com" and body["tags"] == ["b2b-lead"]
    assert body["fields"] == {"first_name": "Ann", "age": 41}
    assert body["consent_source"].startswith("api:drip_") and body["consent_at"]
    with session_scope(engine) as s:
        types = sorted((e.type, e.name) for e in s.exec(select(Event)))
        contact = s.get(Contact, body["id"])
    assert types == [
        ("consent", "given"),
        ("field_changed", "age"),
        ("field_changed", "first_name"),
        ("tag_added", "b2b-lead"),
    ]
    assert contact is not None and contact.consent_ip == "192.0.2.7"
    assert body["marketing_consent"] == "given" and body["consent_ip"] == "192.0.2.7"
    again = await http.post("/api/contacts", json={"email": "ann@example.com"}, headers=auth)
    assert again.status_code == 409 and again.json()["contact_id"] == body["id"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-email"},
        {"email": "a@example.com", "fields": {"First Name": "x"}},
        {"email": "a@example.com", "fields": {"x": {"nested": 1}}},
        {"email": "a@example.com", "tags": [""]},
        {"email": "a@example.com", "consent_ip": "nope"},
        {"email": "a@example.com", "unknown": 1},
        # too long as text must not be read as a number or a flag: never a silent change
        {"email": "a@example.com", "fields": {"code": "0" * 2001}},
        {"email": "a@example.com", "fields": {"code": "1" * 2001}},
    ],
)
async def test_bad_bodies_are_422_problem(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine, body: dict[str, object]
) -> None:
    r = await http.post("/api/contacts", json=body, headers=auth)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON
    assert r.json()["errors"]
    with session_scope(engine) as s:
        assert s.exec(select(Contact)).all() == []


async def test_search_filters_and_paginates(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for i in range(5):
        await _create(
            http, auth, email=f"p{i}@example.com", tags=["vip"] if i % 2 else [], fields={"n": i}
        )
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/api/contacts", params=params, headers=auth)).json()
        seen += [c["email"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p{i}@example.com" for i in range(5)]

    async def emails(**params: str) -> list[str]:
        r = await http.get("/api/contacts", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [c["email"] for c in r.json()["items"]]

    assert await emails(tag="vip") == ["p1@example.com", "p3@example.com"]
    assert await emails(email="P2@example.com") == ["p2@example.com"]
    assert await emails(q="p4") == ["p4@example.com"]
    assert await emails(where="contact.n >= 3") == ["p3@example.com", "p4@example.com"]
    assert await emails(status="unsubscribed") == []
    for bad in ({"cursor": "garbage"}, {"where": "contact.score >>"}, {"limit": 0}):
        r = await http.get("/api/contacts", params=bad, headers=auth)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON


async def test_get_patch_and_unsubscribe(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    created = await _create(http, auth, email="bob@example.com", tags=["a"])
    url = f"/api/contacts/{created['id']}"
    r = await http.patch(
        url,
        json={"add_tags": ["b"], "remove_tags": ["a"], "set_fields": {"plan": "pro"}},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["b"] and r.json()["fields"] == {"plan": "pro"}
    r = await http.patch(url, json={"status": "unsubscribed"}, headers=auth)
    assert r.json()["status"] == "unsubscribed"
    assert (await http.patch(url, json={"status": "subscribed"}, headers=auth)).status_code == 422
    assert (await http.get(url, headers=auth)).json()["status"] == "unsubscribed"
    with session_scope(engine) as s:
        types = [e.type for e in s.exec(select(Event).where(Event.contact_id == created["id"]))]
    assert types.count("unsubscribe") == 1 and "tag_added" in types
    for missing in ("/api/contacts/999", "/api/contacts/999/events"):
        r = await http.get(missing, headers=auth)
        assert r.status_code == 404 and r.headers["content-type"] == PROBLEM_JSON


async def test_erase_removes_personal_data_and_keeps_an_audit_event(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    created = await _create(
        http,
        auth,
        email="eve@example.com",
        fields={"first_name": "Eve"},
        tags=["x"],
        consent=True,
        consent_ip="192.0.2.9",
    )
    cid = created["id"]
    with session_scope(engine) as s:
        repository.record_event(
            s, contact_id=cid, type="open", dedupe_key="o1", properties={"user_agent": "Eve's"}
        )
        s.add(
            Message(
                id="m1",
                key="k1",
                contact_id=cid,
                campaign_id="welcome",
                step_id="welcome",
                workflow_id="w",
                template="welcome",
                subject="Hello Eve",
                open_token="t1",
                error="550 eve@example.com unknown",
            )
        )
    r = await http.delete(f"/api/contacts/{cid}", headers=auth)
    assert r.status_code == 200, r.text
    # the consent record's event (with its IP), the open, two change events
    assert r.json()["erased_now"] is True and r.json()["events_scrubbed"] == 4
    body = (await http.get(f"/api/contacts/{cid}", headers=auth)).json()
    assert body["erased"] is True and body["email"] == f"erased-{cid}@invalid"
    assert body["fields"] == {} and body["tags"] == [] and body["status"] == "unsubscribed"
    found = await http.get("/api/contacts", params={"email": "eve@example.com"}, headers=auth)
    assert found.json()["items"] == []
    with session_scope(engine) as s:
        events = s.exec(select(Event).where(Event.contact_id == cid)).all()
        message = s.get(Message, "m1")
        contact = s.get(Contact, cid)
    assert all(e.properties == {} for e in events)
    assert {"erased", "unsubscribe"} <= {e.type for e in events}
    assert message is not None and message.subject == "" and message.error is None
    assert contact is not None and contact.consent_ip is None
    dump = repr([(e.name, e.properties, e.source) for e in events]) + repr(
        (contact.email, contact.fields, contact.tags, contact.consent_ip)
    )
    assert "eve" not in dump.lower()
    # erasing again changes nothing; changing an erased contact is refused
    again = await http.delete(f"/api/contacts/{cid}", headers=auth)
    assert again.status_code == 200 and again.json()["erased_now"] is False
    r = await http.patch(f"/api/contacts/{cid}", json={"add_tags": ["y"]}, headers=auth)
    assert r.status_code == 409
    # the address is free again: a new consent makes a new contact
    assert (await _create(http, auth, email="eve@example.com"))["id"] != cid


async def test_events_newest_first_with_type_filter(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    created = await _create(http, auth, email="dan@example.com")
    with session_scope(engine) as s:
        for i in range(3):
            repository.record_event(
                s, contact_id=created["id"], type="event", name=f"e{i}", dedupe_key=f"d{i}"
            )
    url = f"/api/contacts/{created['id']}/events"
    first = (await http.get(url, params={"limit": 2}, headers=auth)).json()
    assert [e["name"] for e in first["items"]] == ["e2", "e1"]
    rest = (await http.get(url, params={"cursor": first["next_cursor"]}, headers=auth)).json()
    assert [e["name"] for e in rest["items"]] == ["e0"] and rest["next_cursor"] is None
    only = (await http.get(url, params={"type": "tag_added"}, headers=auth)).json()
    assert only["items"] == []
