"""Pacing by receiving domain, shared by every worker process: the state lives here.

One ``domain_pace`` row per group of receiving domains (``campaigns.deliverability``) holds the
next free send time, the pace after deferrals and how long the group waits; ``domain_slots``
holds one row per allowed transaction at once, leased by a worker until it is done (or until
the lease runs out, if that worker died); ``domain_days`` counts the day's sends for a warm-up.

Every change is one short transaction that *writes first* (a no-op upsert of the group's row):
PostgreSQL then locks that row and SQLite the database until commit, so two workers booking the
same group take turns and can never both get the same slot. Times are unix seconds from the
workers' clocks (keep them in sync with NTP, as any cluster must).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

__all__ = [
    "Booking",
    "DomainDay",
    "DomainPace",
    "DomainSlot",
    "Limits",
    "PaceView",
    "book",
    "current",
    "end_backoff",
    "pace_factor",
    "record_deferral",
    "recovery_rate",
    "release",
    "take_slot",
]


class DomainPace(SQLModel, table=True):
    __tablename__ = "domain_pace"

    domain_group: str = Field(primary_key=True, max_length=80)
    #: unix time of the next free send slot (the limit's spacing from the last booking)
    next_at: float = 0.0
    #: the pace as a fraction of the limit right after the last deferral; it climbs back to 1
    factor: float = 1.0
    #: unix time until which nothing is sent to the group (after a deferral)
    deferred_until: float = 0.0
    #: deferrals in a row (each one while still recovering from the last)
    strikes: int = 0
    #: unix time the pace starts climbing back (the end of the last deferral's wait)
    recover_from: float = 0.0
    #: deferrals ever, and the relay's words for the last one
    deferrals: int = 0
    last_reply: str | None = Field(default=None, max_length=500)


class DomainSlot(SQLModel, table=True):
    __tablename__ = "domain_slots"

    domain_group: str = Field(primary_key=True, max_length=80)
    slot: int = Field(primary_key=True)
    #: the worker send holding it (None: free)
    holder: str | None = Field(default=None, max_length=80)
    #: unix time after which the lease counts for nothing (its worker died mid-send)
    until: float = 0.0


class DomainDay(SQLModel, table=True):
    __tablename__ = "domain_days"

    domain_group: str = Field(primary_key=True, max_length=80)
    #: the day in the workspace's time zone, ``YYYY-MM-DD``
    day: str = Field(primary_key=True, max_length=10)
    sent: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """A group's limits and the backoff rule, in seconds (``emails.pacing`` builds them)."""

    per_second: float = 0.0
    connections: int = 0
    backoff_first: float = 60.0
    backoff_max: float = 1800.0
    recover: float = 600.0
    #: a group without a rate limit resumes at this pace after a deferral's wait
    resume_per_second: float = 5.0
    slowest: float = 0.1
    #: the warm-up's day (``YYYY-MM-DD``), its cap and when it ends (unix time); no cap: None
    day: str | None = None
    day_cap: int | None = None
    day_ends: float = 0.0


@dataclass(frozen=True, slots=True)
class Booking:
    """A send slot at ``at`` (unix time); or ``retry_at`` and the ``reason`` there is none now."""

    at: float | None = None
    retry_at: float | None = None
    reason: str = ""


def _hold(conn: Connection, group: str) -> None:
    """The group's row, created if new and locked for this transaction (write first)."""
    conn.execute(
        sa.text(
            "INSERT INTO domain_pace (domain_group, next_at, factor, deferred_until, strikes,"
            " recover_from, deferrals) VALUES (:g, 0, 1, 0, 0, 0, 0)"
            " ON CONFLICT (domain_group) DO UPDATE SET domain_group = excluded.domain_group"
        ),
        {"g": group},
    )


def _row(conn: Connection, group: str) -> tuple[float, float, float, int, float]:
    row = conn.execute(
        sa.text(
            "SELECT next_at, factor, deferred_until, strikes, recover_from"
            " FROM domain_pace WHERE domain_group = :g"
        ),
        {"g": group},
    ).one()
    return float(row[0]), float(row[1]), float(row[2]), int(row[3]), float(row[4])


def pace_factor(factor: float, recover_from: float, limits: Limits, now: float) -> float:
    """The pace now, as a fraction of the limit: from the end of the last deferral's wait it
    climbs in a straight line from where that deferral left it back to 1 over
    ``limits.recover`` seconds."""
    if factor >= 1.0:
        return 1.0
    climbed = max(0.0, now - recover_from) / limits.recover if limits.recover > 0 else 1.0
    return min(1.0, factor + climbed * (1.0 - limits.slowest))


