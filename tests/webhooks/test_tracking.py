"""The pixel and click paths: what they answer, what they store, and how hits are judged.

Requests go through the real app (the ASGI fast path ahead of FastAPI), as in production; the
tests then flush the app's hit writer themselves instead of waiting for its thread.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.hits import TRAP_URL
from contacts.models import Event, Hit, Message, MessageState, utcnow
from drip.settings import Settings
from emails.links import click_token, open_token
from tests.support import MAIL_CLIENT
from webhooks.bots import classify_user_agent
from webhooks.hits import HitWriter
from webhooks.main import create_app
from webhooks.routes.tracking import GIF

URLS = ["https://acme.example/a", "https://acme.example/b?x=1&y=2", "https://acme.example/c"]
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"


@dataclass
class Api:
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def hits(self) -> HitWriter:
        writer: HitWriter = self.app.state.hits
        return writer

    async def flush(self) -> None:
        await asyncio.to_thread(self.hits.flush, everything=True)


@pytest.fixture
async def api(settings: Settings, workspace: Workspace, engine: Engine) -> AsyncIterator[Api]:
    app = create_app(settings, workspace, engine=engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"user-agent": MAIL_CLIENT},
    ) as http:
        yield Api(app, http)
    app.state.hits.close()


def _message(
    engine: Engine,
    settings: Settings,
    *,
    sent_ago: timedelta = timedelta(minutes=5),
    urls: list[str] = URLS,
) -> Message:
    message_id = str(uuid.uuid4())
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(
            s, email=f"{message_id[:8]}@example.com", consent_source="test"
        )
        assert contact.id is not None
        message = outbox.reserve_message(
            s,
            Message(
                id=message_id,
                key=f"journey/welcome/{contact.id}/1/welcome",
                contact_id=contact.id,
                campaign_id="welcome",
                step_id="welcome",
                workflow_id=f"journey/welcome/{contact.id}/1",
                template="welcome",
                open_token=open_token(settings.secret(), message_id),
                created_at=utcnow() - sent_ago,
            ),
        )
        outbox.finish_send(s, message_id, MessageState.sent)
        message = s.get(Message, message_id)
        assert message is not None
        message.sent_at = utcnow() - sent_ago
        s.add(message)
        links = [(click_token(settings.secret(), message_id, i), i, u) for i, u in enumerate(urls)]
        outbox.store_links(s, message_id, links)
        return message


def _tokens(settings: Settings, message: Message, n: int = len(URLS)) -> list[str]:
    return [click_token(settings.secret(), message.id, i) for i in range(n)]


def _hits(engine: Engine) -> list[Hit]:
    with session_scope(engine) as s:
        return list(s.exec(select(Hit).order_by(Hit.id)))  # type: ignore[arg-type]


def _events(engine: Engine, type: str) -> list[Event]:
    with session_scope(engine) as s:
        return list(s.exec(select(Event).where(Event.type == type)))


async def test_the_pixel_answers_the_gif_and_stores_a_human_open_once(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings)
    for _ in range(3):
        r = await api.http.get(f"/t/o/{message.open_token}.gif")
        assert r.status_code == 200 and r.content == GIF
        assert r.headers["content-type"] == "image/gif"
        assert "no-store" in r.headers["cache-control"] and r.headers["pragma"] == "no-cache"
    await api.flush()
    hits = _hits(engine)
    assert [(h.kind, h.message_id, h.bot_reason) for h in hits] == [("open", message.id, None)] * 3
    assert all(h.consumed_at is not None and h.user_agent == MAIL_CLIENT for h in hits)
    # one event: the first human open, the one that can change the journey (left to route)
    (event,) = _events(engine, "open")
    assert event.message_id == message.id and event.dedupe_key == f"open:hit:{hits[0].id}"
    assert event.routed_at is None and event.name == "welcome" and event.source == "pixel"


async def test_hits_are_stored_by_the_writer_thread_within_a_second(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings)
    await api.http.get(f"/t/o/{message.open_token}.gif")
    for _ in range(40):
        if _events(engine, "open"):
            break
        await asyncio.sleep(0.05)
    assert len(_hits(engine)) == 1 and len(_events(engine, "open")) == 1


@pytest.mark.parametrize(
    ("agent", "reason"),
    [
        (SCANNER, "user_agent:Barracuda Sentinel (EE)"),
        ("python-requests/2.32", "user_agent:python-requests"),
        ("Mozilla/5.0", "apple_mpp"),
        ("", "user_agent:none"),
    ],
)
async def test_machine_agents_are_stored_flagged_and_record_no_open(
    api: Api, engine: Engine, settings: Settings, agent: str, reason: str
) -> None:
    message = _message(engine, settings)
    r = await api.http.get(f"/t/o/{message.open_token}.gif", headers={"user-agent": agent})
    assert r.status_code == 200 and r.content == GIF
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == [reason]
    assert _events(engine, "open") == []


async def test_a_head_request_is_a_prefetch(api: Api, engine: Engine, settings: Settings) -> None:
    message = _message(engine, settings)
    r = await api.http.head(f"/t/o/{message.open_token}.gif")
    assert r.status_code == 200 and r.content == b""
    r = await api.http.head(f"/t/c/{_tokens(settings, message)[0]}", follow_redirects=False)
    assert r.status_code == 302
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == ["head_request"] * 2
    assert _events(engine, "open") == [] and _events(engine, "click") == []


async def test_an_open_right_after_the_send_is_a_prefetch_and_a_later_one_counts(
    api: Api, engine: Engine, settings: Settings
) -> None:
    api.hits.min_seconds_after_send = 3.0
    message = _message(engine, settings, sent_ago=timedelta(seconds=1))
    await api.http.get(f"/t/o/{message.open_token}.gif")
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == ["too_soon_after_send"]
    assert _events(engine, "open") == []
    api.hits.min_seconds_after_send = 0.5  # as if the reader came back a few seconds later
    await api.http.get(f"/t/o/{message.open_token}.gif")
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == ["too_soon_after_send", None]
    assert len(_events(engine, "open")) == 1


async def test_with_no_threshold_an_open_before_the_send_was_recorded_counts(
    api: Api, engine: Engine, settings: Settings
) -> None:
    """The email reached the reader before the send activity wrote ``sent_at`` (it writes it
    once SMTP has answered): the hit's time is before ``sent_at``. That is a race, not a
    prefetch, when no minimum gap is set."""
    api.hits.min_seconds_after_send = 0.0
    message = _message(engine, settings, sent_ago=timedelta(seconds=-1))
    await api.http.get(f"/t/o/{message.open_token}.gif")
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == [None]
    assert len(_events(engine, "open")) == 1


async def test_unknown_pixel_tokens_get_the_gif_and_are_not_stored(
    api: Api, engine: Engine
) -> None:
    for token in ("A" * 24, "garbage", "x" * 300):
        r = await api.http.get(f"/t/o/{token}.gif")
        assert r.status_code == 200 and r.content == GIF
    await api.flush()
    assert _hits(engine) == []  # counted instead: tests/webhooks/test_tracking_unknown.py


async def test_a_click_redirects_to_the_stored_url_and_counts_once(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings)
    token = _tokens(settings, message)[1]
    for _ in range(2):
        r = await api.http.get(f"/t/c/{token}", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == URLS[1]
        assert (
            r.headers["referrer-policy"] == "no-referrer"
            and "no-store" in r.headers["cache-control"]
        )
    await api.flush()
    assert [(h.kind, h.link_position, h.bot_reason) for h in _hits(engine)] == [
        ("click", 1, None)
    ] * 2
    (event,) = _events(engine, "click")
    assert event.properties["url"] == URLS[1] and event.properties["position"] == 1


@pytest.mark.parametrize("token", ["A" * 24, "garbage", "https:%2F%2Fevil.example"])
async def test_an_unknown_click_is_a_404_page_and_is_not_stored(
    api: Api, engine: Engine, token: str
) -> None:
    r = await api.http.get(f"/t/c/{token}", follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers
    assert "Link not found" in r.text
    await api.flush()
    assert _hits(engine) == []


async def test_a_tampered_click_token_never_redirects(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings)
    token = _tokens(settings, message)[0]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    r = await api.http.get(f"/t/c/{tampered}", follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


async def test_every_link_clicked_at_once_is_a_link_scanner(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings)
    for token in _tokens(settings, message):
        r = await api.http.get(f"/t/c/{token}", follow_redirects=False)
        assert r.status_code == 302  # the redirect is served all the same
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == ["all_links_at_once"] * len(URLS)
    assert _events(engine, "click") == []


async def test_clicks_wait_to_settle_before_they_are_judged(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings)
    await api.http.get(f"/t/c/{_tokens(settings, message)[0]}", follow_redirects=False)
    await asyncio.to_thread(api.hits.flush)  # a regular round: the click is too fresh
    assert [h.consumed_at for h in _hits(engine)] == [None]
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == [None]
    assert len(_events(engine, "click")) == 1


async def test_a_click_on_the_trap_link_is_a_machine(
    api: Api, engine: Engine, settings: Settings
) -> None:
    message = _message(engine, settings, urls=[*URLS, TRAP_URL + "x"])
    await api.http.get(f"/t/c/{_tokens(settings, message, 4)[3]}", follow_redirects=False)
    await api.flush()
    assert [h.bot_reason for h in _hits(engine)] == ["trap_link"]


async def test_closing_the_writer_stores_and_consumes_everything(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    message = _message(engine, settings)
    app = create_app(settings, workspace, engine=engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"user-agent": MAIL_CLIENT},
    ) as http:
        for _ in range(50):
            await http.get(f"/t/o/{message.open_token}.gif")
        await http.get(f"/t/c/{_tokens(settings, message)[0]}", follow_redirects=False)
    await asyncio.to_thread(app.state.hits.close)
    hits = _hits(engine)
    assert len(hits) == 51 and all(h.consumed_at is not None for h in hits)
    assert len(_events(engine, "open")) == 1 and len(_events(engine, "click")) == 1


@pytest.mark.parametrize(
    ("agent", "verdict"),
    [
        (MAIL_CLIENT, None),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15", None),
        ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.12026; Pro)", None),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"
            " (via ggpht.com GoogleImageProxy)",
            None,
        ),
        ("Mozilla/5.0", "apple_mpp"),
        ("curl/8.5.0", "user_agent:curl"),
        ("   ", "user_agent:none"),
    ],
)
def test_user_agent_verdicts(agent: str, verdict: str | None) -> None:
    assert classify_user_agent(agent) == verdict
