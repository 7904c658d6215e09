"""Tracking a broadcast's emails: the same pixel, click, bot filter and one-click unsubscribe as
a journey's, with every event filed under the broadcast (``properties.broadcast``, ``.variant``).

The outbox rows are written as the broadcast engine writes them (``campaign_id``
``broadcast:<id>``, the variant as step, the send as workflow, key ``<send>:<contact>``); the
hits go through the real app and its hit consumer, the bounces through the signed Mailgun
webhook and ``record_bounce`` (the SMTP refusal's path), the unsubscribe through the link the
renderer puts in the email.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from campaigns.workspace import Workspace
from contacts import repository, rollups
from contacts.db import session_scope
from contacts.models import Contact, ContactStatus, Event, Message
from drip.settings import Settings
from emails.links import click_token
from emails.render import Renderer
from tests.broadcast_support import URLS, sent_email
from tests.support import MAIL_CLIENT
from webhooks.dashboard.campaigns import campaign_rows
from webhooks.esp.mailgun import signature_of
from webhooks.hits import HitWriter
from webhooks.main import create_app
from workflows.deploy import deploy_workspace

SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"esp_mailgun_signing_key": SecretStr(MAILGUN_KEY)})


@pytest.fixture
async def http(
    app_settings: Settings, workspace: Workspace, engine: Engine
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(app_settings, workspace, engine=engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"user-agent": MAIL_CLIENT},
    ) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client
    app.state.hits.close()


async def _flush(http: httpx.AsyncClient) -> None:
    writer: HitWriter = http.app.state.hits  # type: ignore[attr-defined]
    await asyncio.to_thread(writer.flush, everything=True)


def _contact(engine: Engine, email: str) -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
        assert contact.id is not None
        return contact.id


def _sent(engine: Engine, settings: Settings, contact_id: int, **kw: Any) -> Message:
    return sent_email(engine, settings.secret(), contact_id, **kw)


def _events(engine: Engine, type_: str) -> list[Event]:
    with session_scope(engine) as s:
        stmt = select(Event).where(Event.type == type_).order_by(col(Event.id))
        return list(s.exec(stmt).all())


async def test_a_human_open_and_click_of_a_broadcast_are_filed_under_it(
    http: httpx.AsyncClient, engine: Engine, settings: Settings
) -> None:
    contact_id = _contact(engine, "ann@example.com")
    message = _sent(engine, settings, contact_id)
    assert (await http.get(f"/t/o/{message.open_token}.gif")).status_code == 200
    click = click_token(settings.secret(), message.id, 0)
    r = await http.get(f"/t/c/{click}")
    assert r.status_code == 302 and r.headers["location"] == URLS[0]
    await _flush(http)

    [opened] = _events(engine, "open")
    [clicked] = _events(engine, "click")
    for event in (opened, clicked):
        assert (event.contact_id, event.message_id) == (contact_id, message.id)
        assert event.name == "broadcast:black-friday"
        assert event.properties["broadcast"] == "black-friday"
        assert event.properties["variant"] == "b"
        assert event.properties["user_agent"] == MAIL_CLIENT
    assert clicked.properties["url"] == URLS[0]
    # the broadcast's reach, counted like a campaign's, under its own id
    with session_scope(engine) as s:
        reach = rollups.reach_counts(s)
    assert reach[("broadcast:black-friday", "b", "open")] == 1
    assert reach[("broadcast:black-friday", "b", "click")] == 1


async def test_machine_hits_of_a_broadcast_are_flagged_not_events(
    http: httpx.AsyncClient, engine: Engine, settings: Settings
) -> None:
    message = _sent(engine, settings, _contact(engine, "bo@example.com"))
    r = await http.get(f"/t/o/{message.open_token}.gif", headers={"user-agent": SCANNER})
    assert r.status_code == 200
    await _flush(http)
    assert _events(engine, "open") == []
    with session_scope(engine) as s:
        assert rollups.bot_counts(s)[("broadcast:black-friday", "open")] == 1


async def test_a_journey_email_keeps_its_step_as_name_and_no_broadcast(
    http: httpx.AsyncClient, engine: Engine, settings: Settings
) -> None:
    contact_id = _contact(engine, "cy@example.com")
    message = _sent(
        engine,
        settings,
        contact_id,
        campaign_id="welcome",
        step_id="welcome",
        workflow_id=f"journey/welcome/{contact_id}/1",
    )
    assert (await http.get(f"/t/o/{message.open_token}.gif")).status_code == 200
    await _flush(http)
    [opened] = _events(engine, "open")
    assert opened.name == "welcome"
    assert "broadcast" not in opened.properties and "variant" not in opened.properties


def _renderer(settings: Settings, workspace: Workspace) -> Renderer:
    return Renderer(workspace, settings)


def _unsubscribe_link(
    settings: Settings, workspace: Workspace, engine: Engine, contact_id: int, message: Message
) -> str:
    """The one-click link of the email as the renderer makes it for this message."""
    with session_scope(engine) as s:
        contact = s.get(Contact, contact_id)
        assert contact is not None
        rendered = _renderer(settings, workspace).render(
            template="welcome",
            subject="Black Friday",
            preheader="",
            contact=contact,
            message_id=message.id,
            campaign_id=message.campaign_id,
            step_id=message.step_id,
            track=True,
        )
    assert rendered.unsubscribe_url.startswith("http://testserver/u/")
    return rendered.unsubscribe_url.removeprefix("http://testserver")


async def test_one_click_unsubscribe_from_a_broadcast_names_it(
    http: httpx.AsyncClient, engine: Engine, settings: Settings, workspace: Workspace
) -> None:
    contact_id = _contact(engine, "di@example.com")
    message = _sent(engine, settings, contact_id)
    link = _unsubscribe_link(settings, workspace, engine, contact_id, message)
    assert link.endswith(f"?m={message.id}")
    # the preference page's button posts to the same link
    page = await http.get(link)
    assert page.status_code == 200 and f'action="{link}"' in page.text
    r = await http.post(link, data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200
    [event] = _events(engine, "unsubscribe")
    assert (event.contact_id, event.message_id) == (contact_id, message.id)
    assert event.properties == {"broadcast": "black-friday", "variant": "b"}
    with session_scope(engine) as s:
        assert repository.get_contact(s, contact_id).status == ContactStatus.unsubscribed


async def test_a_journey_email_unsubscribe_link_is_unchanged(
    engine: Engine, settings: Settings, workspace: Workspace
) -> None:
    contact_id = _contact(engine, "ed@example.com")
    message = _sent(
        engine,
        settings,
        contact_id,
        campaign_id="welcome",
        step_id="welcome",
        workflow_id=f"journey/welcome/{contact_id}/1",
    )
    link = _unsubscribe_link(settings, workspace, engine, contact_id, message)
    assert "?" not in link


@pytest.mark.parametrize("m", ["someone-elses", "not/an id", "x" * 300])
async def test_an_unsubscribe_naming_no_email_of_the_contact_still_unsubscribes(
    http: httpx.AsyncClient, engine: Engine, settings: Settings, workspace: Workspace, m: str
) -> None:
    contact_id = _contact(engine, "fay@example.com")
    other = _sent(engine, settings, _contact(engine, "gus@example.com"))
    link = _unsubscribe_link(settings, workspace, engine, contact_id, other).split("?")[0]
    ref = other.id if m == "someone-elses" else m
    r = await http.post(link, params={"m": ref})
    assert r.status_code == 200
    [event] = _events(engine, "unsubscribe")
    assert event.contact_id == contact_id
    assert event.message_id is None and "broadcast" not in event.properties


def _mailgun(event: dict[str, Any]) -> dict[str, Any]:
    stamp = str(int(time.time()))
    token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = {
        "timestamp": stamp,
        "token": token,
        "signature": signature_of(MAILGUN_KEY, stamp, token),
    }
    return {"signature": signature, "event-data": event}


async def test_esp_bounce_and_complaint_of_a_broadcast_email_name_it(
    http: httpx.AsyncClient, engine: Engine, settings: Settings
) -> None:
    bounced = _contact(engine, "hal@example.com")
    complained = _contact(engine, "ida@example.com")
    first = _sent(engine, settings, bounced)
    second = _sent(engine, settings, complained, step_id="a")
    failed = {
        "event": "failed",
        "id": uuid.uuid4().hex[:22],
        "timestamp": time.time(),
        "recipient": "hal@example.com",
        "severity": "permanent",
        "reason": "bounce",
        "delivery-status": {"code": 550, "message": "5.1.1 No such user"},
        "message": {"headers": {"message-id": first.header_message_id.strip("<>")}},
    }
    complaint = {
        "event": "complained",
        "id": uuid.uuid4().hex[:22],
        "timestamp": time.time(),
        "recipient": "ida@example.com",
        "message": {"headers": {"message-id": second.header_message_id.strip("<>")}},
    }
    for payload in (failed, complaint):
        r = await http.post("/esp/mailgun", json=_mailgun(payload))
        assert r.status_code == 200 and r.json()["recorded"] == 1, r.text
    [bounce] = _events(engine, "bounce")
    [spam] = _events(engine, "complaint")
    assert (bounce.message_id, bounce.properties["broadcast"]) == (first.id, "black-friday")
    assert bounce.properties["variant"] == "b" and bounce.properties["provider"] == "mailgun"
    assert (spam.message_id, spam.properties["broadcast"]) == (second.id, "black-friday")
    assert spam.properties["variant"] == "a"


def test_an_smtp_refusal_of_a_broadcast_email_names_it(engine: Engine, settings: Settings) -> None:
    contact_id = _contact(engine, "jo@example.com")
    message = _sent(engine, settings, contact_id)
    with session_scope(engine) as s:
        assert repository.record_bounce(
            s,
            contact_id=contact_id,
            kind="hard",
            message_id=message.id,
            source="smtp",
            # a provider's field of the same name never re-files the event
            properties={"code": 550, "broadcast": "forged"},
            dedupe_key=f"bounce:{message.id}",
            soft_limit=3,
        )
    [bounce] = _events(engine, "bounce")
    assert bounce.properties == {"code": 550, "broadcast": "black-friday", "variant": "b"}


def test_the_campaign_list_shows_no_broadcast(
    engine: Engine, settings: Settings, workspace: Workspace
) -> None:
    deploy_workspace(engine, workspace)
    _sent(engine, settings, _contact(engine, "kit@example.com"))
    with session_scope(engine) as s:
        ids = [row.id for row in campaign_rows(s)]
    assert ids and not [i for i in ids if i.startswith("broadcast:")]