def recovery_rate(factor: float, recover_from: float, limits: Limits, now: float) -> float:
    """The group's pace now in messages a second, 0 for no limit. A limited group runs at its
    limit times ``pace_factor``. A group without a limit has none, except while it recovers
    from a deferral: it resumes at ``resume_per_second`` and speeds up ever faster (the pace
    grows as ``1 / (1 - climbed)``) until, ``recover`` after its wait, it has no limit again."""
    pace = pace_factor(factor, recover_from, limits, now)
    if limits.per_second > 0:
        return limits.per_second * pace
    if pace >= 1.0:
        return 0.0
    return limits.resume_per_second * (1.0 - factor) / (1.0 - pace)


def book(
    conn: Connection,
    group: str,
    limits: Limits,
    *,
    now: float,
    horizon: float,
    clock: float | None = None,
) -> Booking:
    """Book the group's next send slot, if it is no more than ``horizon`` seconds away, the
    group is not waiting after a deferral and the warm-up's cap for the day is not reached.

    Two clocks: slots are real time (``now``: workers really sleep until them); a deferral's
    wait and the pace's climb are on the caller's ``clock`` (a journey's, which tests skip
    ahead; ``now`` if None), and so is ``retry_at``. In production the two agree."""
    clock = now if clock is None else clock
    _hold(conn, group)
    next_at, factor, deferred_until, _, recover_from = _row(conn, group)
    if deferred_until > clock:
        return Booking(retry_at=deferred_until, reason=f"{group} deferred our mail: backing off")
    if limits.day_cap is not None and limits.day is not None:
        sent = conn.execute(
            sa.text("SELECT sent FROM domain_days WHERE domain_group = :g AND day = :d"),
            {"g": group, "d": limits.day},
        ).scalar()
        if (sent or 0) >= limits.day_cap:
            return Booking(
                retry_at=limits.day_ends,
                reason=f"warm-up: {group} has had its {limits.day_cap} for {limits.day}",
            )
    at = now
    rate = recovery_rate(factor, recover_from, limits, clock)
    if rate > 0:
        at = max(now, next_at)
        if at - now > horizon:
            return Booking(
                retry_at=clock + (at - horizon - now), reason=f"{group} is paced: no slot soon"
            )
        conn.execute(
            sa.text("UPDATE domain_pace SET next_at = :n WHERE domain_group = :g"),
            {"n": at + 1.0 / rate, "g": group},
        )
    if limits.day_cap is not None and limits.day is not None:
        conn.execute(
            sa.text(
                "INSERT INTO domain_days (domain_group, day, sent) VALUES (:g, :d, 1)"
                " ON CONFLICT (domain_group, day) DO UPDATE SET sent = domain_days.sent + 1"
            ),
            {"g": group, "d": limits.day},
        )
    return Booking(at=at)


def take_slot(
    conn: Connection, group: str, connections: int, *, holder: str, now: float, lease: float
) -> int | float:
    """Lease one of the group's ``connections`` transaction slots to ``holder``: its number;
    or, when all are held, the float unix time the first lease runs out (a hint to retry by)."""
    _hold(conn, group)
    free = conn.execute(
        sa.text(
            "SELECT slot FROM domain_slots WHERE domain_group = :g AND slot < :n"
            " AND (holder IS NULL OR until < :now) ORDER BY slot LIMIT 1"
        ),
        {"g": group, "n": connections, "now": now},
    ).scalar()
    if free is None:
        taken = conn.execute(
            sa.text(
                "SELECT COUNT(*), MIN(until) FROM domain_slots"
                " WHERE domain_group = :g AND slot < :n"
            ),
            {"g": group, "n": connections},
        ).one()
        if taken[0] >= connections:
            return float(taken[1])
        free = _first_missing(conn, group, connections)
        conn.execute(
            sa.text(
                "INSERT INTO domain_slots (domain_group, slot, holder, until)"
                " VALUES (:g, :s, :h, :u)"
            ),
            {"g": group, "s": free, "h": holder, "u": now + lease},
        )
        return int(free)
    conn.execute(
        sa.text(
            "UPDATE domain_slots SET holder = :h, until = :u WHERE domain_group = :g AND slot = :s"
        ),
        {"g": group, "s": free, "h": holder, "u": now + lease},
    )
    return int(free)


def _first_missing(conn: Connection, group: str, connections: int) -> int:
    have = set(
        conn.execute(
            sa.text("SELECT slot FROM domain_slots WHERE domain_group = :g"), {"g": group}
        ).scalars()
    )
    return next(n for n in range(connections) if n not in have)


