"""Two sales teams with reps, leads and alerts in every state the team page tells apart;
shared by the team page's HTTP and browser tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.engine import Engine

from contacts import repository
from contacts.db import session_scope
from contacts.models import LeadAlert, utcnow
from contacts.sales_models import SalesRep, SalesTeam
from tests.dashboard.support import make_user


@dataclass
class Seeded:
    #: alert ids by what they are
    sams: str
    tias: str
    tias_acked: str
    inbox: str
    kims: str
    not_a_rep: str
    #: every alert of the emea team, newest first
    emea: list[str] = field(default_factory=list)


class NoTemporal:
    """The app's journey gateway with Temporal away: acknowledging must still work (the
    database is what stops reminders); remembers that it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def client(self) -> None:
        self.asked += 1
        raise ConnectionError("no Temporal in this test")


def _lead(engine: Engine, email: str, owner: str | None, name: str, stage: str, score: int) -> int:
    """A contact owned (as assignment stores it: lower-case) by ``owner``."""
    with session_scope(engine) as s:
        first, _, last = name.partition(" ")
        contact, _ = repository.upsert_contact(
            s, email, {"first_name": first, "last_name": last}, consent_source="test"
        )
        assert contact.id is not None
        contact.owner = owner.lower() if owner else None
        contact.stage, contact.score = stage, score
        return contact.id


def _alert(
    engine: Engine,
    email: str,
    owner: str | None,
    *,
    name: str,
    minutes_ago: int,
    team: str | None = None,
    acked_by: str | None = None,
) -> str:
    contact_id = _lead(engine, email, owner, name, "sql", 40 + minutes_ago)
    with session_scope(engine) as s:
        alert_id = uuid.uuid4().hex
        at = utcnow() - timedelta(minutes=minutes_ago)
        s.add(
            LeadAlert(
                id=alert_id,
                key=f"test:{alert_id}",
                contact_id=contact_id,
                owner=owner,
                team_id=team,
                reason=f"became a sales-qualified lead: {name} visited pricing\nAssigned: test",
                created_at=at,
                state="acknowledged" if acked_by else "open",
                acknowledged_by=acked_by,
                acknowledged_at=at + timedelta(minutes=1) if acked_by else None,
            )
        )
    return alert_id


def seed_teams(engine: Engine) -> Seeded:
    """emea: Sam (capacity 5), Tia (away for a week); amer: Kim. Users for each, plus Mia
    (marketer), Ada (admin) and Nora (sales, in no team)."""
    for email, role, name in (
        ("mia@example.com", "marketer", "Mia"),
        ("sam@example.com", "sales", "Sam"),
        ("tia@example.com", "sales", "Tia"),
        ("kim@example.com", "sales", "Kim"),
        ("nora@example.com", "sales", "Nora"),
        ("ada@example.com", "admin", "Ada Admin"),
    ):
        make_user(engine, email, role, name)
    with session_scope(engine) as s:
        s.add(SalesTeam(id="emea", name="EMEA", lead="Lena <lena@example.com>"))
        s.add(SalesTeam(id="amer", name="Americas"))
        s.flush()
        s.add(SalesRep(email="sam@example.com", name="Sam Seller", team_id="emea", capacity=5))
        s.add(SalesRep(email="tia@example.com", name="Tia Teammate", team_id="emea",
                       away_until=utcnow() + timedelta(days=7)))  # fmt: skip
        s.add(SalesRep(email="kim@example.com", name="Kim Other", team_id="amer"))
    seeded = Seeded(
        sams=_alert(
            engine, "ann@example.com", "Sam@example.com", name="Ann Archer", minutes_ago=50
        ),
        tias=_alert(engine, "ben@example.com", "tia@example.com", name="Ben Baker", minutes_ago=40),
        tias_acked=_alert(
            engine,
            "cat@example.com",
            "tia@example.com",
            name="Cat Cole",
            minutes_ago=30,
            acked_by="tia@example.com",
        ),
        inbox=_alert(engine, "dan@example.com", None, name="Dan Dunn", minutes_ago=20, team="emea"),
        kims=_alert(
            engine,
            "eve@example.com",
            "kim@example.com",
            name="Eve Evans",
            minutes_ago=10,
            team="amer",
        ),
        not_a_rep=_alert(
            engine,
            "fay@example.com",
            "former@example.com",
            name="Fay Fox",
            minutes_ago=5,
            team="emea",
        ),
    )
    # Sam's too: a customer (a closed stage, so not an open lead) and an mql without an alert
    _lead(engine, "gus@example.com", "sam@example.com", "Gus Gray", "customer", 90)
    _lead(engine, "hal@example.com", "sam@example.com", "Hal Hill", "mql", 20)
    seeded.emea = [seeded.not_a_rep, seeded.inbox, seeded.tias_acked, seeded.tias, seeded.sams]
    return seeded
