"""The figures of one campaign's page, each from a GROUP BY or a count in SQL, never from rows
loaded into Python: per-step counts, the funnel, A/B split results and the version history.

Per-step email figures are the admin API's ``_stats`` (``/api/campaigns/{id}/stats``) and split
figures are ``contacts.splits.variant_figures``, the numbers the engine's ``auto_winner`` decides
on, so the page cannot disagree with either. The engine picks a winner by the higher rate alone;
the page adds what a marketer needs to trust it: the uplift against the first variant and the
confidence of a two-sided two-proportion z-test.

Where the running journeys are is not in our tables: each journey records the step it dwells at
in Temporal (``workflows.positions``). So the page is read in two parts: ``campaign_page`` reads
the database, and ``placed`` adds the counts Temporal gave (or the reason it gave none) to the
step table and the flow picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.diff import diff_plans
from campaigns.graph import step_summary, to_svg
from campaigns.plan import Plan, PlanStep, plan_from_dict
from contacts import deploys, splits
from contacts.models import (
    CampaignVersion,
    Enrolment,
    EnrolmentState,
    Message,
    MessageState,
    SplitDecision,
)
from contacts.splits import two_proportion_test
from webhooks.admin.campaigns import CampaignStats, StepFigures
from webhooks.admin.campaigns import _stats as campaign_stats
from workflows.positions import DWELL_KINDS

__all__ = [
    "CampaignPage",
    "FunnelStage",
    "SplitResult",
    "StepRow",
    "VariantResult",
    "VersionRow",
    "campaign_page",
    "dwell_steps",
    "placed",
    "two_proportion_test",
]

#: how many deployments the page lists (newest first); older ones stay in ``drip campaigns``
VERSIONS_SHOWN = 20

_METRIC_NAMES = {
    "open_rate": "open rate",
    "click_rate": "click rate",
    "conversion_rate": "conversion rate",
}


@dataclass(frozen=True)
class StepRow:
    id: str
    kind: str
    summary: str
    #: running journeys at this step now; None where none can be (a step passed straight
    #: through) or while Temporal cannot say (``CampaignPage.positions``)
    here_now: int | None
    #: a journey can be found at this step (``positions.DWELL_KINDS``)
    dwell: bool
    #: send steps only
    emails: StepFigures | None


@dataclass(frozen=True)
class FunnelStage:
    label: str
    contacts: int
    #: of the contacts who entered
    share: float | None


@dataclass(frozen=True)
class VariantResult:
    name: str
    step_id: str
    sent: int
    opened: int
    clicked: int
    converted: int
    rate: float | None
    #: against the first variant (None for the first itself)
    uplift: float | None
    confidence: float | None


@dataclass(frozen=True)
class SplitResult:
    step_id: str
    metric: str
    variants: list[VariantResult]
    winner: str | None


@dataclass(frozen=True)
class VersionRow:
    version: str
    status: str
    deployed_at: datetime
    source: str
    #: what changed from the deployment before it (empty for the first)
    changes: list[str]


@dataclass(frozen=True)
class CampaignPage:
    id: str
    name: str
    status: str
    version: str
    plan: Plan
    svg: str
    stats: CampaignStats
    steps: list[StepRow]
    #: running journeys at no step of the live plan: not at a dwelling step yet, at a step of
    #: an older version, or started before journeys recorded their step (see ``placed``)
    step_unknown: int
    #: why the "here now" figures are missing ("" when Temporal gave them)
    positions: str
    funnel: list[FunnelStage]
    splits: list[SplitResult]
    versions: list[VersionRow]
    goal: str


def _funnel(session: Session, campaign_id: str, stats: CampaignStats) -> list[FunnelStage]:
    enrolled = select(sa.func.count(sa.distinct(col(Enrolment.contact_id)))).where(
        Enrolment.campaign_id == campaign_id
    )
    entered = session.exec(enrolled).one()
    converted = session.exec(
        enrolled.where(Enrolment.state == EnrolmentState.converted.value)
    ).one()
    emailed = session.exec(
        select(sa.func.count(sa.distinct(col(Message.contact_id)))).where(
            Message.campaign_id == campaign_id, Message.state == MessageState.sent.value
        )
    ).one()
    stages = [
        ("Entered", entered),
        ("Emailed", emailed),
        ("Opened", stats.emails.unique_opens),
        ("Clicked", stats.emails.unique_clicks),
        ("Converted", converted),
    ]
    return [FunnelStage(label, n, n / entered if entered else None) for label, n in stages]


def _split_metric(plan: Plan, step: PlanStep) -> str:
    if step.winner_metric:
        return step.winner_metric
    return "conversion_rate" if plan.goal_event else "click_rate"


def _split(session: Session, plan: Plan, step: PlanStep) -> SplitResult:
    metric = _split_metric(plan, step)
    figures = splits.variant_figures(session, plan.campaign_id, [v.goto for v in step.variants])

    def hits(f: splits.VariantFigures) -> int:
        return {"open_rate": f.opened, "click_rate": f.clicked}.get(metric, f.converted)

    results = []
    for i, (variant, f) in enumerate(zip(step.variants, figures, strict=True)):
        uplift = confidence = None
        if i:
            base = figures[0]
            uplift, confidence = two_proportion_test(hits(base), base.sent, hits(f), f.sent)
        results.append(
            VariantResult(
                name=variant.name,
                step_id=variant.goto,
                sent=f.sent,
                opened=f.opened,
                clicked=f.clicked,
                converted=f.converted,
                rate=hits(f) / f.sent if f.sent else None,
                uplift=uplift,
                confidence=confidence,
            )
        )
    decided = session.get(SplitDecision, (plan.campaign_id, step.id))
    return SplitResult(
        step_id=step.id,
        metric=_METRIC_NAMES.get(metric, metric.replace("_", " ")),
        variants=results,
        winner=decided.winner if decided else None,
    )


def _versions(history: Sequence[CampaignVersion]) -> list[VersionRow]:
    """Newest first; each with its changes from the one before (one more row is read for the
    oldest shown)."""
    rows = []
    for newer, older in zip(history, [*history[1:], None], strict=True):
        changes: list[str] = []
        if older is not None:
            if older.version != newer.version:
                changes += [
                    str(c)
                    for c in diff_plans(plan_from_dict(older.plan), plan_from_dict(newer.plan))
                ]
            if older.status != newer.status:
                changes.append(f"~ status: {older.status} -> {newer.status}")
        rows.append(
            VersionRow(
                version=newer.version,
                status=newer.status,
                deployed_at=newer.deployed_at,
                source=newer.source,
                changes=changes,
            )
        )
    return rows[:VERSIONS_SHOWN]


def _note(row: StepRow) -> str:
    """The figures written into the step's box in the flow picture (the table has them all).
    "Here now" only when it is known and not zero, so a box stays short."""
    here = f"{row.here_now:,} here now" if row.here_now else ""
    if row.emails is None:
        return here
    sent = f"{row.emails.sent:,} sent · {row.emails.unique_opens:,} opened"
    return f"{here} · {sent}" if here else sent


def dwell_steps(page: CampaignPage) -> list[str]:
    """The steps of the live plan a journey can be found at: the ones Temporal is asked for."""
    return [row.id for row in page.steps if row.dwell]


def placed(page: CampaignPage, here: Mapping[str, int] | None, why: str = "") -> CampaignPage:
    """The page with the running journeys at each step, as Temporal counted them, or with
    ``why`` they are unknown (``here`` None). The journeys not counted at any step are the
    running enrolments less the counted ones; the two are read a moment apart, so that
    difference is floored at zero rather than shown negative."""
    if here is None:
        steps = [replace(row, here_now=None) for row in page.steps]
        unknown = 0
    else:
        steps = [
            replace(row, here_now=here.get(row.id, 0) if row.dwell else None) for row in page.steps
        ]
        unknown = max(0, page.stats.journeys.running - sum(here.values()))
    page = replace(page, steps=steps, step_unknown=unknown, positions=why if here is None else "")
    return replace(page, svg=to_svg(page.plan, notes={row.id: _note(row) for row in steps}))


def campaign_page(session: Session, campaign_id: str) -> CampaignPage | None:
    """Everything the page shows from the database, or None for a campaign never deployed;
    ``placed`` adds where its running journeys are and draws the flow."""
    history = deploys.version_history(session, campaign_id)[: VERSIONS_SHOWN + 1]
    if not history:
        return None
    current = history[0]
    plan = plan_from_dict(current.plan)
    stats = campaign_stats(session, campaign_id)
    emails = {f.step_id: f for f in stats.steps}
    steps = [
        StepRow(
            id=step_id,
            kind=step.kind,
            summary="; ".join(step_summary(step)),
            here_now=None,
            dwell=step.kind in DWELL_KINDS,
            emails=emails.get(step_id, StepFigures(step_id=step_id))
            if step.kind == "send_email"
            else None,
        )
        for step_id, step in plan.steps.items()
    ]
    return CampaignPage(
        id=campaign_id,
        name=plan.name or campaign_id,
        status=current.status,
        version=current.version,
        plan=plan,
        svg="",  # drawn by ``placed``, with the positions in the steps' boxes
        stats=stats,
        steps=steps,
        step_unknown=0,
        positions="not asked",
        funnel=_funnel(session, campaign_id, stats),
        splits=[_split(session, plan, s) for s in plan.steps.values() if s.kind == "split"],
        versions=_versions(history),
        goal=plan.goal_event,
    )
