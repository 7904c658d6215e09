"""Assigning qualified leads to reps (``workflows.assignment``) on SQLite and PostgreSQL:
territories in order, weighted round-robin, away and capacity, and the directory sync."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from campaigns.sales import SalesPlan, load_sales_plan
from contacts import repository
from contacts.db import session_scope
from contacts.models import Contact
from contacts.sales_models import SalesRep, SalesTeam
from tests.support import EXAMPLES
from workflows.assignment import Assignment, assign_owner, list_reps, sync_sales_directory

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def _plan(**overrides: Any) -> SalesPlan:
    doc: dict[str, Any] = {
        "teams": [
            {
                "id": "uk",
                "name": "UK",
                "lead": "Priya <priya@acme.example>",
                "reps": [
                    {"email": "tom@acme.example", "weight": 2},
                    {"email": "sara@acme.example"},
                ],
            },
            {"id": "europe", "reps": [{"email": "lena@acme.example"}]},
        ],
        "territories": [
            {"team": "uk", "when": 'contact.country in ["GB", "IE"]'},
            {"team": "europe", "when": "contact.country exists"},
            {"team": "uk"},
        ],
    }
    doc.update(overrides)
    return SalesPlan.model_validate(doc)


def _synced(engine: Engine, plan: SalesPlan) -> None:
    with session_scope(engine) as s:
        sync_sales_directory(s, plan)


def _contact(engine: Engine, email: str, **fields: Any) -> int:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email, fields)
        assert contact.id is not None
        return contact.id


def _assign(engine: Engine, contact_id: int, plan: SalesPlan, now: datetime = NOW) -> Assignment:
    with session_scope(engine) as s:
        contact = s.get(Contact, contact_id)
        assert contact is not None
        return assign_owner(s, contact, plan, now=now)


def _reps(engine: Engine) -> dict[str, SalesRep]:
    with session_scope(engine) as s:
        return {r.email: r for r in s.exec(select(SalesRep))}


def _edit_rep(engine: Engine, email: str, **values: Any) -> None:
    with session_scope(engine) as s:
        rep = s.exec(select(SalesRep).where(SalesRep.email == email)).one()
        for name, value in values.items():
            setattr(rep, name, value)
        s.add(rep)


def test_weights_two_to_one_give_twenty_and_ten_of_thirty(any_engine: Engine) -> None:
    plan = _plan()
    _synced(any_engine, plan)
    owners = Counter(
        _assign(any_engine, _contact(any_engine, f"c{i}@example.com", country="GB"), plan).owner
        for i in range(30)
    )
    assert owners == {"tom@acme.example": 20, "sara@acme.example": 10}
    reps = _reps(any_engine)
    assert reps["tom@acme.example"].assigned == 20 and reps["sara@acme.example"].assigned == 10
    with session_scope(any_engine) as s:
        stored = Counter(c.owner for c in s.exec(select(Contact)))
    assert stored == owners


def test_the_reason_names_territory_rule_and_turn_with_the_example_workspace(
    engine: Engine,
) -> None:
    plan = load_sales_plan(EXAMPLES / "sales.yaml")
    _synced(engine, plan)
    got = _assign(engine, _contact(engine, "ann@example.com", country="GB"), plan)
    assert got == Assignment(
        owner="tom@acme.example",
        team_id="uk",
        reason='territory uk (contact.country in ["GB", "IE"]); '
        "round-robin: tom@acme.example (weight 2, 1 assigned)",
        new=True,
    )
    got = _assign(engine, _contact(engine, "bo@example.com", country="SE"), plan)
    assert got.owner == "lena@acme.example" and got.team_id == "europe"
    assert got.reason.startswith("territory europe (contact.country exists); round-robin")


def test_territories_match_in_order_with_a_catch_all_and_fallbacks(any_engine: Engine) -> None:
    plan = _plan()
    _synced(any_engine, plan)
    ie = _assign(any_engine, _contact(any_engine, "ie@example.com", country="IE"), plan)
    de = _assign(any_engine, _contact(any_engine, "de@example.com", country="DE"), plan)
    nowhere = _assign(any_engine, _contact(any_engine, "x@example.com"), plan)
    assert (ie.team_id, de.team_id, nowhere.team_id) == ("uk", "europe", "uk")
    assert de.owner == "lena@acme.example"
    assert nowhere.reason.startswith("territory uk (everyone else); round-robin")

    # without the catch-all nobody matches a contact without a country: the team inbox hears
    strict = _plan(territories=_plan().model_dump()["territories"][:2])
    missed = _assign(any_engine, _contact(any_engine, "y@example.com"), strict)
    assert missed == Assignment(
        None, None, "no territory matches this contact: nobody assigned", new=True
    )
    no_territories = _plan(territories=[])
    got = _assign(any_engine, _contact(any_engine, "z@example.com", country="GB"), no_territories)
    assert got.owner is None and got.team_id is None and "no territories" in got.reason

    # ... unless there is only one team
    one_team = _plan(teams=_plan().model_dump()["teams"][1:], territories=[])
    only = _assign(any_engine, _contact(any_engine, "w@example.com"), one_team)
    assert (only.owner, only.team_id) == ("lena@acme.example", "europe")
    assert only.reason.startswith("team europe (the only team); round-robin")


def test_away_inactive_and_full_reps_are_skipped(any_engine: Engine) -> None:
    plan = _plan()
    _synced(any_engine, plan)
    _edit_rep(any_engine, "tom@acme.example", away_until=NOW + timedelta(days=3))
    got = _assign(any_engine, _contact(any_engine, "a@example.com", country="GB"), plan)
    assert got.owner == "sara@acme.example"
    assert "skipped tom@acme.example away until 2026-11-05 10:00 UTC" in got.reason

    # back once the date has passed
    later = NOW + timedelta(days=4)
    back = _assign(any_engine, _contact(any_engine, "b@example.com", country="GB"), plan, later)
    assert back.owner == "tom@acme.example" and "skipped" not in back.reason

    # capacity counts open leads (mql, sql) only
    _edit_rep(any_engine, "tom@acme.example", capacity=1)
    _edit_rep(any_engine, "sara@acme.example", capacity=1)
    with session_scope(any_engine) as s:
        for contact in s.exec(select(Contact).where(col(Contact.owner).is_not(None))):
            contact.stage = "mql"
            s.add(contact)
    c = _contact(any_engine, "c@example.com", country="GB")
    full = _assign(any_engine, c, plan, later)
    assert full.owner is None and full.team_id == "uk" and full.new
    assert full.reason == (
        'territory uk (contact.country in ["GB", "IE"]); no rep available '
        "(tom@acme.example at capacity (1 open leads), sara@acme.example at capacity "
        "(1 open leads)): nobody assigned"
    )
    with session_scope(any_engine) as s:
        won = s.exec(select(Contact).where(Contact.email == "b@example.com")).one()
        won.stage = "customer"  # a closed lead frees a place
        s.add(won)
    assert _assign(any_engine, c, plan, later).owner == "tom@acme.example"

    _edit_rep(any_engine, "lena@acme.example", active=False)
    nobody = _assign(any_engine, _contact(any_engine, "d@example.com", country="FR"), plan)
    assert nobody.owner is None and nobody.team_id == "europe"
    assert "team europe has no active reps" in nobody.reason
    assert _reps(any_engine)["lena@acme.example"].assigned == 0


def test_an_existing_owner_is_kept(any_engine: Engine) -> None:
    plan = _plan()
    _synced(any_engine, plan)
    c = _contact(any_engine, "a@example.com", country="GB")
    first = _assign(any_engine, c, plan)
    again = _assign(any_engine, c, plan)
    assert first.new and first.owner == "tom@acme.example"
    assert again == Assignment("tom@acme.example", "uk", "kept owner tom@acme.example", new=False)
    assert _reps(any_engine)["tom@acme.example"].assigned == 1

    with session_scope(any_engine) as s:
        contact = s.get(Contact, _contact(any_engine, "b@example.com", country="DE"))
        assert contact is not None
        contact.owner = "someone@else.example"  # set by hand, not a rep we know
        got = assign_owner(s, contact, plan, now=NOW)
    assert got == Assignment(
        "someone@else.example", None, "kept owner someone@else.example", new=False
    )


def _directory(engine: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with session_scope(engine) as s:
        teams = [t.model_dump() for t in s.exec(select(SalesTeam).order_by(col(SalesTeam.id)))]
        reps = [r.model_dump() for r in s.exec(select(SalesRep).order_by(col(SalesRep.email)))]
    return teams, reps


def test_sync_is_idempotent_owns_file_attributes_only_and_leaves_api_rows(
    any_engine: Engine,
) -> None:
    plan = _plan()
    with session_scope(any_engine) as s:
        s.add(SalesTeam(id="partners", name="Partners", source="api"))
        s.add(SalesTeam(id="europe", name="Europe (API)", source="api"))
        s.flush()
        s.add(SalesRep(email="pat@acme.example", team_id="partners", weight=3, source="api"))
    _synced(any_engine, plan)
    once = _directory(any_engine)
    _synced(any_engine, plan)
    assert _directory(any_engine) == once
    teams = {t["id"]: t for t in once[0]}
    assert (
        teams["uk"]["source"] == "workspace" and teams["uk"]["lead"] == "Priya <priya@acme.example>"
    )
    assert teams["europe"]["name"] == "Europe (API)"  # the API made it: the file does not rename it
    reps = {r["email"]: r for r in once[1]}
    assert reps["tom@acme.example"]["weight"] == 2 and reps["tom@acme.example"]["team_id"] == "uk"
    assert reps["lena@acme.example"]["team_id"] == "europe"  # may join an API team

    # the API sends tom away and deactivates sara; the file then changes weights and drops lena
    away = NOW + timedelta(days=10)
    _edit_rep(any_engine, "tom@acme.example", away_until=away, assigned=7)
    _edit_rep(any_engine, "sara@acme.example", active=False)
    changed = _plan(
        teams=[
            {
                "id": "uk",
                "name": "UK and Ireland",
                "reps": [
                    {"email": "Tom@Acme.example", "name": "Tom", "weight": 3, "capacity": 5},
                    {"email": "sara@acme.example"},
                    {"email": "pat@acme.example", "weight": 9},
                ],
            },
            {"id": "europe", "reps": []},
        ]
    )
    _synced(any_engine, changed)
    reps_now = _reps(any_engine)
    tom = reps_now["tom@acme.example"]
    assert (tom.name, tom.weight, tom.capacity) == ("Tom", 3, 5)
    assert (tom.away_until, tom.assigned, tom.active) == (away, 7, True)
    assert reps_now["sara@acme.example"].active is False  # the API's decision survives
    assert reps_now["lena@acme.example"].active is False  # gone from the file: kept, inactive
    pat = reps_now["pat@acme.example"]
    assert (pat.team_id, pat.weight, pat.source) == ("partners", 3, "api")  # never touched
    with session_scope(any_engine) as s:
        uk = s.get(SalesTeam, "uk")
        assert uk is not None and uk.name == "UK and Ireland" and uk.lead is None
        assert [v.rep.email for v in list_reps(s, team_id="uk")] == [
            "sara@acme.example",
            "tom@acme.example",
        ]


def test_concurrent_assignments_take_different_turns(any_engine: Engine) -> None:
    """Two assignments at once: the second waits for the first's turn to be committed and
    takes the next one, rather than both reading ``assigned = 0`` and picking the same rep."""
    plan = _plan(
        territories=[],
        teams=[{"id": "uk", "reps": [{"email": "a@acme.example"}, {"email": "b@acme.example"}]}],
    )
    _synced(any_engine, plan)
    one = _contact(any_engine, "one@example.com")
    two = _contact(any_engine, "two@example.com")
    first_took_turn, release, second_done = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, Assignment] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with Session(any_engine, expire_on_commit=False) as s:
                contact = s.get(Contact, one)
                assert contact is not None
                results["first"] = assign_owner(s, contact, plan, now=NOW)
                first_took_turn.set()
                assert release.wait(30)
                s.commit()
        except BaseException as exc:
            errors.append(exc)
            first_took_turn.set()

    def second() -> None:
        try:
            assert first_took_turn.wait(30)
            results["second"] = _assign(any_engine, two, plan)
        except BaseException as exc:
            errors.append(exc)
        finally:
            second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert first_took_turn.wait(30)
    # the first transaction holds its turn: the second cannot finish before it commits
    assert not second_done.wait(0.5)
    release.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results["first"].owner == "a@acme.example"
    assert results["second"].owner == "b@acme.example"
    reps = _reps(any_engine)
    assert reps["a@acme.example"].assigned == 1 and reps["b@acme.example"].assigned == 1


def test_concurrent_assignments_split_between_equal_reps(any_engine: Engine) -> None:
    plan = _plan(
        territories=[],
        teams=[{"id": "uk", "reps": [{"email": "a@acme.example"}, {"email": "b@acme.example"}]}],
    )
    _synced(any_engine, plan)
    ids = [_contact(any_engine, f"c{i}@example.com") for i in range(12)]
    owners: list[str | None] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(chunk: list[int]) -> None:
        try:
            start.wait(30)
            for contact_id in chunk:
                owners.append(_assign(any_engine, contact_id, plan).owner)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert Counter(owners) == {"a@acme.example": 6, "b@acme.example": 6}
    reps = _reps(any_engine)
    assert reps["a@acme.example"].assigned == 6 and reps["b@acme.example"].assigned == 6
