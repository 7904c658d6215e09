"""Scores in the database, on SQLite and PostgreSQL: the live catch-up and the rebuild agree to
the last bit on a generated history of 10,000 events; reasons, idempotence, decay refresh, and
the decay workflow on Temporal's time-skipping server.

The acceptance point: ``drip scores rebuild`` (``rebuild_scores``) equals the incremental scores,
whether the live path scored each event at once or caught up on a few at a time.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from campaigns.sales import SalesPlan, load_sales_plan
from contacts import repository
from contacts.db import session_scope
from contacts.erasure import erase_contact
from contacts.hygiene import merge_contacts
from contacts.models import Contact, ContactScore, Event, ScoreChange, StageChange, utcnow
from drip.settings import Settings
from tests.support import EXAMPLES
from workflows.score_decay import (
    SCHEDULE_ID,
    DecayInput,
    DecayResult,
    ScoreDecay,
    ScoreDecayActivities,
    ensure_score_decay_schedule,
    refresh_decay,
)
from workflows.score_rebuild import rebuild_scores
from workflows.scoring import apply_scores, score_reasons

PLAN = load_sales_plan(EXAMPLES / "sales.yaml")
DAY = timedelta(days=1)

CONTACTS = 200
EVENTS = 10_000
SPAN = timedelta(days=120)

TITLES = ["Director of Music", "Head of Year 9", "Teacher", "Conductor", None]
ORGANISATIONS = ["club", "school", "choir", "company", None]
PATHS = ["/pricing", "/pricing", "/about", "/careers/tenors", "/blog/tour-tips", "/"]


def _contact(session: Session, email: str, **fields: Any) -> int:
    contact, _ = repository.upsert_contact(session, email, fields)
    assert contact.id is not None
    return contact.id


def _event(
    session: Session, contact_id: int, type: str, at: datetime, name: str = "", **props: Any
) -> int:
    event, _ = repository.record_event(
        session,
        contact_id=contact_id,
        type=type,
        name=name,
        properties=props,
        dedupe_key=f"test:{uuid.uuid4().hex}",
        occurred_at=at,
    )
    assert event.id is not None
    return event.id


def _random_fields(rng: random.Random) -> dict[str, Any]:
    fields = {
        "title": rng.choice(TITLES),
        "organisation_type": rng.choice(ORGANISATIONS),
        "group_size": rng.choice([5, 12, 19, 20, 45, None]),
        "country": rng.choice(["GB", "IE", "DE", "FR"]),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _one_event(rng: random.Random, session: Session, contact_id: int, at: datetime) -> None:
    """One thing a contact does, drawn from the mix the acme rules score (and some they don't)."""
    if rng.random() < 0.05:  # an import or a late webhook: it happened days ago
        at -= timedelta(seconds=rng.uniform(0, 20 * 86400))
    kind = rng.choices(
        ["open", "click", "page", "form", "purchase", "unsubscribe", "score", "field", "other"],
        weights=[34, 15, 20, 5, 5, 1, 5, 5, 10],
    )[0]
    if kind == "open":
        _event(session, contact_id, "open", at)
    elif kind == "click":
        _event(session, contact_id, "click", at, url=f"https://acme.example/{rng.randint(1, 9)}")
    elif kind == "page":
        _event(session, contact_id, "page", at, path=rng.choice(PATHS))
    elif kind == "form":
        _event(session, contact_id, "form", at, rng.choice(["catalogue", "newsletter"]))
    elif kind == "purchase":
        _event(session, contact_id, "event", at, "purchase", amount=rng.randint(50, 1500))
    elif kind == "unsubscribe":
        _event(session, contact_id, "unsubscribe", at)
    elif kind == "score":  # a campaign's update_contact step
        points = rng.choice([-10, -5, 3, 5, 10, 15])
        repository.update_contact(session, contact_id, add_score=points, score_key=uuid.uuid4().hex)
    elif kind == "field":  # fields that flip fit rules on and off
        repository.update_contact(session, contact_id, set_fields=_random_fields(rng))
    else:
        _event(session, contact_id, rng.choice(["sent", "delivered", "tag_added"]), at)


def _generate_and_score_live(engine: Engine, seed: int) -> datetime:
    """~200 contacts and 10,000 events, scored as the live router would: sometimes right after
    an event, sometimes a few events later, sometimes in a later transaction. Returns the
    simulated clock at the end."""
    rng = random.Random(seed)
    clock = utcnow() - SPAN - 10 * DAY
    step = SPAN / EVENTS
    with session_scope(engine) as session:
        ids = [
            _contact(session, f"c{i}@example.com", **_random_fields(rng)) for i in range(CONTACTS)
        ]
    weights = [rng.paretovariate(1.2) for _ in ids]  # a few busy contacts, many quiet ones
    pending: set[int] = set()
    done = 0
    while done < EVENTS:
        size = min(rng.randint(1, 60), EVENTS - done)
        with session_scope(engine) as session:
            for contact_id in rng.choices(ids, weights=weights, k=size):
                clock += step * rng.uniform(0.2, 1.8)
                _one_event(rng, session, contact_id, clock)
                if rng.random() < 0.3:
                    apply_scores(session, contact_id, PLAN, now=clock)
                    pending.discard(contact_id)
                else:
                    pending.add(contact_id)
            for contact_id in sorted(pending):
                if rng.random() < 0.5:
                    apply_scores(session, contact_id, PLAN, now=clock)
                    pending.discard(contact_id)
        done += size
    clock += DAY
    with session_scope(engine) as session:  # the router's sweep catches up on the rest
        for contact_id in ids:
            apply_scores(session, contact_id, PLAN, now=clock)
    return clock


@dataclass(frozen=True)
class Stored:
    score: int
    state: dict[str, Any]
    fit: int


def _stored(engine: Engine) -> dict[int, Stored]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(Contact, ContactScore).join(
                ContactScore, col(ContactScore.contact_id) == col(Contact.id)
            )
        ).all()
        return {c.id or 0: Stored(c.score, r.state, r.fit) for c, r in rows}


