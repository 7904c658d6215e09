"""Lead alerts in the contact database: first acknowledgement wins, the lead's summary, listing.

``make_lead`` is also what the delivery, acknowledge-link and admin API tests start from: a
contact with a score and its reasons, a stage change, a few events, a campaign and one alert.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from contacts import alerts, repository
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import ContactScore, LeadAlert, ScoreChange, StageChange

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
JANE = {
    "first_name": "Jane",
    "last_name": "Doe",
    "company": "Acme Ltd",
    "title": "Head of Outdoor Trips",
    "country": "GB",
    "phone": "+44 20 7946 0000",
}


def make_lead(
    engine: Engine,
    email: str = "jane@example.com",
    fields: dict[str, Any] | None = None,
    *,
    owner: str | None = "tom@acme.example",
    team_id: str | None = "uk",
    reason: str = "mql: contact.score >= 25 held (score 42: pricing +10, clicked +5)",
    reasons: int = 3,
    created_at: datetime = T0,
) -> tuple[int, str]:
    """A qualified lead with one open alert: (contact id, alert id)."""
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email, JANE if fields is None else fields)
        assert contact.id is not None
        contact.score, contact.stage, contact.owner = 42, "mql", owner
        s.add(contact)
        s.add(ContactScore(contact_id=contact.id, fit=15))
        for i in range(reasons):
            s.add(
                ScoreChange(
                    contact_id=contact.id,
                    rule=f"rule-{i}",
                    points=10 if i % 2 else -2.5,
                    score=10 * i,
                    reason=f"rule-{i}: page /pricing-{i}",
                    at=T0 - timedelta(hours=reasons - i),
                )
            )
        s.add(
            StageChange(
                contact_id=contact.id,
                from_stage="lead",
                to_stage="mql",
                reason="mql: contact.score >= 25 held",
                at=T0,
            )
        )
        activity: list[tuple[str, str, dict[str, Any]]] = [
            ("page", "", {"path": "/pricing"}),
            ("click", "newsletter", {"url": "https://acme.example/tents"}),
            ("form", "catalogue", {"group_size": 24}),
        ]
        for i, (type_, name, props) in enumerate(activity):
            repository.record_event(
                s,
                contact_id=contact.id,
                type=type_,
                name=name,
                properties=props,
                dedupe_key=f"{email}:{i}",
                occurred_at=T0 - timedelta(minutes=30 - i),
            )
        repository.record_enrolment(
            s,
            campaign_id="welcome",
            campaign_version="v1",
            contact_id=contact.id,
            workflow_id=f"journey/welcome/{contact.id}/1",
        )
        alert_id = uuid.uuid4().hex
        s.add(
            LeadAlert(
                id=alert_id,
                key=f"stage:{alert_id}",
                contact_id=contact.id,
                owner=owner,
                team_id=team_id,
                reason=reason,
                created_at=created_at,
            )
        )
        return contact.id, alert_id


def test_the_first_acknowledgement_wins_and_a_repeat_changes_nothing(any_engine: Engine) -> None:
    _, alert_id = make_lead(any_engine)
    with session_scope(any_engine) as s:
        alert, first = alerts.acknowledge_alert(s, alert_id, "tom@acme.example")
    assert first and alert.state == "acknowledged" and alert.acknowledged_by == "tom@acme.example"
    at = alert.acknowledged_at
    with session_scope(any_engine) as s:
        again, second = alerts.acknowledge_alert(s, alert_id, "link")
    assert not second
    assert (again.acknowledged_by, again.acknowledged_at) == ("tom@acme.example", at)
    with session_scope(any_engine) as s, pytest.raises(NotFound):
        alerts.acknowledge_alert(s, "no-such-alert", "link")


def test_racing_acknowledgements_have_one_winner(any_engine: Engine) -> None:
    _, alert_id = make_lead(any_engine)
    barrier = threading.Barrier(4)
    wins: list[str] = []

    def press(who: str) -> None:
        barrier.wait()
        with session_scope(any_engine) as s:
            _, first = alerts.acknowledge_alert(s, alert_id, who)
        if first:
            wins.append(who)

    threads = [threading.Thread(target=press, args=(f"rep-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with session_scope(any_engine) as s:
        assert alerts.get_alert(s, alert_id).acknowledged_by == wins[0]


def test_the_summary_says_who_why_what_and_where(engine: Engine) -> None:
    contact_id, _ = make_lead(engine, reasons=12)
    with session_scope(engine) as s:
        repository.record_event(
            s, contact_id=contact_id, type="sales_alert", name="email", dedupe_key="ours"
        )
        summary = alerts.lead_summary(s, contact_id)
    assert (summary.name, summary.display_name, summary.email) == (
        "Jane Doe",
        "Jane Doe",
        "jane@example.com",
    )
    assert (summary.company, summary.title, summary.country, summary.phone) == (
        "Acme Ltd",
        "Head of Outdoor Trips",
        "GB",
        "+44 20 7946 0000",
    )
    assert summary.fit_points == 15
    assert summary.stage_reason == "mql: contact.score >= 25 held"
    # the ten newest reasons, newest first
    assert [r.rule for r in summary.reasons] == [f"rule-{i}" for i in range(11, 1, -1)]
    assert summary.reasons[0].points == 10 and summary.reasons[1].points == -2.5
    # what the contact did, newest first; our own alert records are not activity
    assert [(e.type, e.name, e.detail) for e in summary.events] == [
        ("form", "catalogue", "group_size 24"),
        ("click", "newsletter", "url https://acme.example/tents"),
        ("page", "", "path /pricing"),
    ]
    [campaign] = summary.campaigns
    assert (campaign.campaign_id, campaign.state, campaign.current_step) == (
        "welcome",
        "running",
        None,  # the step is in Temporal, not in these tables
    )
    # as the alert activity adds it from Temporal (workflows.positions.current_steps)
    wid = campaign.workflow_id
    [placed] = alerts.with_steps(summary, {wid: "tips", "journey/other/1/1": "x"}).campaigns
    assert (placed.workflow_id, placed.current_step) == (f"journey/welcome/{contact_id}/1", "tips")
    with pytest.raises(NotFound):
        alerts.lead_summary(s, 999)


def test_a_contact_without_a_name_is_shown_by_address(engine: Engine) -> None:
    contact_id, _ = make_lead(engine, "anon@example.com", {"name": "  "}, reasons=0)
    with session_scope(engine) as s:
        summary = alerts.lead_summary(s, contact_id)
    assert summary.name is None and summary.display_name == "anon@example.com"
    assert summary.company is None and summary.reasons == []


def test_alerts_list_by_owner_and_state_in_stable_pages(engine: Engine) -> None:
    ids = [
        make_lead(
            engine,
            f"lead{i}@example.com",
            owner="Tom@Acme.example" if i % 2 else None,
            created_at=T0 + timedelta(minutes=i // 2),  # pairs share a time: the id breaks ties
        )[1]
        for i in range(6)
    ]
    with session_scope(engine) as s:
        alerts.acknowledge_alert(s, ids[1], "tom@acme.example")
        newest_first = [a.id for a in alerts.list_alerts(s)]
        assert set(newest_first) == set(ids)
        assert [a.id for a in alerts.list_alerts(s, owner="tom@acme.EXAMPLE")] == [
            i for i in newest_first if i in {ids[1], ids[3], ids[5]}
        ]
        assert [a.id for a in alerts.list_alerts(s, state="acknowledged")] == [ids[1]]
        pages, before = [], None
        while True:
            page = alerts.list_alerts(s, before=before, limit=4)
            pages += [a.id for a in page]
            if len(page) < 4:
                break
            before = (page[-1].created_at, page[-1].id)
    assert pages == newest_first


def test_a_reminder_is_marked_once(engine: Engine) -> None:
    _, alert_id = make_lead(engine)
    with session_scope(engine) as s:
        alerts.mark_followed_up(s, alert_id, "reminder", at=T0)
        alerts.mark_followed_up(s, alert_id, "reminder", at=T0 + timedelta(hours=1))
        alerts.mark_followed_up(s, alert_id, "alert")
    with session_scope(engine) as s:
        alert = alerts.get_alert(s, alert_id)
    assert (alert.reminded_at, alert.escalated_at) == (T0, None)
