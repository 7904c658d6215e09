"""``/api/broadcasts`` on SQLite and PostgreSQL: the list and one broadcast with its latest
send's figures, the dry run, and send/pause/resume/cancel through a real worker on the Temporal
dev server, every email counted at aiosmtpd. Refusals are problem JSON: 404 for an unknown or
never-sent broadcast, 409 for a send already made or one not running, 503 while Temporal is
away, 403 for a key without the scope.

Pause and cancel are asked before any worker runs, so they take effect before the first batch
whatever the machine's speed."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace
from drip.settings import Settings
from tests.drip._broadcasts import (
    HELLO,
    add_audience,
    broadcast_workspace,
    held_by_its_pause,
    wait_for_send,
)
from tests.support import SmtpServer, api_client, free_port
from tests.webhooks._admin import make_key
from workflows.worker import build_worker


@asynccontextmanager
async def _api(
    settings: Settings, ws: Workspace, engine: Engine, temporal: Client | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    if temporal is None:  # nothing listens there: Temporal is down
        settings = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with api_client(settings, ws, engine, temporal) as http:
        yield http


def _problem(response: httpx.Response, status: int, says: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.json()["detail"], response.json()


async def test_list_get_and_dry_run_without_temporal(
    any_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    engine = any_engine
    ws = broadcast_workspace(tmp_path, hello=HELLO)
    add_audience(engine, 12)
    reader = make_key(engine, "broadcasts:read", name="reader")
    sender = make_key(engine, "broadcasts:send", name="sender")
    async with _api(settings, ws, engine) as http:
        assert (await http.get("/api/broadcasts")).status_code == 401
        assert (await http.get("/api/broadcasts", headers=sender)).status_code == 403
        listed = await http.get("/api/broadcasts", headers=reader)
        assert listed.status_code == 200, listed.text
        [hello] = listed.json()
        assert hello == {
            "id": "hello",
            "name": "Hello everyone",
            "in_workspace": True,
            "version": ws.broadcast_plans["hello"].version,
            "send_at": "",
            "local_time": False,
            "sends": 0,
            "latest_send": None,
        }
        assert (await http.get("/api/broadcasts/hello", headers=reader)).json() == hello
        _problem(await http.get("/api/broadcasts/nope", headers=reader), 404, "no broadcast nope")

        assert (await http.post("/api/broadcasts/hello/dry-run", headers=reader)).status_code == 403
        dry = await http.post("/api/broadcasts/hello/dry-run", headers=sender)
        assert dry.status_code == 200, dry.text
        assert dry.json() == {
            "broadcast_id": "hello",
            "audience": 13,
            "would_send": 12,
            "suppressed_by_reason": {"contact is unsubscribed": 1},
            "sample": [f"reader{i:02d}@example.com" for i in range(5)],
        }

        _problem(await http.post("/api/broadcasts/nope/send", headers=sender), 404, "no broadcast")
        _problem(
            await http.post("/api/broadcasts/hello/pause", headers=sender), 404, "was never sent"
        )
        bad = await http.post("/api/broadcasts/hello/send", headers=sender, json={"again": "x"})
        assert bad.status_code == 422
        down = await http.post("/api/broadcasts/hello/send", headers=sender)
        _problem(down, 503, "Temporal is unreachable")
        # the refused start left no send behind
        after = await http.get("/api/broadcasts/hello", headers=reader)
        assert after.json()["sends"] == 0


async def test_send_pause_resume_and_cancel_through_a_worker(
    any_engine: Engine,
    dev_env: WorkflowEnvironment,
    settings: Settings,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    engine = any_engine
    ws = broadcast_workspace(tmp_path, hello=HELLO)
    emails = add_audience(engine, 12)
    key = make_key(engine, "broadcasts:read", "broadcasts:send")

    async def post(path: str, **body: Any) -> httpx.Response:
        return await http.post(f"/api/broadcasts/hello/{path}", headers=key, json=body or None)

    async with _api(settings, ws, engine, dev_env.client) as http:
        # no worker yet: the send waits in Temporal, and is paused before its first batch
        started = await post("send")
        assert started.status_code == 202, started.text
        assert started.json()["id"] == "broadcast:hello:1"
        assert started.json()["state"] == "scheduled"
        _problem(await post("send"), 409, "is being sent")
        paused = await post("pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["state"] == "paused"
        _problem(await post("pause"), 409, "paused already")

        async with build_worker(dev_env.client, settings=settings, engine=engine, workspace=ws):
            await held_by_its_pause(dev_env.client, engine, "broadcast:hello:1")
            assert not smtp.mailbox.messages
            resumed = await post("resume")
            assert resumed.status_code == 200, resumed.text
            await wait_for_send(engine, "broadcast:hello:1")

        one = (await http.get("/api/broadcasts/hello", headers=key)).json()
        latest = one["latest_send"]
        assert one["sends"] == 1
        assert latest["state"] == "completed"
        assert (latest["audience"], latest["sent"], latest["done"]) == (13, 12, 13)
        assert {k: v for k, v in latest["by_state"].items() if v} == {"sent": 12, "suppressed": 1}
        assert latest["suppressed_by_reason"] == {"contact is unsubscribed": 1}
        assert latest["started_at"] is not None and latest["finished_at"] is not None
        assert latest["average_emails_per_second"] > 0
        assert latest["emails_per_second"] is None  # the pace is for a send still moving
        assert latest["ab_test"] is None
        assert Counter(r for m in smtp.mailbox.messages for r in m.recipients) == Counter(emails)

        _problem(await post("send"), 409, "was sent already")
        _problem(await post("pause"), 409, "is not being sent (completed)")

        # sent again on purpose, and cancelled before a worker takes it: nobody gets it
        again = await post("send", again=True)
        assert again.status_code == 202, again.text
        assert again.json()["number"] == 2
        assert (await post("cancel")).status_code == 200
        async with build_worker(dev_env.client, settings=settings, engine=engine, workspace=ws):
            await wait_for_send(engine, "broadcast:hello:2")
        listed = (await http.get("/api/broadcasts", headers=key)).json()
    [hello] = listed
    assert hello["sends"] == 2
    assert hello["latest_send"]["state"] == "cancelled"
    assert hello["latest_send"]["note"].startswith("cancelled by api:drip_")
    assert hello["latest_send"]["sent"] == 0
    assert len(smtp.mailbox.messages) == 12

    # an API whose workspace no longer has the file still lists the broadcast and its sends
    async with _api(settings, broadcast_workspace(tmp_path / "later"), engine) as http:
        [gone] = (await http.get("/api/broadcasts", headers=key)).json()
        assert (gone["id"], gone["in_workspace"], gone["version"], gone["sends"]) == (
            "hello",
            False,
            "",
            2,
        )
        assert gone["name"] == "Hello everyone"
        _problem(await http.post("/api/broadcasts/hello/send", headers=key), 404, "no broadcast")