def _reasons(engine: Engine) -> Counter[tuple[int, int | None, str, float]]:
    with session_scope(engine) as session:
        return Counter(
            (c.contact_id, c.event_id, c.rule, c.points) for c in session.exec(select(ScoreChange))
        )


def test_rebuild_equals_the_incremental_scores_of_10000_events(any_engine: Engine) -> None:
    now = _generate_and_score_live(any_engine, seed=20261101)
    with session_scope(any_engine) as session:
        assert len(session.exec(select(Event.id)).all()) >= EVENTS
    live = _stored(any_engine)
    assert len(live) == CONTACTS
    assert len({s.score for s in live.values()}) > 20  # a spread of scores, not all zeros
    assert any(s.fit for s in live.values()) and any(s.state["manual"] for s in live.values())
    assert any(s.score < 0 for s in live.values())

    check = rebuild_scores(any_engine, PLAN, now=now, write=False)
    assert (check.contacts, check.changed, check.differences) == (CONTACTS, 0, [])
    assert check.events > EVENTS * 0.7
    assert _stored(any_engine) == live  # --check writes nothing

    # bring every score to the same moment, then store the replay: nothing may move
    assert refresh_decay(any_engine, PLAN, now=now + 3 * DAY) > 0
    refreshed, reasons = _stored(any_engine), _reasons(any_engine)
    stored = rebuild_scores(any_engine, PLAN, now=now + 3 * DAY)
    assert (stored.changed, stored.events) == (0, check.events)
    assert _stored(any_engine) == refreshed  # scores AND states AND fit, bit for bit
    assert _reasons(any_engine) == reasons

    # a corrupted score and a corrupted state are found, and a rebuild repairs them
    victims = sorted(live)[:2]
    with session_scope(any_engine) as session:
        contact = session.get(Contact, victims[0])
        assert contact is not None
        contact.score += 1
        session.add(contact)
        row = session.get(ContactScore, victims[1])
        assert row is not None
        row.state = {**row.state, "manual": row.state["manual"] + 3}
        session.add(row)
    check = rebuild_scores(any_engine, PLAN, now=now + 3 * DAY, write=False)
    assert check.changed == 2
    assert [d.contact_id for d in check.differences] == victims
    assert "score" in check.differences[0].detail
    assert "same events, other points" in check.differences[1].detail
    rebuild_scores(any_engine, PLAN, now=now + 3 * DAY, contact_ids=victims)
    assert rebuild_scores(any_engine, PLAN, now=now + 3 * DAY, write=False).changed == 0
    assert _stored(any_engine) == refreshed


