"""``/api/sales/alerts`` through the real app: listing with filters and pages, acknowledging
once (the key's name is recorded), scopes, and the signal to a follow-up on real Temporal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from campaigns.workspace import Workspace
from contacts import alerts
from contacts.db import session_scope
from drip.settings import Settings
from tests.contacts.test_alerts import T0, make_lead
from tests.support import api_client, free_port
from tests.webhooks._admin import make_key
from tests.webhooks.test_ack import AckProbe
from webhooks.problems import PROBLEM_JSON
from workflows.sales_types import lead_alert_workflow_id


@pytest.fixture
def offline(settings: Settings) -> Settings:
    return settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})


async def test_alerts_are_listed_newest_first_by_owner_state_and_page(
    offline: Settings, workspace: Workspace, engine: Engine
) -> None:
    ids = [
        make_lead(
            engine,
            f"lead{i}@example.com",
            owner="tom@acme.example" if i % 2 else "sara@acme.example",
            created_at=T0 + timedelta(minutes=i),
        )[1]
        for i in range(5)
    ]
    with session_scope(engine) as s:
        alerts.acknowledge_alert(s, ids[3], "tom@acme.example")
    reader = make_key(engine, "sales:read")
    async with api_client(offline, workspace, engine) as http:
        everything = (await http.get("/api/sales/alerts", headers=reader)).json()
        assert [a["id"] for a in everything["items"]] == ids[::-1]
        assert everything["next_cursor"] is None
        first = everything["items"][0]
        assert first["reason"].startswith("mql: contact.score >= 25 held")
        assert (first["state"], first["team_id"], first["acknowledged_by"]) == ("open", "uk", None)

        toms = await http.get(
            "/api/sales/alerts",
            params={"owner": "Tom@Acme.Example", "state": "open"},
            headers=reader,
        )
        assert [a["id"] for a in toms.json()["items"]] == [ids[1]]

        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/sales/alerts", params=params, headers=reader)).json()
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]

        bad = await http.get("/api/sales/alerts", params={"cursor": "Zm9v"}, headers=reader)
        assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM_JSON
        bad_state = await http.get("/api/sales/alerts", params={"state": "x"}, headers=reader)
        assert bad_state.status_code == 422


async def test_acknowledging_records_the_key_once_and_scopes_are_checked(
    offline: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(engine)
    writer = make_key(engine, "sales:write", name="crm-sync")
    path = f"/api/sales/alerts/{alert_id}/ack"
    async with api_client(offline, workspace, engine) as http:
        assert (await http.post(path)).status_code == 401
        reader = make_key(engine, "sales:read", "contacts:write")
        assert (await http.post(path, headers=reader)).status_code == 403
        assert (await http.get("/api/sales/alerts", headers=writer)).status_code == 403

        done = await http.post(path, headers=writer)
        assert done.status_code == 200
        body = done.json()
        assert body["acknowledged_now"] is True
        assert body["signalled"] is False  # Temporal is away: the database still has it
        assert body["alert"]["state"] == "acknowledged"
        assert body["alert"]["acknowledged_by"] == "api:crm-sync"

        again = (await http.post(path, headers=make_key(engine, "sales:write", name="late"))).json()
        assert again["acknowledged_now"] is False
        assert again["alert"]["acknowledged_by"] == "api:crm-sync"
        assert again["alert"]["acknowledged_at"] == body["alert"]["acknowledged_at"]

        missing = await http.post("/api/sales/alerts/nope/ack", headers=writer)
        assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_JSON


async def test_acknowledging_by_api_tells_the_follow_up(
    time_env: WorkflowEnvironment, settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    _, alert_id = make_lead(engine)
    writer = make_key(engine, "sales:write", name="dashboard")
    async with Worker(
        time_env.client,
        task_queue=settings.temporal_task_queue,
        workflows=[AckProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await time_env.client.start_workflow(
            AckProbe.run,
            id=lead_alert_workflow_id(alert_id),
            task_queue=settings.temporal_task_queue,
        )
        async with api_client(settings, workspace, engine, time_env.client) as http:
            body = (await http.post(f"/api/sales/alerts/{alert_id}/ack", headers=writer)).json()
        assert body["signalled"] is True
        assert await handle.result() == "api:dashboard"
