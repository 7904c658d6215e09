"""``GET /api/contacts/{id}/sales``: the timeline that explains a contact's score and stage."""

from __future__ import annotations

import httpx
from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import utcnow
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON
from workflows.assignment import sync_sales_directory
from workflows.lifecycle import SalesPipeline


async def test_the_timeline_says_why_a_contact_is_an_mql(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    pipeline = SalesPipeline(workspace.sales)  # the demo's sales.yaml: mql at 25 points
    with session_scope(engine) as s:
        sync_sales_directory(s, workspace.sales)
        ann, _ = repository.upsert_contact(
            s, "ann@example.com", {"title": "Head of Outdoor Education", "country": "GB"}
        )
        assert ann.id is not None
        alerts = []
        for path in ("/pricing", "/about"):
            event, _ = repository.record_event(
                s,
                contact_id=ann.id,
                type="page",
                dedupe_key=f"page:{path}",
                properties={"path": path},
            )
            alerts += pipeline.on_event(s, event, now=utcnow())
    assert len(alerts) == 1  # the pricing page made her an MQL; the next page alerts nobody

    r = await http.get(f"/api/contacts/{ann.id}/sales", headers=make_key(engine, "contacts:read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["score"], body["fit"], body["stage"]) == (25, 15, "mql")
    assert body["owner"] in ("tom@acme.example", "sara@acme.example")  # team uk, by country
    assert [(x["rule"], x["points"]) for x in body["score_reasons"]] == [("pricing", 10.0)]
    [move] = body["stage_changes"]
    assert (move["from_stage"], move["to_stage"], move["by"]) == ("subscriber", "mql", "rules")
    assert "contact.score >= 25 held (score 25: decision-maker +15, pricing +10)" in move["reason"]
    [alert] = body["alerts"]
    assert alert["state"] == "open" and alert["owner"] == body["owner"]
    assert "Assigned: territory uk" in alert["reason"]

    missing = await http.get("/api/contacts/999/sales", headers=make_key(engine, "contacts:read"))
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_JSON
    denied = await http.get(
        f"/api/contacts/{ann.id}/sales", headers=make_key(engine, "events:read")
    )
    assert denied.status_code == 403
