"""``POST /api/contacts/{id}/consent`` over HTTP against the real app and SQLite: it records
marketing consent once with its source, time and IP, and answers bad input with problem JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import repository
from contacts.db import session_scope
from contacts.models import Event, MarketingConsent
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


@pytest.fixture
def auth(engine: Engine) -> dict[str, str]:
    return make_key(engine, "contacts:read", "contacts:write")


def _shop_contact(engine: Engine, email: str = "ann@example.com") -> int:
    """A contact as the events API creates it: no marketing consent."""
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email, created_consent=MarketingConsent.none)
        assert contact.id is not None
        return contact.id


async def test_consent_is_recorded_once_with_its_source_time_and_ip(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    cid = _shop_contact(engine)
    before = (await http.get(f"/api/contacts/{cid}", headers=auth)).json()
    assert (before["marketing_consent"], before["consent_at"]) == ("none", None)
    given = "2026-11-30T18:04:00+01:00"
    r = await http.post(
        f"/api/contacts/{cid}/consent",
        json={"source": "checkout:newsletter-box", "at": given, "ip": "2001:db8::7"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["marketing_consent"], body["consent_source"], body["consent_ip"]) == (
        "given",
        "checkout:newsletter-box",
        "2001:db8::7",
    )
    assert datetime.fromisoformat(body["consent_at"]) == datetime.fromisoformat(given)
    again = await http.post(
        f"/api/contacts/{cid}/consent", json={"source": "phone call"}, headers=auth
    )
    assert again.status_code == 200 and again.json()["consent_source"] == "checkout:newsletter-box"
    with session_scope(engine) as s:
        events = s.exec(select(Event).where(Event.type == "consent")).all()
    assert [(e.name, e.source, e.properties["ip"]) for e in events] == [
        ("given", "checkout:newsletter-box", "2001:db8::7")
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "source"),
        ({"source": ""}, "source"),
        ({"source": "two\nlines"}, "source"),
        ({"source": "x", "ip": "not-an-ip"}, "ip"),
        ({"source": "x", "at": "2026-11-30T18:04:00"}, "at"),  # no time zone: not guessed
        ({"source": "x", "at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, "at"),
        ({"source": "x", "extra": 1}, "extra"),
    ],
)
async def test_bad_consent_is_a_422_problem_and_changes_nothing(
    http: httpx.AsyncClient,
    auth: dict[str, str],
    engine: Engine,
    body: dict,
    field: str,  # type: ignore[type-arg]
) -> None:
    cid = _shop_contact(engine)
    r = await http.post(f"/api/contacts/{cid}/consent", json=body, headers=auth)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON, r.text
    assert field in r.text
    after = (await http.get(f"/api/contacts/{cid}", headers=auth)).json()
    assert after["marketing_consent"] == "none"


async def test_unknown_and_erased_contacts(
    http: httpx.AsyncClient, auth: dict[str, str], engine: Engine
) -> None:
    r = await http.post("/api/contacts/999/consent", json={"source": "x"}, headers=auth)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM_JSON
    cid = _shop_contact(engine)
    erase = make_key(engine, "contacts:erase")
    assert (await http.delete(f"/api/contacts/{cid}", headers=erase)).status_code == 200
    r = await http.post(f"/api/contacts/{cid}/consent", json={"source": "x"}, headers=auth)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM_JSON
    read_only = make_key(engine, "contacts:read")
    r = await http.post(f"/api/contacts/{cid}/consent", json={"source": "x"}, headers=read_only)
    assert r.status_code == 403
