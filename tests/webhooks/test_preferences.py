"""The preference page behind the unsubscribe link: topics, a 30-day pause that holds sends back
until it ends, and the unsubscribe button; a GET never changes anything."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import repository
from contacts.consent import TOPIC_LEFT_TAG, TOPIC_TAG
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Event, Message, utcnow
from drip.settings import Settings
from emails.links import unsubscribe_token
from tests.support import SmtpServer, running_stack


def _contact(engine: Engine, email: str = "pia@example.com") -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
        assert contact.id is not None
        return contact.id


def _get(engine: Engine, contact_id: int) -> Contact:
    with session_scope(engine) as s:
        return repository.get_contact(s, contact_id)


async def test_the_page_offers_topics_pause_and_unsubscribe_and_changes_nothing(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    token = unsubscribe_token(settings.secret(), contact_id)
    r = await http.get(f"/u/{token}")
    assert r.status_code == 200
    for label in ("Trail guides and route ideas", "Gear reviews and tips", "Pause for 30 days"):
        assert label in r.text
    assert f'action="/u/{token}/topics"' in r.text and f'action="/u/{token}/pause"' in r.text
    assert f'action="/u/{token}"' in r.text and "Unsubscribe me" in r.text
    before = _get(engine, contact_id)
    assert (before.status, before.tags, before.paused_until) == ("subscribed", [], None)


async def test_choosing_topics_sets_topic_tags(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    token = unsubscribe_token(settings.secret(), contact_id)
    r = await http.post(f"/u/{token}/topics", data={"topic": ["trails", "deals", "not-a-topic"]})
    assert r.status_code == 200 and "Your topics are saved." in r.text
    assert 'value="trails" checked' in r.text and 'value="gear">' in r.text
    assert sorted(_get(engine, contact_id).tags) == [
        "topic-left:gear",
        "topic:deals",
        "topic:trails",
    ]
    await http.post(f"/u/{token}/topics", data={"topic": "gear"})
    assert sorted(_get(engine, contact_id).tags) == [
        "topic-left:deals",
        "topic-left:trails",
        "topic:gear",
    ]
    await http.post(f"/u/{token}/topics", data={})
    assert sorted(_get(engine, contact_id).tags) == [
        "topic-left:deals",
        "topic-left:gear",
        "topic-left:trails",
    ]
    with session_scope(engine) as s:
        added = s.exec(select(Event.name).where(Event.type == "tag_added")).all()
    assert sorted(added) == [  # gear was left, chosen, then left again
        "topic-left:deals",
        "topic-left:gear",
        "topic-left:gear",
        "topic-left:trails",
        "topic:deals",
        "topic:gear",
        "topic:trails",
    ]


async def test_unticking_a_topic_records_that_the_contact_left_it(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    """``topic-left:<id>`` tells "said no on the page" from "never chose": a broadcast to the
    topic skips the first only. Ticking the topic again takes the mark away."""
    contact_id = _contact(engine)
    with session_scope(engine) as s:  # chose deals at sign-up, has never seen the page
        repository.update_contact(s, contact_id, add_tags=[f"{TOPIC_TAG}deals"])
    token = unsubscribe_token(settings.secret(), contact_id)
    page = await http.get(f"/u/{token}")
    assert 'value="deals" checked' in page.text
    assert _get(engine, contact_id).tags == ["topic:deals"]  # looking changes nothing

    r = await http.post(f"/u/{token}/topics", data={"topic": ["trails", "gear"]})
    assert r.status_code == 200 and 'value="deals">' in r.text  # shown unticked
    tags = set(_get(engine, contact_id).tags)
    assert f"{TOPIC_LEFT_TAG}deals" in tags and "topic:deals" not in tags
    assert not {f"{TOPIC_LEFT_TAG}trails", f"{TOPIC_LEFT_TAG}gear"} & tags

    r = await http.post(f"/u/{token}/topics", data={"topic": ["deals", "trails", "gear"]})
    assert r.status_code == 200 and 'value="deals" checked' in r.text
    assert sorted(_get(engine, contact_id).tags) == ["topic:deals", "topic:gear", "topic:trails"]


async def test_pause_and_resume(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    token = unsubscribe_token(settings.secret(), contact_id)
    r = await http.post(f"/u/{token}/pause", data={"action": "pause"})
    assert r.status_code == 200 and "paused for 30 days" in r.text
    assert "Resume my emails now" in r.text
    until = _get(engine, contact_id).paused_until
    assert until is not None
    assert timedelta(days=29, hours=23) < until - utcnow() <= timedelta(days=30)
    r = await http.post(f"/u/{token}/pause", data={"action": "resume"})
    assert r.status_code == 200 and _get(engine, contact_id).paused_until is None
    assert _get(engine, contact_id).status == ContactStatus.subscribed


async def test_bad_posts_and_tokens_are_4xx_pages(
    http: httpx.AsyncClient, settings: Settings, engine: Engine
) -> None:
    contact_id = _contact(engine)
    token = unsubscribe_token(settings.secret(), contact_id)
    for data in ({}, {"action": "forever"}):
        r = await http.post(f"/u/{token}/pause", data=data)
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    forged = unsubscribe_token(b"another-secret-entirely-0123456789", contact_id)
    nobody = unsubscribe_token(settings.secret(), contact_id + 1000)
    for bad in (forged, nobody, "garbage"):
        assert (await http.post(f"/u/{bad}/pause", data={"action": "pause"})).status_code == 404
        assert (await http.post(f"/u/{bad}/topics", data={"topic": "gear"})).status_code == 404
    r = await http.post(
        f"/u/{token}/topics", content=b"\xff\xfe", headers={"content-type": "multipart/form-data"}
    )
    assert 400 <= r.status_code < 500
    assert _get(engine, contact_id).paused_until is None and _get(engine, contact_id).tags == []


async def test_a_paused_contacts_email_waits_until_the_pause_ends(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    contact_id = _contact(engine, "una@example.com")
    token = unsubscribe_token(settings.secret(), contact_id)
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        assert (await http.post(f"/u/{token}/pause", data={"action": "pause"})).status_code == 200
        r = await http.post("/forms/newsletter", json={"email": "una@example.com", "consent": True})
        assert r.status_code == 202
        # the journey started, and its welcome waits for the pause: nothing reserved, nothing sent
        with session_scope(engine) as s:
            (enrolment,) = repository.list_enrolments(s)
        handle = time_env.client.get_workflow_handle(enrolment.workflow_id)
        assert smtp.mailbox.messages == []
        await time_env.sleep(timedelta(days=29))
        assert smtp.mailbox.messages == []
        with session_scope(engine) as s:
            assert s.exec(select(Message)).all() == []
        await time_env.sleep(timedelta(days=1, hours=2))
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1)
        assert smtp.mailbox.subjects() == ["Welcome to Acme Outdoor, friend"]
        await handle.cancel()
