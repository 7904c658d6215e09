"""Send windows and times of day in the contact's zone, across weekends and clock changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from campaigns.schedule import WEEKDAYS, next_send_time, next_time_of_day, zone

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")
WEEKDAYS_ONLY = ["mon", "tue", "wed", "thu", "fri"]


def test_inside_the_window_is_now_and_after_it_is_the_next_working_morning() -> None:
    thursday_noon = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
    assert next_send_time(thursday_noon, WEEKDAYS_ONLY, "09:00", "17:00", BERLIN) == thursday_noon
    friday_evening = datetime(2026, 11, 27, 17, 30, tzinfo=UTC)  # 18:30 in Berlin
    monday_nine = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # 09:00 in Berlin (CET)
    assert next_send_time(friday_evening, WEEKDAYS_ONLY, "09:00", "17:00", BERLIN) == monday_nine


def test_the_window_is_the_contacts_wall_clock_not_utc() -> None:
    # 14:00 UTC is 09:00 in New York: open there, though Berlin's window is closing soon
    moment = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    assert next_send_time(moment, WEEKDAYS_ONLY, "09:00", "17:00", NEW_YORK) == moment
    early = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)  # 08:00 in New York
    assert next_send_time(early, WEEKDAYS_ONLY, "09:00", "17:00", NEW_YORK) == moment


def test_a_time_of_day_keeps_its_wall_clock_across_a_dst_change() -> None:
    # Berlin leaves summer time on 2026-10-25: 09:00 is 07:00 UTC before and 08:00 UTC after
    saturday = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    assert next_time_of_day(saturday, "09:00", BERLIN) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    assert next_time_of_day(datetime(2026, 10, 23, 12, 0, tzinfo=UTC), "09:00", BERLIN) == datetime(
        2026, 10, 24, 7, 0, tzinfo=UTC
    )


def test_a_skipped_wall_time_is_taken_just_after_the_jump() -> None:
    # 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00)
    before = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    got = next_time_of_day(before, "02:30", BERLIN)
    assert got == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST, the same instant


def test_an_unknown_zone_falls_back() -> None:
    assert zone("Mars/Olympus_Mons", "Europe/Berlin").key == "Europe/Berlin"
    assert zone("", "").key == "UTC"


@given(
    now=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ),
    days=st.lists(st.sampled_from(WEEKDAYS), min_size=1, unique=True),
    start_hour=st.integers(0, 22),
    length=st.integers(1, 10),
    zone_name=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_the_next_send_time_is_the_first_moment_inside_the_window(
    now: datetime, days: list[str], start_hour: int, length: int, zone_name: str
) -> None:
    tz = zone(zone_name)
    start, end = f"{start_hour:02d}:00", f"{min(start_hour + length, 23):02d}:59"
    got = next_send_time(now, days, start, end, tz)
    local = got.astimezone(tz)
    assert got >= now and got - now < timedelta(days=8)
    assert WEEKDAYS[local.weekday()] in days
    assert start <= f"{local:%H:%M}" < end
    if got > now:  # nothing earlier would do: a minute before, the window was closed
        earlier = got - timedelta(minutes=1)
        if earlier >= now:
            assert next_send_time(earlier, days, start, end, tz) == got
