"""Keeping the campaign rollups (``contacts.rollup_models``) and reading them.

Writers call ``add_reach`` and ``add_bot_hits`` in the transaction that records what they
count, so a rollup can never run ahead of or behind its source: the hit consumer
(``contacts.hits``) for tracked opens, clicks and flagged hits, and
``contacts.repository.record_event`` for an open or click of a message recorded any other way.
``move_reach`` follows a contact merge. ``recount`` is the same figures computed from the
events and hits themselves: ``rebuild`` replaces the rollups with it (``drip db rollups``;
the migration that made the tables filled them the same way) and ``compare`` says where they
differ, which the tests use to hold the live path to the full count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from contacts.models import Event, Hit, Message
from contacts.rollup_models import CAMPAIGN_WIDE, CampaignCounter, CampaignReach

__all__ = [
    "ReachKey",
    "RollupDiff",
    "add_bot_hits",
    "add_reach",
    "bot_counts",
    "compare",
    "move_reach",
    "reach_counts",
    "rebuild",
    "recount",
]

#: (campaign_id, step_id, kind): ``step_id`` is ``CAMPAIGN_WIDE`` for the whole campaign
ReachKey = tuple[str, str, str]
_REACH = SQLModel.metadata.tables["campaign_reach"]
_COUNTERS = SQLModel.metadata.tables["campaign_counters"]
_KINDS = ("open", "click")


def _insert(session: Session, table: sa.Table) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def add_reach(session: Session, firsts: Iterable[tuple[str, str, str, int]]) -> None:
    """Record (campaign, step, kind, contact) of human opens and clicks; already-known pairs
    change nothing, so recording a contact's second open of a campaign is harmless."""
    rows = {
        (campaign, step, kind, contact)
        for campaign, step_id, kind, contact in firsts
        for step in (step_id, CAMPAIGN_WIDE)
    }
    if not rows:
        return
    values = [
        {"campaign_id": c, "step_id": s, "kind": k, "contact_id": n} for c, s, k, n in sorted(rows)
    ]
    session.execute(_insert(session, _REACH).on_conflict_do_nothing(), values)


def add_bot_hits(session: Session, counts: Mapping[tuple[str, str], int]) -> None:
    """Add ``n`` flagged hits of ``kind`` (``open`` or ``click``) to each campaign's total.

    One upsert per (campaign, kind) of a consumed batch, not per hit: a mailing's worth of
    privacy-proxy opens touches each counter row once per batch, which keeps two consumers on
    PostgreSQL from queueing on the same row hit after hit."""
    for (campaign_id, kind), n in sorted(counts.items()):
        if n <= 0:
            continue
        stmt = _insert(session, _COUNTERS).values(
            campaign_id=campaign_id, metric=f"bot_{kind}", n=n
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["campaign_id", "metric"], set_={"n": _COUNTERS.c.n + n}
            )
        )


def move_reach(session: Session, keep_id: int, merge_id: int) -> None:
    """A merged contact's reach becomes the kept contact's (one row where both had one)."""
    moved = select(
        CampaignReach.campaign_id,
        CampaignReach.kind,
        CampaignReach.step_id,
        sa.literal(keep_id).label("contact_id"),
    ).where(CampaignReach.contact_id == merge_id)
    session.execute(
        _insert(session, _REACH)
        .from_select(["campaign_id", "kind", "step_id", "contact_id"], moved)
        .on_conflict_do_nothing()
    )
    session.execute(sa.delete(CampaignReach).where(col(CampaignReach.contact_id) == merge_id))


def reach_counts(session: Session, campaign_id: str | None = None) -> dict[ReachKey, int]:
    """Unique human openers and clickers: per step, and campaign-wide under ``CAMPAIGN_WIDE``;
    every campaign's, or one's."""
    query = select(
        CampaignReach.campaign_id, CampaignReach.step_id, CampaignReach.kind, sa.func.count()
    ).group_by(col(CampaignReach.campaign_id), col(CampaignReach.step_id), col(CampaignReach.kind))
    if campaign_id is not None:
        query = query.where(CampaignReach.campaign_id == campaign_id)
    return {(c, s, k): n for c, s, k, n in session.exec(query)}