def release(conn: Connection, group: str, slot: int, *, holder: str) -> None:
    """Give the slot back (only if this holder still has it: a lease that ran out may be
    someone else's by now)."""
    conn.execute(
        sa.text(
            "UPDATE domain_slots SET holder = NULL, until = 0"
            " WHERE domain_group = :g AND slot = :s AND holder = :h"
        ),
        {"g": group, "s": slot, "h": holder},
    )


def record_deferral(
    conn: Connection, group: str, limits: Limits, *, now: float, reply: str
) -> float:
    """The group's mail was deferred: halve its pace (not below ``slowest``) and make it wait,
    ``backoff_first`` doubled for each deferral in a row up to ``backoff_max``. Deferrals of
    sends that were already under way when the first came (the group is waiting already) are
    counted but change nothing: one burst of refusals is one deferral. Returns the time the
    group may be mailed again. ``now`` is the caller's clock (``book``'s ``clock``)."""
    _hold(conn, group)
    _, factor, deferred_until, strikes, recover_from = _row(conn, group)
    if deferred_until > now:
        conn.execute(
            sa.text(
                "UPDATE domain_pace SET deferrals = deferrals + 1, last_reply = :r"
                " WHERE domain_group = :g"
            ),
            {"g": group, "r": reply[:500]},
        )
        return float(deferred_until)
    pace = pace_factor(factor, recover_from, limits, now)
    strikes = strikes + 1 if pace < 1.0 else 1
    wait = min(limits.backoff_max, limits.backoff_first * math.pow(2, strikes - 1))
    until = now + wait
    conn.execute(
        sa.text(
            "UPDATE domain_pace SET factor = :f, deferred_until = :u, strikes = :s,"
            " recover_from = :u, deferrals = deferrals + 1, last_reply = :r,"
            " next_at = :u WHERE domain_group = :g"
        ),
        {
            "g": group,
            "f": max(limits.slowest, pace / 2),
            "u": until,
            "s": strikes,
            "r": reply[:500],
        },
    )
    return until


@dataclass(frozen=True, slots=True)
class PaceView:
    """A group as the dashboard shows it."""

    group: str
    factor: float
    deferred_until: float
    deferrals: int
    last_reply: str | None
    in_flight: int
    sent_today: int | None


def current(
    conn: Connection, limits: dict[str, Limits], *, now: float, day: str | None
) -> list[PaceView]:
    """Every group's state now: its pace, whether it waits, its deferrals, its transactions
    under way and (during a warm-up) what it had today."""
    rows = {
        r.domain_group: r
        for r in conn.execute(
            sa.text(
                "SELECT domain_group, factor, deferred_until, recover_from, deferrals,"
                " last_reply FROM domain_pace"
            )
        )
    }
    busy: dict[str, int] = dict(
        conn.execute(
            sa.text(
                "SELECT domain_group, COUNT(*) FROM domain_slots"
                " WHERE holder IS NOT NULL AND until >= :now GROUP BY domain_group"
            ),
            {"now": now},
        ).all()
    )
    sent: dict[str, int] = {}
    if day is not None:
        sent = dict(
            conn.execute(
                sa.text("SELECT domain_group, sent FROM domain_days WHERE day = :d"), {"d": day}
            ).all()
        )
    views = []
    for group in sorted(set(limits) | set(rows)):
        row = rows.get(group)
        rule = limits.get(group, Limits())
        views.append(
            PaceView(
                group=group,
                factor=pace_factor(row.factor, row.recover_from, rule, now) if row else 1.0,
                deferred_until=float(row.deferred_until) if row else 0.0,
                deferrals=int(row.deferrals) if row else 0,
                last_reply=row.last_reply if row else None,
                in_flight=int(busy.get(group, 0)),
                sent_today=sent.get(group, 0) if day is not None else None,
            )
        )
    return views


def end_backoff(conn: Connection, group: str, *, now: float) -> bool:
    """An operator fixed what made the relay defer the group's mail: it may be mailed now, at
    its full pace, and its next deferral counts as a first one again. Its deferrals and the
    relay's last reply stay (they are history). False, changing nothing, when the group is
    neither waiting nor slowed (or has no row: it never was)."""
    ended = conn.execute(
        sa.text(
            "UPDATE domain_pace SET factor = 1, strikes = 0, recover_from = 0,"
            " next_at = CASE WHEN deferred_until > :now THEN :now ELSE next_at END,"
            " deferred_until = 0"
            " WHERE domain_group = :g AND (deferred_until > :now OR factor < 1)"
        ),
        {"g": group, "now": now},
    )
    return ended.rowcount > 0