def test_apply_scores_writes_reasons_and_is_idempotent(any_engine: Engine) -> None:
    t0 = utcnow() - 10 * DAY  # before the campaign's score event, which happens now
    with session_scope(any_engine) as s:
        ann = _contact(s, "ann@example.com", title="Head of Music")
        _event(s, ann, "open", t0)
        pricing = _event(s, ann, "page", t0 + timedelta(minutes=5), path="/pricing")
        _event(s, ann, "page", t0 + timedelta(minutes=6), path="/about")
        repository.update_contact(s, ann, add_score=5, score_key="welcome-bonus")
    with session_scope(any_engine) as s:
        first = apply_scores(s, ann, PLAN, now=t0 + timedelta(hours=1))
    assert (first.before, first.after) == (5, 2 + 10 + 5 + 15)
    assert [a.rule for a in first.awards] == ["opened", "pricing", "campaign"]
    assert first.fit == [("decision-maker", 15)]
    assert first.contact.score == 32

    with session_scope(any_engine) as s:
        again = apply_scores(s, ann, PLAN, now=t0 + timedelta(hours=1))
        assert (again.before, again.after, again.awards) == (32, 32, [])
        reasons = score_reasons(s, ann)
    assert [(r.rule, r.points) for r in reasons][:2] == [("campaign", 5.0), ("pricing", 10.0)]
    pricing_row = next(r for r in reasons if r.rule == "pricing")
    assert pricing_row.event_id == pricing and pricing_row.reason == "pricing: page /pricing"
    assert pricing_row.score == 2 + 10 + 15  # the score right after it, with today's fit
    assert len(reasons) == 3

    # a field change that ends a fit rule, and a later event, in one catch-up
    with session_scope(any_engine) as s:
        repository.update_contact(s, ann, set_fields={"title": "Singer"})
        _event(s, ann, "click", t0 + timedelta(hours=2))
        third = apply_scores(s, ann, PLAN, now=t0 + timedelta(hours=2))
    assert (third.before, third.after, third.fit) == (32, 2 + 10 + 5 + 5, [])
    with session_scope(any_engine) as s:
        assert len(score_reasons(s, ann, limit=2)) == 2
        assert len(score_reasons(s, ann)) == 4


def test_without_rules_scores_stay_as_campaigns_set_them(any_engine: Engine) -> None:
    t0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    with session_scope(any_engine) as s:
        bob = _contact(s, "bob@example.com", title="Director")
        _event(s, bob, "page", t0, path="/pricing")
        repository.update_contact(s, bob, add_score=7, score_key="k")
        update = apply_scores(s, bob, SalesPlan(), now=t0)
        assert (update.before, update.after, update.awards, update.fit) == (7, 7, [], [])
        assert s.get(ContactScore, bob) is None
        assert score_reasons(s, bob) == []
    report = rebuild_scores(any_engine, SalesPlan(), now=t0)
    assert not report.enabled and report.contacts == 0
    assert refresh_decay(any_engine, SalesPlan(), now=t0 + 90 * DAY) == 0
    with session_scope(any_engine) as s:
        assert repository.get_contact(s, bob).score == 7


