"""What pacing by receiving domain is doing now, in the figures an operator reads.

The dashboard's Delivery page and ``drip deliverability status`` show the same thing, so both
read it here: for each group of receiving domains (``campaigns.deliverability``) its limits,
the pace now after deferrals, whether it is backing off and until when, its deferrals and the
relay's last words, its transactions in flight and, during a warm-up, the day's count against
its cap. The state is the database's (``contacts.pacing``), shared by every worker, so what is
shown is the deployment's, not one process's.

A group with no row yet has never been deferred nor booked: it is at full pace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.deliverability import Deliverability, DomainLimit
from contacts import pacing
from emails.pacing import DomainPacer

__all__ = ["GroupStatus", "Warmup", "group_statuses", "in_words", "local_time"]


@dataclass(frozen=True, slots=True)
class Warmup:
    """Where the warm-up stands today, in the workspace's time zone."""

    #: day N of the warm-up (1 on its start), or None when today is before or after it
    day: int | None
    days: int
    start: date
    #: today's sends to the group and its cap, during the warm-up
    sent: int = 0
    cap: int | None = None
    #: True once its last day is past
    over: bool = False

    def describe(self) -> str:
        if self.day is not None:
            return f"day {self.day} of {self.days}: {self.sent} of {self.cap} sent today"
        last = self.start + timedelta(days=self.days - 1)
        return f"over (its last day was {last})" if self.over else f"starts {self.start}"


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """One group of receiving domains as the dashboard and the CLI show it."""

    group: str
    #: its domains; empty for ``default`` (every domain no group names)
    domains: list[str]
    #: whether the workspace names it (a group only in the database was removed from it)
    configured: bool
    per_second: float
    connections: int
    #: the pace now as a fraction of the limit (1: full; lower after a deferral, climbing back)
    factor: float
    #: messages a second allowed now: the limit times the factor, or for a group without a
    #: limit its pace while it resumes after a deferral; 0: no limit
    rate: float
    #: when the group may be mailed again after a deferral, in the workspace's time zone;
    #: None when it is not backing off
    backing_off_until: datetime | None
    deferrals: int
    last_reply: str | None
    in_flight: int
    warmup: Warmup | None

    @property
    def percent(self) -> int:
        return round(self.factor * 100)

    def limit_text(self) -> str:
        parts = [f"{self.per_second:g}/s"] if self.per_second > 0 else []
        parts += [f"{self.connections} at once"] if self.connections > 0 else []
        return ", ".join(parts) or "no limit"

    def flight_text(self) -> str:
        """Transactions under way now: counted (leased) only where they are limited."""
        return f"{self.in_flight} of {self.connections}" if self.connections > 0 else "not counted"

    def pace_text(self) -> str:
        if self.rate <= 0:
            return "no limit"
        if self.per_second <= 0:
            return f"{self.rate:.3g}/s, resuming ({self.percent}%)"
        return f"{self.rate:.3g}/s ({self.percent}%)"

    def domains_text(self) -> str:
        if not self.configured:
            return "(no longer in the workspace)"
        if self.group == "default":
            return "every other domain"
        return ", ".join(self.domains) or "(none)"


def in_words(seconds: float) -> str:
    """A wait as people say it: "in 45 s", "in 2 min", "in 1 h 5 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"in {seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"in {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"in {hours} h {minutes} min" if minutes else f"in {hours} h"


def local_time(when: datetime, now: datetime) -> str:
    """A time in its own time zone, with the date only when it is not today's."""
    shown = when.strftime("%H:%M:%S %Z")
    if when.date() != now.astimezone(when.tzinfo).date():
        shown = f"{when:%Y-%m-%d} {shown}"
    return shown


def group_statuses(
    engine: Engine, deliverability: Deliverability, zone: ZoneInfo, now: datetime | None = None
) -> list[GroupStatus]:
    """Every group's figures now: the workspace's groups in its order with ``default`` last,
    then any group only the database still knows."""
    now = now or datetime.now(UTC)
    pacer = DomainPacer(engine, deliverability, zone=zone)
    limits = {group: pacer.limits(group, now) for group in pacer.rules}
    day = next((lim.day for lim in limits.values() if lim.day is not None), None)
    with engine.connect() as conn:
        views = {v.group: v for v in pacing.current(conn, limits, now=now.timestamp(), day=day)}
        # the pace a group without a limit resumes at needs the deferral's own factor
        climbs = {
            group: (float(factor), float(since))
            for group, factor, since in conn.execute(
                sa.text("SELECT domain_group, factor, recover_from FROM domain_pace")
            )
        }
    order = [g for g in pacer.rules if g != "default"] + ["default"]
    order += sorted(set(views) - set(order))
    statuses = []
    for group in order:
        rule = limits.get(group, pacing.Limits())
        factor, since = climbs.get(group, (1.0, 0.0))
        rate = pacing.recovery_rate(factor, since, rule, now.timestamp())
        statuses.append(
            _status(views[group], pacer.rules.get(group), rate, deliverability, zone, now)
        )
    return statuses


def _status(
    view: pacing.PaceView,
    rule: DomainLimit | None,
    rate: float,
    deliverability: Deliverability,
    zone: ZoneInfo,
    now: datetime,
) -> GroupStatus:
    until = None
    if view.deferred_until > now.timestamp():
        until = datetime.fromtimestamp(view.deferred_until, zone)
    return GroupStatus(
        group=view.group,
        domains=list(rule.domains) if rule else [],
        configured=rule is not None,
        per_second=rule.per_second if rule else 0.0,
        connections=rule.connections if rule else 0,
        factor=view.factor,
        rate=rate,
        backing_off_until=until,
        deferrals=view.deferrals,
        last_reply=view.last_reply,
        in_flight=view.in_flight,
        warmup=_warmup(deliverability, view, zone, now),
    )


def _warmup(
    deliverability: Deliverability, view: pacing.PaceView, zone: ZoneInfo, now: datetime
) -> Warmup | None:
    plan = deliverability.warmup
    if plan is None:
        return None
    today = now.astimezone(zone).date()
    days = len(plan.per_day)
    cap = plan.cap(today)
    if cap is None:
        over = today >= plan.start + timedelta(days=days)
        return Warmup(day=None, days=days, start=plan.start, over=over)
    return Warmup(
        day=(today - plan.start).days + 1,
        days=days,
        start=plan.start,
        sent=view.sent_today or 0,
        cap=cap,
    )
