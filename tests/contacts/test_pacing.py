"""The shared pacing state (``contacts.pacing``) on SQLite and PostgreSQL: slots spaced by the
limit, a horizon, deferrals that halve the pace and make the group wait (once per burst, longer
in a row), the climb back, transaction slots that two holders cannot share, a dead holder's lease
running out, and the warm-up's daily count."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from contacts import pacing

LIMITS = pacing.Limits(
    per_second=4.0, connections=2, backoff_first=10.0, backoff_max=35.0, recover=100.0
)


def _book(engine: Engine, now: float, limits: pacing.Limits = LIMITS, horizon: float = 5.0):
    with engine.begin() as conn:
        return pacing.book(conn, "google", limits, now=now, horizon=horizon)


def test_slots_are_spaced_by_the_limit_and_no_further_than_the_horizon(any_engine: Engine) -> None:
    times = [_book(any_engine, 1000.0).at for _ in range(6)]
    assert times == [1000.0, 1000.25, 1000.5, 1000.75, 1001.0, 1001.25]
    # 5 s ahead at most: slots up to 1005.0 are handed out, then none
    for _ in range(15):
        assert _book(any_engine, 1000.0).at is not None
    refused = _book(any_engine, 1000.0)
    assert refused.at is None and refused.retry_at is not None
    assert "paced" in refused.reason
    # time moves on: a slot again
    assert _book(any_engine, 1003.0).at == pytest.approx(1005.25)


def test_an_unlimited_group_books_now(any_engine: Engine) -> None:
    free = pacing.Limits()
    assert [_book(any_engine, 50.0, free).at for _ in range(3)] == [50.0, 50.0, 50.0]


def test_a_deferral_halves_the_pace_and_makes_the_group_wait(any_engine: Engine) -> None:
    with any_engine.begin() as conn:
        until = pacing.record_deferral(conn, "google", LIMITS, now=1000.0, reply="421 4.7.0 later")
        # the rest of the burst: counted, changes nothing
        again = pacing.record_deferral(conn, "google", LIMITS, now=1000.5, reply="421 4.7.0 later")
    assert until == again == 1010.0
    waiting = _book(any_engine, 1005.0)
    assert waiting.at is None and waiting.retry_at == 1010.0
    assert "deferred" in waiting.reason
    # after the wait, at half the pace (2/s: 0.5 s apart), climbing back over 100 s
    first, second = _book(any_engine, 1010.0).at, _book(any_engine, 1010.0).at
    assert first == 1010.0 and second == pytest.approx(1010.5)
    with any_engine.connect() as conn:
        (view,) = [
            v
            for v in pacing.current(conn, {"google": LIMITS}, now=1060.0, day=None)
            if v.group == "google"
        ]
    assert view.deferrals == 2 and view.last_reply == "421 4.7.0 later"
    assert view.factor == pytest.approx(0.5 + 0.5 * 0.9)  # 50 s into a 100 s climb from 0.5
    with any_engine.connect() as conn:
        (back,) = [
            v
            for v in pacing.current(conn, {"google": LIMITS}, now=1200.0, day=None)
            if v.group == "google"
        ]
    assert back.factor == 1.0


def test_deferrals_in_a_row_wait_longer_up_to_the_maximum(any_engine: Engine) -> None:
    waits = []
    now = 1000.0
    for _ in range(4):
        with any_engine.begin() as conn:
            until = pacing.record_deferral(conn, "google", LIMITS, now=now, reply="454 quota")
        waits.append(until - now)
        now = until + 1.0  # deferred again right after the wait: still recovering
    assert waits == [10.0, 20.0, 35.0, 35.0]
    with any_engine.begin() as conn:  # long after: recovered, a first deferral again
        assert pacing.record_deferral(conn, "google", LIMITS, now=now + 500, reply="x") == (
            now + 510
        )


def test_transaction_slots_are_never_shared_and_a_dead_holders_lease_runs_out(
    any_engine: Engine,
) -> None:
    def take(holder: str, now: float) -> int | float:
        with any_engine.begin() as conn:
            return pacing.take_slot(conn, "google", 2, holder=holder, now=now, lease=30.0)

    a, b = take("a", 100.0), take("b", 100.0)
    assert {a, b} == {0, 1}
    full = take("c", 101.0)
    assert isinstance(full, float) and full == 130.0  # when the first lease runs out
    with any_engine.begin() as conn:
        pacing.release(conn, "google", int(a), holder="someone else")  # not theirs: no effect
    assert isinstance(take("c", 102.0), float)
    with any_engine.begin() as conn:
        pacing.release(conn, "google", int(a), holder="a")
    assert take("c", 103.0) == a
    # b died holding its slot: after its lease runs out, someone else gets it
    assert isinstance(take("d", 104.0), float)
    assert take("d", 131.0) == b


def test_the_warm_up_caps_each_day(any_engine: Engine) -> None:
    day1 = pacing.Limits(day="2026-12-07", day_cap=3, day_ends=5000.0)
    got = [_book(any_engine, 100.0, day1) for _ in range(4)]
    assert [g.at for g in got[:3]] == [100.0, 100.0, 100.0]
    assert got[3].at is None and got[3].retry_at == 5000.0
    assert "warm-up" in got[3].reason
    day2 = pacing.Limits(day="2026-12-08", day_cap=5, day_ends=9000.0)
    assert _book(any_engine, 5001.0, day2).at == 5001.0
    with any_engine.connect() as conn:
        views = pacing.current(conn, {"google": day2}, now=5002.0, day="2026-12-08")
    assert [(v.group, v.sent_today) for v in views] == [("google", 1)]


def test_a_group_without_a_limit_waits_then_resumes_slowly_and_speeds_up(
    any_engine: Engine,
) -> None:
    free = pacing.Limits(backoff_first=10.0, recover=100.0, resume_per_second=5.0)
    assert _book(any_engine, 900.0, free).at == 900.0  # no limit, no slot spacing
    with any_engine.begin() as conn:
        until = pacing.record_deferral(conn, "google", free, now=1000.0, reply="421 4.7.0 later")
    assert until == 1010.0
    assert _book(any_engine, 1005.0, free).at is None  # waiting
    # after the wait: 5 a second (0.2 s apart) ...
    first, second = _book(any_engine, 1010.0, free).at, _book(any_engine, 1010.0, free).at
    assert (first, second) == (1010.0, pytest.approx(1010.2))
    # ... faster as the climb goes on: from the halved pace (0.5) back to 1 at 0.9 per 100 s
    # (``recover``, from ``slowest`` 0.1), so halfway after 27.8 s: twice as fast ...
    climb = 100.0 * 0.5 / 0.9
    assert pacing.recovery_rate(0.5, 1010.0, free, 1010.0) == pytest.approx(5.0)
    assert pacing.recovery_rate(0.5, 1010.0, free, 1010.0 + climb / 2) == pytest.approx(10.0)
    # ... and at the top, no limit again
    assert pacing.recovery_rate(0.5, 1010.0, free, 1010.0 + climb) == 0.0


def test_an_operator_ends_a_backoff_early_and_the_group_is_mailed_at_its_full_pace(
    any_engine: Engine,
) -> None:
    with any_engine.begin() as conn:
        assert not pacing.end_backoff(conn, "google", now=1000.0)  # never deferred: no row
        pacing.record_deferral(conn, "google", LIMITS, now=1000.0, reply="421 4.7.0 later")
        pacing.record_deferral(conn, "google", LIMITS, now=1011.0, reply="421 4.7.0 again")
    assert _book(any_engine, 1012.0).at is None  # waiting 20 s (a second deferral in a row)
    with any_engine.begin() as conn:
        assert pacing.end_backoff(conn, "google", now=1012.0)
    # at once, and 4 a second again (0.25 s apart), not the halved pace
    assert [_book(any_engine, 1012.0).at for _ in range(2)] == [1012.0, 1012.25]
    with any_engine.connect() as conn:
        (view,) = pacing.current(conn, {"google": LIMITS}, now=1012.5, day=None)
    assert (view.factor, view.deferred_until) == (1.0, 0.0)
    assert view.deferrals == 2 and view.last_reply == "421 4.7.0 again"  # history kept
    with any_engine.begin() as conn:
        assert not pacing.end_backoff(conn, "google", now=1013.0)  # nothing left to end
        # the next deferral is a first one again: the first wait, not a doubled one
        assert pacing.record_deferral(conn, "google", LIMITS, now=1014.0, reply="x") == 1024.0
