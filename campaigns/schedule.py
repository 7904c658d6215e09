"""When a step may happen, in the contact's own time zone: send windows and times of day.

Pure functions of ``now``, so the journey workflow calls them with ``workflow.now()`` and gets
the same answer on replay. Local times are resolved with ``zoneinfo``: across a daylight-saving
change "09:00" stays nine on the wall clock, and a time that does not exist that day (skipped by
the clock change) is taken at the first valid instant after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["WEEKDAYS", "add_working_hours", "next_send_time", "next_time_of_day", "zone"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(name: str, fallback: str = "UTC") -> ZoneInfo:
    """The zone called ``name``, or ``fallback`` when a contact's field holds no valid zone (a
    typo in imported data must not stop their journey)."""
    for candidate in (name, fallback, "UTC"):
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    raise AssertionError("UTC is always known")  # pragma: no cover


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _local(day: datetime, at: time, tz: ZoneInfo) -> datetime:
    """``at`` on ``day``'s date in ``tz``, as UTC; a wall time skipped by a DST jump is moved
    forward by the jump (the round trip through UTC normalises it)."""
    naive = datetime.combine(day.date(), at)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def next_time_of_day(now: datetime, hhmm: str, tz: ZoneInfo) -> datetime:
    """The next moment the clock in ``tz`` shows ``hhmm``, strictly after ``now``."""
    local_now = now.astimezone(tz)
    at = _hhmm(hhmm)
    for offset in range(0, 3):
        candidate = _local(local_now + timedelta(days=offset), at, tz)
        if candidate > now:
            return candidate
    raise AssertionError("a time of day recurs within two days")  # pragma: no cover


def next_send_time(
    now: datetime, days: Sequence[str], start: str, end: str, tz: ZoneInfo
) -> datetime:
    """``now`` if it is inside the window (one of ``days``, from ``start`` to before ``end``,
    local time), else the window's next opening."""
    allowed = {WEEKDAYS.index(d) for d in days}
    local_now = now.astimezone(tz)
    begin, finish = _hhmm(start), _hhmm(end)
    for offset in range(0, 8):
        day = local_now + timedelta(days=offset)
        if day.weekday() not in allowed:
            continue
        opens, closes = _local(day, begin, tz), _local(day, finish, tz)
        if opens <= now < closes:
            return now
        if now < opens:
            return opens
    raise AssertionError("a window with at least one day opens within a week")  # pragma: no cover


def add_working_hours(
    start: datetime, hours: float, *, days: Sequence[str], begin: str, end: str, timezone: str
) -> datetime:
    """The moment ``hours`` of working time have passed since ``start``: only time inside the
    working window (``days``, ``begin`` to ``end`` local time) counts, so an alert at 16:00 on a
    Friday with four hours to go falls due at 12:00 on Monday for a 9-to-5 week. Pure, for
    workflows; daylight-saving days count their real length."""
    tz = zone(timezone)
    allowed = {WEEKDAYS.index(d) for d in days}
    left = timedelta(hours=hours)
    cursor = start
    b_h, b_m = (int(x) for x in begin.split(":"))
    e_h, e_m = (int(x) for x in end.split(":"))
    for _ in range(0, 366 * 2):
        local = cursor.astimezone(tz)
        opens = local.replace(hour=b_h, minute=b_m, second=0, microsecond=0).astimezone(UTC)
        closes = local.replace(hour=e_h, minute=e_m, second=0, microsecond=0).astimezone(UTC)
        if local.weekday() in allowed and cursor < closes:
            frm = max(cursor, opens)
            if frm + left <= closes:
                return frm + left
            left -= closes - frm
        next_day = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        cursor = next_day.astimezone(UTC)
    raise ValueError("working hours never add up: no working day within two years")
