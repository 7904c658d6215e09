"""Campaigns, their figures and journeys over HTTP, with a real journey on Temporal: a form post
enrols a contact in the welcome campaign, the API shows it and its email, then cancels it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Message, MessageState
from drip.settings import Settings
from tests.support import api_client, running_stack
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON


async def _until(check: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _sent(engine: Engine) -> bool:
    with session_scope(engine) as s:
        return s.exec(select(Message).where(Message.state == MessageState.sent)).first() is not None


def _state(engine: Engine) -> EnrolmentState:
    with session_scope(engine) as s:
        return s.exec(select(Enrolment)).one().state


async def test_campaigns_stats_journeys_and_cancel(
    time_env: WorkflowEnvironment, settings: Settings, engine: Engine, workspace: Workspace
) -> None:
    auth = make_key(engine)
    async with running_stack(time_env.client, settings, engine, workspace) as http:
        campaigns = (await http.get("/api/campaigns", headers=auth)).json()
        welcome = next(c for c in campaigns if c["id"] == "welcome")
        assert welcome["status"] == "active" and welcome["trigger_kind"] == "form"

        r = await http.post("/forms/newsletter", json={"email": "ann@example.com", "consent": True})
        assert r.status_code == 202
        await _until(lambda: _sent(engine))
        with session_scope(engine) as s:
            message = s.exec(select(Message)).one()
            repository.record_event(
                s,
                contact_id=message.contact_id,
                type="open",
                name=message.step_id,
                dedupe_key="open-1",
                message_id=message.id,
            )
            repository.record_event(
                s,
                contact_id=message.contact_id,
                type="open",
                name=message.step_id,
                dedupe_key="open-2",
                message_id=message.id,
            )

        stats = (await http.get("/api/campaigns/welcome/stats", headers=auth)).json()
        assert stats["journeys"]["enrolled"] == 1 and stats["journeys"]["running"] == 1
        assert stats["emails"]["sent"] == 1 and stats["emails"]["unique_opens"] == 1
        (step,) = stats["steps"]
        assert step["step_id"] == "welcome" and step["sent"] == 1 and step["unique_opens"] == 1
        missing = await http.get("/api/campaigns/nope/stats", headers=auth)
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_JSON

        page = (await http.get("/api/journeys", params={"state": "running"}, headers=auth)).json()
        (journey,) = page["items"]
        assert journey["campaign_id"] == "welcome" and journey["contact_id"] == message.contact_id
        assert journey["workflow_id"] == f"journey/welcome/{message.contact_id}/1"
        other = await http.get(
            "/api/journeys", params={"campaign_id": "lead-nurture"}, headers=auth
        )
        assert other.json() == {"items": [], "next_cursor": None}

        cancel = f"/api/journeys/{journey['id']}/cancel"
        r = await http.post(cancel, json={"reason": "asked by support"}, headers=auth)
        assert r.status_code == 202, r.text
        await _until(lambda: _state(engine) == EnrolmentState.cancelled)
        with session_scope(engine) as s:
            assert s.exec(select(Enrolment)).one().end_reason == "asked by support"
        again = await http.post(cancel, headers=auth)
        assert again.status_code == 409 and again.headers["content-type"] == PROBLEM_JSON
        stats = (await http.get("/api/campaigns/welcome/stats", headers=auth)).json()
        assert stats["journeys"]["cancelled"] == 1 and stats["journeys"]["running"] == 0
        assert (await http.post("/api/journeys/999/cancel", headers=auth)).status_code == 404


async def test_journey_scopes(settings: Settings, workspace: Workspace, engine: Engine) -> None:
    reader = make_key(engine, "journeys:read", "campaigns:read")
    async with api_client(settings, workspace, engine) as http:
        assert (await http.get("/api/journeys", headers=reader)).status_code == 200
        assert (await http.get("/api/campaigns", headers=reader)).status_code == 200
        r = await http.post("/api/journeys/1/cancel", headers=reader)
        assert r.status_code == 403
