"""``/api/sales`` and the manual owner and stage of a contact, over HTTP against the real app
and database, with API keys as ``drip apikeys create`` makes them."""

from __future__ import annotations

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from campaigns.workspace import Workspace
from contacts import erasure, repository
from contacts.db import session_scope
from contacts.models import Contact, SalesRep, StageChange
from tests.webhooks._admin import make_key
from webhooks.problems import PROBLEM_JSON
from workflows.assignment import sync_sales_directory


def _synced(engine: Engine, workspace: Workspace) -> None:
    with session_scope(engine) as s:
        sync_sales_directory(s, workspace.sales)


def _contact(engine: Engine, email: str, *, owner: str | None = None, stage: str = "lead") -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email)
        contact.owner, contact.stage = owner, stage
        s.add(contact)
        assert contact.id is not None
        return contact.id


def _problem(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    return str(r.json()["detail"])


async def test_the_directory_lists_the_synced_workspace(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    _synced(engine, workspace)
    _contact(engine, "a@example.com", owner="tom@acme.example", stage="mql")
    _contact(engine, "b@example.com", owner="tom@acme.example", stage="customer")
    auth = make_key(engine, "sales:read")
    r = await http.get("/api/sales/teams", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {
            "id": "europe",
            "name": "Rest of Europe",
            "lead": "Jonas Berg <jonas@acme.example>",
            "source": "workspace",
            "reps": 1,
            "active_reps": 1,
        },
        {
            "id": "uk",
            "name": "UK and Ireland",
            "lead": "Priya Shah <priya@acme.example>",
            "source": "workspace",
            "reps": 2,
            "active_reps": 2,
        },
    ]
    r = await http.get("/api/sales/reps", params={"team": "uk"}, headers=auth)
    assert r.status_code == 200, r.text
    reps = {rep["email"]: rep for rep in r.json()}
    assert list(reps) == ["sara@acme.example", "tom@acme.example"]
    assert reps["tom@acme.example"] == {
        "email": "tom@acme.example",
        "name": "Tom Baker",
        "team": "uk",
        "weight": 2,
        "capacity": 40,
        "open_leads": 1,  # the customer is no longer an open lead
        "assigned": 0,
        "away_until": None,
        "active": True,
        "source": "workspace",
    }
    r = await http.get("/api/sales/reps", headers=auth)
    assert [rep["email"] for rep in r.json()] == [
        "lena@acme.example",
        "sara@acme.example",
        "tom@acme.example",
    ]


async def test_teams_and_reps_made_through_the_api(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    auth = make_key(engine, "sales:read", "sales:write")
    r = await http.post(
        "/api/sales/teams",
        json={"id": "partners", "name": "Partners", "lead": "Pat <pat@acme.example>"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["reps"] == 0
    assert "exists" in _problem(
        await http.post("/api/sales/teams", json={"id": "partners"}, headers=auth), 409
    )
    assert "no team 'nope'" in _problem(
        await http.post(
            "/api/sales/reps", json={"email": "x@acme.example", "team": "nope"}, headers=auth
        ),
        422,
    )
    r = await http.post(
        "/api/sales/reps",
        json={"email": "Kim@Acme.example", "name": "Kim", "team": "partners", "weight": 3},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "kim@acme.example" and r.json()["capacity"] is None
    assert "exists" in _problem(
        await http.post(
            "/api/sales/reps", json={"email": "KIM@acme.example", "team": "partners"}, headers=auth
        ),
        409,
    )
    # an API rep changes everything here, and a sync of sales.yaml leaves it alone
    _synced(engine, workspace)
    r = await http.patch(
        "/api/sales/reps/KIM@acme.example",
        json={"name": "Kim Lee", "team": "uk", "weight": 5, "capacity": 10},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("name", "team", "weight", "capacity")} == {
        "name": "Kim Lee",
        "team": "uk",
        "weight": 5,
        "capacity": 10,
    }
    _synced(engine, workspace)
    r = await http.get("/api/sales/reps", params={"team": "uk"}, headers=auth)
    kim = next(rep for rep in r.json() if rep["email"] == "kim@acme.example")
    assert (kim["name"], kim["weight"], kim["source"]) == ("Kim Lee", 5, "api")
    assert "no team 'gone'" in _problem(
        await http.patch("/api/sales/reps/kim@acme.example", json={"team": "gone"}, headers=auth),
        422,
    )


async def test_a_workspace_rep_changes_only_away_and_active_through_the_api(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    _synced(engine, workspace)
    auth = make_key(engine, "sales:write")
    url = "/api/sales/reps/tom@acme.example"
    detail = _problem(await http.patch(url, json={"weight": 5, "name": "T"}, headers=auth), 409)
    assert detail == (
        "tom@acme.example comes from sales.yaml: change its name, weight there "
        "(the API changes only away_until and active of workspace reps)"
    )
    # the same values (a client sending the whole rep back) are no change
    r = await http.patch(
        url,
        json={"weight": 2, "capacity": 40, "away_until": "2026-12-01T09:00:00+01:00"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["away_until"] == "2026-12-01T08:00:00Z"
    r = await http.patch("/api/sales/reps/sara@acme.example", json={"active": False}, headers=auth)
    assert r.status_code == 200 and r.json()["active"] is False
    _synced(engine, workspace)  # the file does not undo what the API decided
    with session_scope(engine) as s:
        reps = {r.email: r for r in s.exec(select(SalesRep))}
    assert reps["tom@acme.example"].away_until is not None
    assert reps["sara@acme.example"].active is False
    r = await http.patch(url, json={"away_until": None}, headers=auth)
    assert r.status_code == 200 and r.json()["away_until"] is None
    assert "no sales rep" in _problem(
        await http.patch("/api/sales/reps/nobody@acme.example", json={}, headers=auth), 404
    )


async def test_bad_input_is_a_problem_never_a_crash(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    _synced(engine, workspace)
    auth = make_key(engine, "sales:write")
    url = "/api/sales/reps/tom@acme.example"
    for bad in (
        {"away_until": "2026-12-01T09:00:00"},  # no time zone
        {"away_until": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"weight": 0},
        {"capacity": -1},
        {"team": None},
        {"active": "maybe"},
        {"colour": "red"},
    ):
        _problem(await http.patch(url, json=bad, headers=auth), 422)
    for body in (
        {"id": "Bad Id"},
        {"id": "x", "lead": "a"},
        {"id": "x", "extra": 1},
    ):
        _problem(await http.post("/api/sales/teams", json=body, headers=auth), 422)
    for body in (
        {"email": "not-an-email", "team": "uk"},
        {"email": "x@acme.example"},
        {"email": "x@acme.example", "team": "uk", "weight": 101},
    ):
        _problem(await http.post("/api/sales/reps", json=body, headers=auth), 422)


async def test_scopes(http: httpx.AsyncClient, engine: Engine) -> None:
    read = make_key(engine, "sales:read")
    contacts = make_key(engine, "contacts:read", "contacts:write")
    _problem(await http.get("/api/sales/reps"), 401)
    _problem(await http.get("/api/sales/teams", headers=contacts), 403)
    _problem(await http.post("/api/sales/teams", json={"id": "x"}, headers=read), 403)
    _problem(await http.patch("/api/sales/reps/a@b.example", json={}, headers=read), 403)
    _problem(await http.put("/api/contacts/1/owner", json={"owner": None}, headers=contacts), 403)
    body = {"stage": "mql", "reason": "x"}
    _problem(await http.post("/api/contacts/1/stage", json=body, headers=read), 403)


async def test_setting_and_clearing_an_owner_by_hand(
    http: httpx.AsyncClient, engine: Engine, workspace: Workspace
) -> None:
    _synced(engine, workspace)
    auth = make_key(engine, "sales:write")
    c = _contact(engine, "ann@example.com")
    r = await http.put(
        f"/api/contacts/{c}/owner", json={"owner": "Lena@acme.example"}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"id": c, "owner": "lena@acme.example", "team": "europe", "stage": "lead"}
    with session_scope(engine) as s:
        lena = s.exec(select(SalesRep).where(SalesRep.email == "lena@acme.example")).one()
    assert lena.assigned == 0  # a person's choice is not a round-robin turn
    detail = _problem(
        await http.put(f"/api/contacts/{c}/owner", json={"owner": "bob@x.example"}, headers=auth),
        422,
    )
    assert detail == "no sales rep bob@x.example; add them first"
    r = await http.put(f"/api/contacts/{c}/owner", json={"owner": None}, headers=auth)
    assert r.status_code == 200 and r.json()["owner"] is None and r.json()["team"] is None
    _problem(await http.put("/api/contacts/99999/owner", json={"owner": None}, headers=auth), 404)
    _problem(await http.put(f"/api/contacts/{c}/owner", json={}, headers=auth), 422)
    with session_scope(engine) as s:
        erasure.erase_contact(s, c, requested_by="test")
    _problem(await http.put(f"/api/contacts/{c}/owner", json={"owner": None}, headers=auth), 409)


async def test_a_stage_set_by_hand_is_recorded_with_who_and_why(
    http: httpx.AsyncClient, engine: Engine
) -> None:
    auth = make_key(engine, "sales:write", name="crm-sync")
    c = _contact(engine, "ann@example.com", stage="subscriber")
    url = f"/api/contacts/{c}/stage"
    r = await http.post(url, json={"stage": "sql", "reason": "met at the fair"}, headers=auth)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["stage"] == "sql" and first["from_stage"] == "subscriber" and first["changed"]
    # backwards is allowed: a person decided
    r = await http.post(url, json={"stage": "lead", "reason": "not ready yet"}, headers=auth)
    assert r.status_code == 200 and r.json()["from_stage"] == "sql"
    r = await http.post(url, json={"stage": "lead", "reason": "again"}, headers=auth)
    assert r.json() == {
        "id": c,
        "stage": "lead",
        "from_stage": "lead",
        "changed": False,
        "stage_change_id": None,
    }
    with session_scope(engine) as s:
        contact = s.get(Contact, c)
        moves = s.exec(
            select(StageChange).where(StageChange.contact_id == c).order_by(col(StageChange.id))
        ).all()
    assert contact is not None and contact.stage == "lead"
    assert [(m.from_stage, m.to_stage, m.reason, m.by) for m in moves] == [
        ("subscriber", "sql", "met at the fair", "api:crm-sync"),
        ("sql", "lead", "not ready yet", "api:crm-sync"),
    ]
    assert moves[0].id == first["stage_change_id"]
    for bad in (
        {"stage": "champion", "reason": "x"},
        {"stage": "mql", "reason": "   "},
        {"stage": "mql"},
        {"stage": "mql", "reason": "x" * 1001},
    ):
        _problem(await http.post(url, json=bad, headers=auth), 422)
    _problem(
        await http.post(
            "/api/contacts/99999/stage", json={"stage": "mql", "reason": "x"}, headers=auth
        ),
        404,
    )


async def test_openapi_documents_the_sales_routes_with_security_and_problems(
    http: httpx.AsyncClient,
) -> None:
    doc = (await http.get("/openapi.json")).json()
    ours = {
        ("get", "/api/sales/teams"),
        ("post", "/api/sales/teams"),
        ("get", "/api/sales/reps"),
        ("post", "/api/sales/reps"),
        ("patch", "/api/sales/reps/{email}"),
        ("put", "/api/contacts/{contact_id}/owner"),
        ("post", "/api/contacts/{contact_id}/stage"),
    }
    for method, path in ours:
        op = doc["paths"][path][method]
        assert op["security"] == [{"ApiKey": []}], path
        for status in ("401", "403", "422"):
            assert PROBLEM_JSON in op["responses"][status]["content"], (path, status)
        assert len([s for s in op["responses"] if s.startswith("2")]) == 1, path
