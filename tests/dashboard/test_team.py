"""The sales team page over HTTP, against the real app and a real SQLite database: who sees
which team, figures equal to what the tables hold, the queue's order, limit and filter, and
acknowledging a teammate's lead through the "my leads" endpoint (never another team's)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from campaigns.workspace import Workspace
from contacts.db import session_scope
from contacts.models import Contact, LeadAlert, utcnow
from drip.settings import Settings
from tests.dashboard.support import form_csrf, sign_in
from tests.dashboard.team_seed import NoTemporal, Seeded, seed_teams
from webhooks.dashboard._team_sql import (
    QUEUE_LENGTH,
    alert_team,
    all_teams,
    team_views,
    teams_of,
)
from webhooks.main import create_app


@pytest.fixture
def no_temporal() -> NoTemporal:
    return NoTemporal()


@pytest.fixture
def seeded(engine: Engine) -> Seeded:
    return seed_teams(engine)


@pytest.fixture
async def http(
    settings: Settings, workspace: Workspace, engine: Engine, no_temporal: NoTemporal
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, workspace, engine=engine)
    app.state.gateway = no_temporal
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _alerts_shown(html: str) -> list[str]:
    return re.findall(r'data-alert="([0-9a-f]+)"', html)


def _teams_shown(html: str) -> list[str]:
    return re.findall(r'<section class="team" data-team="([^"]+)"', html)


def _section(html: str, team: str) -> str:
    return html.split(f'data-team="{team}"')[1].split("</section>")[0]


def _figure(html: str, name: str) -> str:
    match = re.search(rf'data-figure="{name}">(\d+)<', html)
    assert match, f"no figure {name}"
    return match.group(1)


def _rep_row(html: str, email: str) -> str:
    return html.split(f'data-rep="{email}"')[1].split("</tr>")[0]


@contextmanager
def _listening(engine: Engine, fn: Callable[..., None]) -> Iterator[None]:
    """Every statement the engine runs inside the block goes through ``fn`` too."""
    sa.event.listen(engine, "before_cursor_execute", fn)
    try:
        yield
    finally:
        sa.event.remove(engine, "before_cursor_execute", fn)


async def test_marketers_are_refused_and_do_not_see_it_in_the_nav(
    http: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(http, "mia@example.com")
    r = await http.get("/dashboard/team")
    assert r.status_code == 403 and "Not for your role" in r.text
    assert seeded.sams not in r.text and 'href="/dashboard/team"' not in r.text
    await sign_in(http, "sam@example.com")
    page = await http.get("/dashboard/leads")
    assert 'href="/dashboard/team"' in page.text  # a sales user's nav has it


async def test_a_sales_user_sees_only_their_own_team(
    http: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(http, "sam@example.com")
    r = await http.get("/dashboard/team")
    assert r.status_code == 200
    assert 'href="/dashboard/team" aria-current="page"' in r.text
    assert _teams_shown(r.text) == ["emea"]
    assert _alerts_shown(r.text) == seeded.emea  # newest first; the orphan and inbox included
    assert (
        seeded.kims not in r.text and "Eve Evans" not in r.text and "kim@example.com" not in r.text
    )
    assert "Tia Teammate" in r.text and "Away until" in r.text and "Lena" in r.text
    assert "nobody (team inbox)" in r.text and "no longer a rep" in r.text
    assert 'id="team-filter"' not in r.text  # one team: nothing to choose
    # another team's id in the query is no way in
    sneaky = await http.get("/dashboard/team", params={"team": "amer"})
    assert _teams_shown(sneaky.text) == ["emea"] and seeded.kims not in sneaky.text


async def test_figures_equal_what_the_tables_hold(
    http: httpx.AsyncClient, engine: Engine, seeded: Seeded
) -> None:
    await sign_in(http, "sam@example.com")
    html = _section((await http.get("/dashboard/team")).text, "emea")
    with session_scope(engine) as s:
        for rep in ("sam@example.com", "tia@example.com"):
            leads = s.exec(
                select(func.count()).where(
                    Contact.owner == rep, col(Contact.stage).in_(["mql", "sql"])
                )
            ).one()
            waiting = s.exec(
                select(func.count()).where(
                    func.lower(LeadAlert.owner) == rep, LeadAlert.state == "open"
                )
            ).one()
            row = _rep_row(html, rep)
            assert _figure(row, "open_leads") == str(leads), rep
            assert _figure(row, "waiting") == str(waiting), rep
        states = [s.get(LeadAlert, a).state for a in seeded.emea]  # type: ignore[union-attr]
    # independently of the queries above: Ann (sql) and Hal (mql); Gus is a customer
    assert _figure(_rep_row(html, "sam@example.com"), "open_leads") == "2"
    assert states.count("open") == 4
    assert "2</span> of 5" in _rep_row(html, "sam@example.com")  # against capacity
    assert _figure(html, "team_waiting") == str(states.count("open"))
    assert _figure(html, "team_acknowledged") == str(states.count("acknowledged"))
    assert "by tia@example.com" in html  # who acknowledged the acknowledged one


async def test_an_admin_sees_every_team_and_can_narrow_to_one(
    http: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(http, "ada@example.com")
    r = await http.get("/dashboard/team")
    assert r.status_code == 200 and _teams_shown(r.text) == ["amer", "emea"]
    assert set(_alerts_shown(r.text)) == {*seeded.emea, seeded.kims}
    assert '<label for="team-filter">Team</label>' in r.text and 'id="team-filter"' in r.text
    assert '<label for="show-filter">Alerts</label>' in r.text
    one = await http.get("/dashboard/team", params={"team": "amer"})
    assert _teams_shown(one.text) == ["amer"] and _alerts_shown(one.text) == [seeded.kims]
    assert '<option value="amer" selected>' in one.text
    unknown = await http.get("/dashboard/team", params={"team": "nope"})
    assert _teams_shown(unknown.text) == ["amer", "emea"]


async def test_waiting_only_leaves_acknowledged_alerts_out(
    http: httpx.AsyncClient, seeded: Seeded
) -> None:
    await sign_in(http, "tia@example.com")  # away, but still on the team
    r = await http.get("/dashboard/team", params={"show": "waiting"})
    assert _alerts_shown(r.text) == [a for a in seeded.emea if a != seeded.tias_acked]
    assert _figure(r.text, "team_acknowledged") == "1"  # the count still says so


async def test_a_sales_user_in_no_team_is_told_so(http: httpx.AsyncClient, seeded: Seeded) -> None:
    await sign_in(http, "nora@example.com")
    r = await http.get("/dashboard/team")
    assert r.status_code == 200 and 'data-empty="no-team"' in r.text
    assert _teams_shown(r.text) == [] and _alerts_shown(r.text) == []


async def test_acknowledging_a_teammates_lead_records_who_did_it(
    http: httpx.AsyncClient, engine: Engine, seeded: Seeded, no_temporal: NoTemporal
) -> None:
    await sign_in(http, "sam@example.com")
    page = await http.get("/dashboard/team", params={"show": "waiting"})
    token = form_csrf(page.text)
    assert 'name="back" value="/dashboard/team?show=waiting"' in page.text
    # a plain form POST comes back to the team page it came from
    done = await http.post(
        f"/dashboard/leads/{seeded.tias}/ack",
        data={"csrf_token": token, "back": "/dashboard/team?show=waiting"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/dashboard/team?show=waiting"
    # with htmx, the button becomes the outcome
    inbox = await http.post(
        f"/dashboard/leads/{seeded.inbox}/ack",
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert inbox.status_code == 200 and "Acknowledged by you" in inbox.text
    # another team's lead is not Sam's to acknowledge; nor is a forged way back honoured
    refused = await http.post(
        f"/dashboard/leads/{seeded.kims}/ack", headers={"X-CSRF-Token": token}
    )
    assert refused.status_code == 403
    away = await http.post(
        f"/dashboard/leads/{seeded.sams}/ack",
        data={"csrf_token": token, "back": "https://evil.example/dashboard/team"},
    )
    assert away.headers["location"] == "/dashboard/leads"
    with session_scope(engine) as s:
        for alert_id in (seeded.tias, seeded.inbox, seeded.sams):
            alert = s.get(LeadAlert, alert_id)
            assert alert is not None
            assert (alert.state, alert.acknowledged_by) == ("acknowledged", "sam@example.com")
        kims = s.get(LeadAlert, seeded.kims)
        assert kims is not None and kims.state == "open"
    assert no_temporal.asked == 3  # each acknowledgement tried to tell its follow-up
    after = await http.get("/dashboard/team")
    assert "by you" in _section(after.text, "emea")


async def test_the_queue_is_limited_and_counted_in_sql(
    http: httpx.AsyncClient, engine: Engine, seeded: Seeded
) -> None:
    with session_scope(engine) as s:
        sam = s.exec(select(Contact).where(Contact.email == "ann@example.com")).one()
        for i in range(QUEUE_LENGTH + 5):
            s.add(
                LeadAlert(
                    id=f"{i:04d}{uuid.uuid4().hex[:12]}",
                    key=f"bulk:{i}",
                    contact_id=sam.id,  # type: ignore[arg-type]
                    owner="sam@example.com",
                    reason="bulk",
                    created_at=utcnow() - timedelta(days=1, minutes=i),
                )
            )
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))

    await sign_in(http, "sam@example.com")
    with _listening(engine, record):
        r = await http.get("/dashboard/team")
    shown = _alerts_shown(r.text)
    assert len(shown) == QUEUE_LENGTH and shown[: len(seeded.emea)] == seeded.emea
    assert _figure(r.text, "team_waiting") == str(4 + QUEUE_LENGTH + 5)
    assert f"the newest {QUEUE_LENGTH} shown" in r.text
    alert_reads = [q for q in statements if "FROM lead_alerts" in q]
    assert alert_reads and all("LIMIT" in q or "GROUP BY" in q for q in alert_reads), alert_reads


def test_the_team_queries_on_sqlite_and_postgresql(any_engine: Engine) -> None:
    """The same SQL (the alert's team as COALESCE over an outer join, grouped by it) on both
    databases the engine supports."""
    seeded = seed_teams(any_engine)
    with session_scope(any_engine) as s:
        teams = all_teams(s)
        amer, emea = team_views(s, teams)  # by id
        assert [line.alert_id for line in emea.queue] == seeded.emea
        assert (emea.waiting, emea.acknowledged, amer.waiting) == (4, 1, 1)
        assert {r.email: (r.open_leads, r.waiting) for r in emea.reps} == {
            "sam@example.com": (2, 1),
            "tia@example.com": (2, 1),
        }
        assert alert_team(s, seeded.sams) == "emea" and alert_team(s, seeded.kims) == "amer"
        assert alert_team(s, seeded.not_a_rep) == "emea"  # its own team: the owner left
        assert teams_of(s, " SAM@example.com") == ["emea"] and teams_of(s, "nora@x.org") == []
        waiting = team_views(s, [t for t in teams if t.id == "emea"], waiting_only=True)
        assert seeded.tias_acked not in [line.alert_id for line in waiting[0].queue]
