"""A Mailgun signature is good for one request, across API processes, on SQLite and PostgreSQL.

Mailgun signs its timestamp and token, not the body, so a captured signed request reposted
inside the freshness window with other event data still verifies; only remembering the token
refuses it. Two apps over one database stand in for two API processes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import ContactStatus, utcnow
from contacts.webhook_tokens import WebhookToken
from drip.settings import Settings
from tests.webhooks.test_esp import (
    MAILGUN_KEY,
    RecordingGateway,
    _contact,
    _events,
    _is_problem,
    _mailgun,
    _mailgun_event,
    _status,
)
from webhooks.esp.mailgun import signature_of
from webhooks.main import create_app


@pytest.fixture
async def apis(
    esp_settings: Settings, workspace: Workspace, any_engine: Engine
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API apps sharing ``any_engine``, as two ``drip api`` processes share a database."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(esp_settings, workspace, engine=any_engine)
            gateway = RecordingGateway(settings=esp_settings, engine=any_engine)
            gateway.routed = []
            app.state.gateway = gateway
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
                    )
                )
            )
        yield clients


@pytest.fixture
def esp_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"esp_mailgun_signing_key": SecretStr(MAILGUN_KEY)})


def _tokens(engine: Engine) -> list[str]:
    with session_scope(engine) as s:
        return sorted(t.token for t in s.exec(select(WebhookToken)))


async def test_a_signature_reused_with_another_body_is_refused_by_every_process(
    apis: list[httpx.AsyncClient], any_engine: Engine
) -> None:
    ann = _contact(any_engine, "ann@example.com")
    bob = _contact(any_engine, "bob@example.com")
    delivered = _mailgun(_mailgun_event("delivered", email="ann@example.com"))
    r = await apis[0].post("/esp/mailgun", json=delivered)
    assert r.status_code == 200 and r.json()["recorded"] == 1

    # the captured signature, a new event: bob "complained", posted to the other process
    forged: dict[str, Any] = {
        "signature": delivered["signature"],
        "event-data": _mailgun_event("complained", email="bob@example.com"),
    }
    for api in (apis[1], apis[0]):
        body = _is_problem(await api.post("/esp/mailgun", json=forged), 409)
        assert body["title"] == "Replayed webhook" and "token" in body["detail"]
    # and the same request again, byte for byte
    _is_problem(await apis[1].post("/esp/mailgun", json=delivered), 409)

    assert _status(any_engine, bob) == ContactStatus.subscribed
    assert _status(any_engine, ann) == ContactStatus.subscribed
    assert _events(any_engine, "complaint") == []
    assert [e.contact_id for e in _events(any_engine)] == [ann]
    assert _tokens(any_engine) == [delivered["signature"]["token"]]


async def test_a_signed_request_uses_up_its_token_whatever_it_holds(
    apis: list[httpx.AsyncClient], any_engine: Engine
) -> None:
    """A signed request refused for its event data (400) or ignored (200) still spent its
    token; a request whose signature does not verify (401) spends none."""
    bob = _contact(any_engine, "bob@example.com")
    complaint = _mailgun_event("complained", email="bob@example.com")
    for first, status in (({"event": "failed"}, 400), (_mailgun_event("opened"), 200)):
        signed = _mailgun(first)
        assert (await apis[0].post("/esp/mailgun", json=signed)).status_code == status
        again = {"signature": signed["signature"], "event-data": complaint}
        _is_problem(await apis[1].post("/esp/mailgun", json=again), 409)

    unsigned = _mailgun(complaint, key="key-not-ours")
    _is_problem(await apis[0].post("/esp/mailgun", json=unsigned), 401)
    assert unsigned["signature"]["token"] not in _tokens(any_engine)
    assert _status(any_engine, bob) == ContactStatus.subscribed


async def test_a_long_token_is_one_key_within_the_column(
    apis: list[httpx.AsyncClient], any_engine: Engine
) -> None:
    _contact(any_engine)
    stamp, token = str(int(time.time())), "t" * 5000
    payload = {
        "signature": {
            "timestamp": stamp,
            "token": token,
            "signature": signature_of(MAILGUN_KEY, stamp, token),
        },
        "event-data": _mailgun_event("delivered"),
    }
    assert (await apis[0].post("/esp/mailgun", json=payload)).status_code == 200
    _is_problem(await apis[1].post("/esp/mailgun", json=payload), 409)
    [kept] = _tokens(any_engine)
    assert kept.startswith("sha256:") and len(kept) <= 100


async def test_tokens_past_the_freshness_window_are_pruned(
    apis: list[httpx.AsyncClient], any_engine: Engine, esp_settings: Settings
) -> None:
    """A token whose signed time is older than ``esp_max_age_seconds`` is forgotten on the next
    accepted request: a request signed then is refused as stale without it."""
    _contact(any_engine)
    window = timedelta(seconds=esp_settings.esp_max_age_seconds)
    now = utcnow()
    with session_scope(any_engine) as s:
        s.add(WebhookToken(provider="mailgun", token="old", signed_at=now - 2 * window))
        s.add(WebhookToken(provider="mailgun", token="recent", signed_at=now - window / 2))
    fresh = _mailgun(_mailgun_event("delivered"))
    assert (await apis[0].post("/esp/mailgun", json=fresh)).status_code == 200
    assert _tokens(any_engine) == sorted([fresh["signature"]["token"], "recent"])
