"""A/B split figures: how each variant's first email did, for ``auto_winner``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from contacts._sql import insert_ignore
from contacts.models import Enrolment, EnrolmentState, Event, Message, MessageState, SplitDecision

__all__ = ["VariantFigures", "decide", "two_proportion_test", "variant_figures"]


def two_proportion_test(
    hits_a: int, n_a: int, hits_b: int, n_b: int
) -> tuple[float | None, float | None]:
    """B against A: the relative uplift of B's rate over A's, and the confidence (1 - p-value of
    a two-sided pooled two-proportion z-test) that the rates differ. None where it is undefined:
    no uplift over a zero rate, no confidence without sends or when both rates are 0% or 100%.
    Shared by the campaign page's splits and the broadcasts' A/B tests."""
    if n_a <= 0 or n_b <= 0:
        return None, None
    rate_a, rate_b = hits_a / n_a, hits_b / n_b
    uplift = (rate_b - rate_a) / rate_a if rate_a > 0 else None
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return uplift, None
    z = (rate_b - rate_a) / spread
    return uplift, 2 * NormalDist().cdf(abs(z)) - 1


@dataclass(frozen=True)
class VariantFigures:
    """One variant, measured on the email its path starts with."""

    step_id: str
    sent: int
    opened: int
    clicked: int
    converted: int
    first_sent: datetime | None

    def rate(self, metric: str) -> float:
        hits = {"open_rate": self.opened, "click_rate": self.clicked}.get(metric, self.converted)
        return hits / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "opened": self.opened,
            "clicked": self.clicked,
            "converted": self.converted,
        }


def variant_figures(
    session: Session, campaign_id: str, variant_steps: Sequence[str]
) -> list[VariantFigures]:
    """Sends, human opens and clicks (the first per message) and conversions per variant step,
    over every version of the campaign (a typo fix must not restart the test)."""
    out = []
    for step_id in variant_steps:
        sent = (
            select(Message.id, Message.workflow_id, Message.created_at)
            .where(
                Message.campaign_id == campaign_id,
                Message.step_id == step_id,
                Message.state == MessageState.sent.value,
            )
            .subquery()
        )
        count, first = session.exec(
            select(sa.func.count(), sa.func.min(sent.c.created_at)).select_from(sent)
        ).one()
        hits = {}
        for kind in ("open", "click"):
            hits[kind] = session.exec(
                select(sa.func.count(sa.distinct(col(Event.message_id)))).where(
                    col(Event.message_id).in_(select(sent.c.id)), Event.type == kind
                )
            ).one()
        converted = session.exec(
            select(sa.func.count()).where(
                col(Enrolment.workflow_id).in_(select(sent.c.workflow_id)),
                Enrolment.state == EnrolmentState.converted.value,
            )
        ).one()
        out.append(
            VariantFigures(
                step_id=step_id,
                sent=count,
                opened=hits["open"],
                clicked=hits["click"],
                converted=converted,
                first_sent=first,
            )
        )
    return out


def decide(
    session: Session,
    *,
    campaign_id: str,
    step_id: str,
    metric: str,
    winner: str,
    figures: Mapping[str, Any],
    now: datetime,
) -> str:
    """Store the decision unless another journey stored one first; the stored winner."""
    insert_ignore(
        session,
        SplitDecision,
        {
            "campaign_id": campaign_id,
            "step_id": step_id,
            "metric": metric,
            "winner": winner,
            "figures": dict(figures),
            "decided_at": now,
        },
        ["campaign_id", "step_id"],
    )
    stored = session.get(SplitDecision, (campaign_id, step_id))
    assert stored is not None
    return stored.winner
