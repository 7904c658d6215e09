"""The daily decay refresh: behaviour points fade with ``scoring.half_life``, but nothing
happens to a quiet contact to recompute its score, so a Temporal Schedule does it once a day
(``refresh_decay``: from the stored states only, no event is read).

Why a schedule, as for the segment sweep (``workflows.segments``): one run at a time however
many workers there are (overlap SKIP), failures visible and retried, and operators can pause or
trigger it (``temporal schedule trigger --schedule-id drip-score-decay``). A workspace without
``half_life`` needs no refresh: the worker then removes the schedule, if an earlier start made
one, rather than leave a daily run that does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from sqlalchemy.engine import Engine
    from sqlmodel import col, select
    from temporalio.client import Client

    from campaigns.sales import SalesPlan
    from campaigns.scoring import ScoreState
    from contacts.db import session_scope
    from contacts.models import Contact, ContactScore, utcnow
    from drip.settings import Settings
    from workflows.heartbeat import heartbeating
    from workflows.schedules import delete_schedule, keep_schedule, run_the_activity
    from workflows.scoring import CONTACT_BATCH, scorable, scoring_enabled

__all__ = [
    "SCHEDULE_ID",
    "DecayInput",
    "DecayResult",
    "ScoreDecay",
    "ScoreDecayActivities",
    "decays",
    "ensure_score_decay_schedule",
    "refresh_decay",
    "start_score_decay_schedule",
]

log = logging.getLogger(__name__)

#: One schedule per Temporal namespace: every worker start creates, updates or removes it.
SCHEDULE_ID = "drip-score-decay"
#: Scores are whole numbers and a half-life is days or weeks: once a day keeps them honest.
EVERY = timedelta(days=1)

# The next day's run tries again anyway; an activity retried for ever would hold the single
# (overlap SKIP) slot and quietly stop every later refresh.
DECAY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=3,
)


def decays(plan: SalesPlan) -> bool:
    """Whether scores move with time at all (and so need the refresh)."""
    return scoring_enabled(plan) and plan.scoring.half_life is not None


def refresh_decay(engine: Engine, plan: SalesPlan, *, now: datetime) -> int:
    """Recompute ``contact.score`` at ``now`` from each stored state (no event is read), for
    the contacts that have one; how many scores changed. Without a ``half_life`` scores do not
    move with time, so there is nothing to do.

    Each batch locks its contacts (in id order, as every other writer locks one), so a live
    ``apply_scores`` never interleaves with it. A contact whose newest events are not folded
    yet (``update_contact`` adds campaign points to ``contact.score`` at once) gets the stored
    state's score until ``apply_scores`` folds them, moments later on the live path."""
    half_life = plan.scoring.half_life_seconds
    if half_life is None or not decays(plan):
        return 0
    changed, after = 0, 0
    while True:
        with session_scope(engine) as session:
            rows = session.exec(
                select(Contact, ContactScore)
                .join(ContactScore, col(ContactScore.contact_id) == col(Contact.id))
                .where(col(Contact.id) > after, scorable())
                .order_by(col(Contact.id))
                .limit(CONTACT_BATCH)
                .with_for_update(of=Contact)
            ).all()
            for contact, row in rows:
                score = ScoreState.from_json(row.state).total(now, half_life, row.fit)
                if score != contact.score:
                    # the invariant the rebuild checks: score == state.total(row.updated_at)
                    contact.score, contact.updated_at, row.updated_at = score, now, now
                    session.add_all([contact, row])
                    changed += 1
            if len(rows) < CONTACT_BATCH:
                return changed
            after = rows[-1][0].id or after


@dataclass
class DecayInput:
    """Nothing to say yet; a dataclass all the same, so fields can come later with defaults."""


@dataclass
class DecayResult:
    #: contacts whose score changed
    changed: int = 0


@workflow.defn(name="ScoreDecay")
class ScoreDecay:
    """One scheduled refresh: a single activity call, so the history stays a handful of events."""

    @workflow.run
    async def run(self, inp: DecayInput) -> DecayResult:
        return await run_the_activity(
            "refresh_score_decay",
            inp,
            DecayResult,
            start_to_close=timedelta(hours=1),
            retry_policy=DECAY_RETRY,
        )


class ScoreDecayActivities:
    """The refresh's activity, with the database and the workspace's sales plan."""

    def __init__(self, *, engine: Engine, plan: SalesPlan) -> None:
        self.engine = engine
        self.plan = plan

    def all(self) -> list[Callable[..., object]]:
        return [self.refresh_score_decay]

    @activity.defn(name="refresh_score_decay")
    async def refresh_score_decay(self, inp: DecayInput) -> DecayResult:
        """Every stored score recomputed as of now; a retry recomputes the same numbers."""
        async with heartbeating(every=10.0):
            changed = await asyncio.to_thread(refresh_decay, self.engine, self.plan, now=utcnow())
        if changed:
            log.info("score decay: %d scores changed", changed)
        return DecayResult(changed=changed)


async def ensure_score_decay_schedule(
    client: Client, settings: Settings, plan: SalesPlan, every: timedelta = EVERY
) -> bool:
    """Create the refresh's schedule, or bring an existing one up to date (interval, task
    queue); an operator's pause stays. Without decay in ``plan``, delete it if it exists.
    Safe from every worker at every start; True when a schedule now exists."""
    if not decays(plan):
        await delete_schedule(client, SCHEDULE_ID)
        return False
    await keep_schedule(
        client,
        SCHEDULE_ID,
        ScoreDecay.run,
        DecayInput(),
        task_queue=settings.temporal_task_queue,
        every=every,
        execution_timeout=timedelta(hours=2),
    )
    return True


async def start_score_decay_schedule(client: Client, settings: Settings, plan: SalesPlan) -> None:
    """``ensure_score_decay_schedule`` for the worker's start: journeys matter more than
    decay, so a failure is logged loudly and the worker runs on."""
    try:
        await ensure_score_decay_schedule(client, settings, plan)
    except Exception:
        log.exception(
            "cannot create or update the score decay's Temporal Schedule; scores of quiet "
            "contacts stay as last computed until a worker starts with it"
        )