def test_refresh_decay_lowers_scores_as_time_passes(any_engine: Engine) -> None:
    t0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
    with session_scope(any_engine) as s:
        cat = _contact(s, "cat@example.com")
        dan = _contact(s, "dan@example.com", group_size=25)
        _event(s, cat, "form", t0, "catalogue")
        _event(s, dan, "event", t0, "purchase", amount=900)
        repository.update_contact(s, dan, add_score=4, score_key="bonus")
        _contact(s, "eve@example.com")  # never scored: no state, nothing to refresh
        for contact_id in (cat, dan):
            apply_scores(s, contact_id, PLAN, now=t0)

    def scores() -> tuple[int, int]:
        with session_scope(any_engine) as s:
            return (repository.get_contact(s, cat).score, repository.get_contact(s, dan).score)

    assert scores() == (15, 20 + 4 + 10)
    assert refresh_decay(any_engine, PLAN, now=t0) == 0
    assert refresh_decay(any_engine, PLAN, now=t0 + 30 * DAY) == 2
    assert scores() == (8, 10 + 4 + 10)  # 7.5 rounds half away from zero
    assert refresh_decay(any_engine, PLAN, now=t0 + 30 * DAY) == 0
    assert refresh_decay(any_engine, PLAN, now=t0 + 365 * DAY) == 2
    assert scores() == (0, 4 + 10)  # manual and fit points never fade
    no_decay = PLAN.model_copy(
        update={"scoring": PLAN.scoring.model_copy(update={"half_life": None})}
    )
    assert refresh_decay(any_engine, no_decay, now=t0 + 999 * DAY) == 0
    # the stored score was computed at updated_at, so the check still finds no difference
    assert rebuild_scores(any_engine, PLAN, now=t0 + 400 * DAY, write=False).changed == 0


def test_erased_contacts_lose_their_score_rows_and_are_never_rescored(any_engine: Engine) -> None:
    t0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
    with session_scope(any_engine) as s:
        fay = _contact(s, "fay@example.com")
        _event(s, fay, "page", t0, path="/pricing")
        assert apply_scores(s, fay, PLAN, now=t0).after == 10
    with session_scope(any_engine) as s:
        erase_contact(s, fay, requested_by="test")
    with session_scope(any_engine) as s:  # the erasure itself drops the reasons
        assert s.get(ContactScore, fay) is None and score_reasons(s, fay) == []
    with session_scope(any_engine) as s:  # the erasure's unsubscribe event is routed
        assert apply_scores(s, fay, PLAN, now=t0 + DAY).after == 0
        assert s.get(ContactScore, fay) is None and score_reasons(s, fay) == []
    assert refresh_decay(any_engine, PLAN, now=t0 + 30 * DAY) == 0
    assert rebuild_scores(any_engine, PLAN, now=t0 + 30 * DAY).contacts == 0


async def test_the_decay_workflow_refreshes_scores(
    time_env: WorkflowEnvironment, any_engine: Engine
) -> None:
    """What the daily schedule starts, on the time-skipping server (which has no schedules)."""
    month_ago = utcnow() - 30 * DAY
    with session_scope(any_engine) as s:
        gus = _contact(s, "gus@example.com")
        _event(s, gus, "form", month_ago, "catalogue")
        assert apply_scores(s, gus, PLAN, now=month_ago).after == 15
    queue = f"decay-{uuid.uuid4()}"
    activities = ScoreDecayActivities(engine=any_engine, plan=PLAN)
    async with Worker(
        time_env.client, task_queue=queue, workflows=[ScoreDecay], activities=activities.all()
    ):
        result = await time_env.client.execute_workflow(
            ScoreDecay.run, DecayInput(), id=f"decay-{uuid.uuid4()}", task_queue=queue
        )
    assert result == DecayResult(changed=1)
    with session_scope(any_engine) as s:
        assert repository.get_contact(s, gus).score == 7  # 15 halved: 7.5 less a little time


