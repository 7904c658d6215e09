"""The engagement figures of a broadcast send: opens by hour since sending, and the A/B test.

Public through ``contacts.broadcast_reports`` (see there for how every figure is counted).

The A/B result compares the leader (the picked winner, or the best rate while the test runs)
with every other variant: the relative uplift of its rate, and the confidence (1 - p-value) of a
two-sided pooled two-proportion z-test (``contacts.splits.two_proportion_test``) that the two
rates differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from contacts.broadcast_models import BroadcastRecipient, BroadcastSend
from contacts.models import Event, Message, MessageState
from contacts.splits import two_proportion_test

__all__ = [
    "HOURS_SHOWN",
    "ABResult",
    "HourlyActivity",
    "VariantResult",
    "ab_result",
    "hourly_activity",
]

#: opens by hour: the first this many hours after the send started
HOURS_SHOWN = 72


@dataclass(frozen=True)
class VariantResult:
    id: str
    subject: str
    sent: int
    opened: int
    clicked: int
    #: opened (or clicked, by the test's metric) over sent
    rate: float | None
    #: the leader's rate over this variant's, relative (+0.25: a quarter higher); None for
    #: the leader itself, or when this variant's rate is 0
    uplift: float | None
    #: of the z-test leader against this variant; None for the leader, or when undefined
    confidence: float | None


@dataclass(frozen=True)
class ABResult:
    #: ``opens`` or ``clicks``
    metric: str
    #: recipients in the test
    sample: int
    #: the picked winner (None while the test runs)
    winner: str | None
    #: the winner, or the variant with the best rate so far
    leader: str | None
    variants: list[VariantResult]
    #: the figures the engine picked the winner on, as recorded then
    picked_on: dict[str, Any]


@dataclass(frozen=True)
class HourlyActivity:
    #: the start of hour 0 (the clock hour in which the send started), UTC
    start: datetime
    #: human first opens and first clicks, per hour since ``start``
    opened: list[int]
    clicked: list[int]

    def chart_data(self) -> dict[str, Any]:
        """What ``static/charts.js`` draws: hours since sending on x, one line per kind."""
        return {
            "unit": "hour",
            "x": list(range(len(self.opened))),
            "series": [
                {"key": "opened", "label": "Opened", "values": self.opened},
                {"key": "clicked", "label": "Clicked", "values": self.clicked},
            ],
        }


def _hour_bucket(session: Session) -> ColumnElement[str]:
    """An event's UTC clock hour as ``YYYY-MM-DD HH`` text, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", col(Event.occurred_at)), "YYYY-MM-DD HH24")
    return sa.func.substr(sa.cast(col(Event.occurred_at), sa.String), 1, 13)


def hourly_activity(
    session: Session, send_id: str, *, hours: int = HOURS_SHOWN, now: datetime | None = None
) -> HourlyActivity | None:
    """Human first opens and clicks of the send's emails per hour since it started (hour 0 is
    the clock hour of its start), over the first ``hours``; None for an unknown send. One row
    per clock hour and kind comes back from the database."""
    send = session.get(BroadcastSend, send_id)
    if send is None:
        return None
    started = send.started_at or send.created_at
    start = started.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    bucket = _hour_bucket(session)
    rows = session.exec(
        select(Event.type, bucket, sa.func.count())
        .join(Message, col(Message.id) == col(Event.message_id))
        .where(
            col(Event.type).in_(("open", "click")),
            col(Event.occurred_at) >= start,
            col(Event.occurred_at) < start + timedelta(hours=hours),
            Message.workflow_id == send.id,
        )
        .group_by(col(Event.type), bucket)
    ).all()
    series = {"open": [0] * hours, "click": [0] * hours}
    last = 0
    for kind, text, n in rows:
        at = datetime.strptime(str(text)[:13], "%Y-%m-%d %H").replace(tzinfo=UTC)
        index = int((at - start).total_seconds() // 3600)
        if 0 <= index < hours:
            series[str(kind)][index] += int(n)
            last = max(last, index)
    # up to the last hour with something, or to ``now``'s hour (quiet hours are news too)
    shown = last + 1
    if now is not None:
        shown = max(shown, min(hours, int((now - start).total_seconds() // 3600) + 1))
    return HourlyActivity(
        start=start, opened=series["open"][:shown], clicked=series["click"][:shown]
    )


def _distinct(column: Any) -> Any:
    return sa.func.count(sa.distinct(column))


def ab_result(session: Session, send_id: str) -> ABResult | None:
    """The A/B test of a send, measured on its sample; None for a send without one."""
    send = session.get(BroadcastSend, send_id)
    if send is None:
        return None
    plan = send.plan or {}
    variants = [v for v in plan.get("variants") or [] if isinstance(v, dict) and v.get("id")]
    if not variants:
        return None
    metric = "clicks" if plan.get("ab_metric") == "clicks" else "opens"
    sample = (
        select(BroadcastRecipient.variant, col(Message.id).label("message_id"), Message.state)
        .join(
            Message,
            col(Message.key)
            == sa.literal(send.id + ":") + sa.cast(col(BroadcastRecipient.contact_id), sa.String),
        )
        .where(BroadcastRecipient.send_id == send.id, BroadcastRecipient.variant != "")
        .subquery()
    )
    sent: dict[str, int] = {
        str(v): int(n)
        for v, n in session.execute(
            sa.select(sample.c.variant, sa.func.count())
            .where(sample.c.state == MessageState.sent.value)
            .group_by(sample.c.variant)
        )
    }
    reached: dict[tuple[str, str], int] = {
        (str(v), str(k)): int(n)
        for v, k, n in session.execute(
            sa.select(sample.c.variant, col(Event.type), _distinct(col(Event.message_id)))
            .select_from(sample)
            .join(Event, col(Event.message_id) == sample.c.message_id)
            .where(col(Event.type).in_(("open", "click")))
            .group_by(sample.c.variant, col(Event.type))
        )
    }
    kind = "open" if metric == "opens" else "click"
    ids = [str(v["id"]) for v in variants]
    rates = {i: reached.get((i, kind), 0) / sent[i] if sent.get(i) else None for i in ids}
    leader = send.winner
    if leader is None and any(r is not None for r in rates.values()):
        leader = max(ids, key=lambda i: rates[i] or 0.0)  # the first of equals, as the engine
    results = []
    for v, i in zip(variants, ids, strict=True):
        uplift = confidence = None
        if leader is not None and i != leader:
            uplift, confidence = two_proportion_test(
                reached.get((i, kind), 0), sent.get(i, 0), reached.get((leader, kind), 0),
                sent.get(leader, 0),
            )  # fmt: skip
        results.append(
            VariantResult(
                id=i,
                subject=str(v.get("subject") or plan.get("subject") or ""),
                sent=sent.get(i, 0),
                opened=reached.get((i, "open"), 0),
                clicked=reached.get((i, "click"), 0),
                rate=rates[i],
                uplift=uplift,
                confidence=confidence,
            )
        )
    return ABResult(
        metric=metric,
        sample=send.sample,
        winner=send.winner,
        leader=leader,
        variants=results,
        picked_on=dict(send.ab_figures or {}),
    )