def bot_counts(session: Session) -> dict[tuple[str, str], int]:
    """Machine opens and clicks per campaign: ``(campaign_id, "open" | "click") -> n``."""
    rows = session.exec(
        select(CampaignCounter.campaign_id, CampaignCounter.metric, col(CampaignCounter.n))
    )
    return {(c, m.removeprefix("bot_")): n for c, m, n in rows if m.startswith("bot_")}


def _reach_source() -> Any:
    """Every (campaign, step, kind, contact) the events hold, step rows and campaign rows."""
    per_step = (
        select(Message.campaign_id, Event.type, Message.step_id, Event.contact_id)
        .select_from(Event)
        .join(Message, col(Message.id) == col(Event.message_id))
        .where(col(Event.type).in_(_KINDS))
    )
    campaign_wide = (
        select(
            Message.campaign_id,
            Event.type,
            sa.literal(CAMPAIGN_WIDE).label("step_id"),
            Event.contact_id,
        )
        .select_from(Event)
        .join(Message, col(Message.id) == col(Event.message_id))
        .where(col(Event.type).in_(_KINDS))
    )
    return sa.union(per_step, campaign_wide).subquery()


def _bots_source() -> Any:
    return (
        select(Message.campaign_id, Hit.kind, sa.func.count().label("n"))
        .select_from(Hit)
        .join(Message, col(Message.id) == col(Hit.message_id))
        .where(col(Hit.bot_reason).is_not(None))
        .group_by(col(Message.campaign_id), col(Hit.kind))
    )


@dataclass(frozen=True)
class Recount:
    reach: dict[ReachKey, int]
    bots: dict[tuple[str, str], int]


def recount(session: Session) -> Recount:
    """The rollups' figures computed from the events and hits: slow, exact, the reference."""
    source = _reach_source()
    reach = {
        (c, s, k): n
        for c, k, s, n in session.execute(
            sa.select(
                source.c.campaign_id, source.c.type, source.c.step_id, sa.func.count()
            ).group_by(source.c.campaign_id, source.c.type, source.c.step_id)
        )
    }
    bots = {(c, k): n for c, k, n in session.execute(_bots_source())}
    return Recount(reach=reach, bots=bots)


@dataclass(frozen=True)
class RollupDiff:
    """Where the stored rollups and a recount disagree: key -> (stored, recounted)."""

    reach: dict[ReachKey, tuple[int, int]]
    bots: dict[tuple[str, str], tuple[int, int]]

    @property
    def same(self) -> bool:
        return not self.reach and not self.bots

    def rows(self) -> list[tuple[tuple[str, ...], int, int]]:
        """(key, stored, recounted) of every difference, sorted."""
        found: list[tuple[tuple[str, ...], int, int]] = []
        found += [(key, *pair) for key, pair in self.reach.items()]
        found += [(key, *pair) for key, pair in self.bots.items()]
        return sorted(found)


def compare(session: Session) -> RollupDiff:
    fresh = recount(session)
    stored_reach, stored_bots = reach_counts(session), bot_counts(session)

    def diff(a: Mapping[Any, int], b: Mapping[Any, int]) -> dict[Any, tuple[int, int]]:
        return {
            k: (a.get(k, 0), b.get(k, 0)) for k in a.keys() | b.keys() if a.get(k, 0) != b.get(k, 0)
        }

    return RollupDiff(reach=diff(stored_reach, fresh.reach), bots=diff(stored_bots, fresh.bots))


def rebuild(session: Session) -> None:
    """Replace the rollups with a recount, in SQL (``INSERT ... SELECT``), in the caller's
    transaction: readers see the old figures or the new, never an empty table."""
    session.execute(sa.delete(CampaignReach))
    source = _reach_source()
    session.execute(
        sa.insert(_REACH).from_select(
            ["campaign_id", "kind", "step_id", "contact_id"],
            sa.select(source.c.campaign_id, source.c.type, source.c.step_id, source.c.contact_id),
        )
    )
    session.execute(sa.delete(CampaignCounter))
    bots = _bots_source().subquery()
    session.execute(
        sa.insert(_COUNTERS).from_select(
            ["campaign_id", "metric", "n"],
            sa.select(bots.c.campaign_id, sa.literal("bot_") + bots.c.kind, bots.c.n),
        )
    )