async def test_the_worker_keeps_one_daily_schedule_and_removes_it_without_decay(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    client = dev_env.client
    handle = client.get_schedule_handle(SCHEDULE_ID)

    async def every() -> tuple[timedelta, bool]:
        described = (await handle.describe()).schedule
        assert described.policy.overlap == ScheduleOverlapPolicy.SKIP
        [interval] = described.spec.intervals
        return interval.every, described.state.paused

    assert await ensure_score_decay_schedule(client, settings, PLAN)
    assert await every() == (DAY, False)
    await handle.pause(note="maintenance")
    assert await ensure_score_decay_schedule(client, settings, PLAN, every=2 * DAY)
    assert await every() == (2 * DAY, True)  # updated, and the operator's pause kept

    no_decay = PLAN.model_copy(
        update={"scoring": PLAN.scoring.model_copy(update={"half_life": None})}
    )
    assert not await ensure_score_decay_schedule(client, settings, no_decay)
    with pytest.raises(RPCError) as gone:
        await handle.describe()
    assert gone.value.status == RPCStatusCode.NOT_FOUND
    assert not await ensure_score_decay_schedule(client, settings, SalesPlan())  # absent: fine


def test_an_event_committed_below_the_watermark_is_counted_by_replaying(
    any_engine: Engine,
) -> None:
    """On PostgreSQL ids are taken at insert and become visible at commit, so an event can
    appear below the last folded id. The catch-up notices the count is off and replays, so the
    live score still equals the rebuilt one."""
    t0 = utcnow() - 2 * DAY
    with session_scope(any_engine) as s:
        ann = _contact(s, "ann@example.com")
        elsewhere = _contact(s, "placeholder@example.com")
        late = _event(s, elsewhere, "page", t0, path="/pricing")  # not visible to ann yet
        _event(s, ann, "open", t0 + timedelta(minutes=1))
        _event(s, ann, "click", t0 + timedelta(minutes=2))
    with session_scope(any_engine) as s:
        assert apply_scores(s, ann, PLAN, now=t0 + DAY).after == 2 + 5
    with session_scope(any_engine) as s:  # the slow transaction commits: id below the watermark
        s.execute(sa.update(Event).where(col(Event.id) == late).values(contact_id=ann))
    with session_scope(any_engine) as s:
        update = apply_scores(s, ann, PLAN, now=t0 + DAY)
    assert update.after == 2 + 5 + 10
    report = rebuild_scores(any_engine, PLAN, now=t0 + DAY, contact_ids=[ann], write=False)
    assert report.changed == 0, report.differences
    with session_scope(any_engine) as s:
        assert sorted(r.rule for r in score_reasons(s, ann)) == ["clicked", "opened", "pricing"]


def test_a_merge_rescores_the_combined_history_and_keeps_the_furthest_stage(
    any_engine: Engine,
) -> None:
    t0 = utcnow() - 3 * DAY
    with session_scope(any_engine) as s:
        ann = _contact(s, "ann@example.com")
        dup = _contact(s, "ann.smith@example.com")
        _event(s, ann, "open", t0)
        _event(s, dup, "page", t0 + timedelta(hours=1), path="/pricing")
        _event(s, ann, "click", t0 + timedelta(hours=2))
        apply_scores(s, ann, PLAN, now=t0 + DAY)
        apply_scores(s, dup, PLAN, now=t0 + DAY)
        s.get_one(Contact, dup).stage = "mql"
    with session_scope(any_engine) as s:
        merge_contacts(s, ann, dup, actor="test")
        assert apply_scores(s, ann, PLAN, now=t0 + DAY).after == 2 + 10 + 5
    with session_scope(any_engine) as s:
        kept = s.get_one(Contact, ann)
        assert kept.stage == "mql"
        [move] = s.exec(select(StageChange).where(StageChange.contact_id == ann)).all()
        assert (move.from_stage, move.to_stage) == ("subscriber", "mql")
        assert f"merged with contact {dup}" in move.reason
        assert s.get(ContactScore, dup) is None
    report = rebuild_scores(any_engine, PLAN, now=t0 + DAY, write=False)
    assert report.changed == 0, report.differences
