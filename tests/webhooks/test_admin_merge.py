"""``POST /api/contacts/{id}/merge`` over HTTP against the real app and database."""

from __future__ import annotations

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact, Event
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


def _two(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as s:
        keep, _ = repository.upsert_contact(s, "ann@example.com", {"first_name": "Ann"})
        gone, _ = repository.upsert_contact(
            s, "a.nn@gmail.com", {"first_name": "Annie", "city": "Leeds"}
        )
        assert keep.id is not None and gone.id is not None
        repository.update_contact(s, gone.id, add_tags=["hiker"], add_score=3, score_key="s")
        return keep.id, gone.id


async def test_merge_answers_what_moved_and_records_an_audit_event(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    keep, gone = _two(engine)
    auth = make_key(engine, "contacts:write")
    r = await http.post(f"/api/contacts/{keep}/merge", json={"merge_id": gone}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["keep_id"] == keep and body["merge_id"] == gone
    assert body["merged_email"] == "a.nn@gmail.com"
    assert body["fields_filled"] == ["city"]
    assert body["field_conflicts"] == {"first_name": {"kept": "Ann", "merged": "Annie"}}
    assert body["tags_added"] == ["hiker"] and body["score"] == 3
    assert body["journeys_ended"] == [] and body["journeys_cancelled"] is True
    # the duplicate's tag_added and score events moved
    assert body["events_moved"] == 2
    with session_scope(engine) as s:
        audit = s.exec(select(Event).where(Event.type == "merged")).one()
        tomb = s.get(Contact, gone)
    assert audit.contact_id == keep and audit.id == body["audit_event_id"]
    assert audit.source.startswith("api:drip_")
    assert tomb is not None and tomb.email == f"merged-{gone}@invalid"


async def test_merge_problems(http: httpx.AsyncClient, engine: Engine) -> None:
    keep, gone = _two(engine)
    auth = make_key(engine)
    read_only = make_key(engine, "contacts:read")
    url = f"/api/contacts/{keep}/merge"
    r = await http.post(url, json={"merge_id": gone}, headers=read_only)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM_JSON
    assert (await http.post(url, json={"merge_id": gone})).status_code == 401
    for bad in ({}, {"merge_id": 0}, {"merge_id": "x"}, {"merge_id": gone, "extra": 1}):
        r = await http.post(url, json=bad, headers=auth)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON, bad
    r = await http.post(url, json={"merge_id": 999_999}, headers=auth)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM_JSON
    r = await http.post("/api/contacts/999999/merge", json={"merge_id": gone}, headers=auth)
    assert r.status_code == 404
    r = await http.post(url, json={"merge_id": keep}, headers=auth)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM_JSON
    assert (await http.post(url, json={"merge_id": gone}, headers=auth)).status_code == 200
    # merged once: the duplicate is a tombstone now
    r = await http.post(url, json={"merge_id": gone}, headers=auth)
    assert r.status_code == 409 and "merged before" in r.json()["detail"]
