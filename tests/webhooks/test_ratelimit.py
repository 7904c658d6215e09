"""The rate limiter on SQLite and PostgreSQL: a sliding window counted in the database, so
several processes (here: limiters on separate engines) share one limit; refused hits are not
counted; refunds; pruning; no count lost to concurrent hits."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from contacts.db import create_db_engine
from webhooks._ratelimit import Limit, RateLimiter, retry_after

FORM = Limit("form", 3, 60.0)
START = 1_800_000_000.0  # a window boundary (a multiple of 60 and of 300)


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def second_engine(any_engine: Engine) -> Iterator[Engine]:
    """Another connection pool on the same database: what a second API process has."""
    engine = create_db_engine(any_engine.url.render_as_string(hide_password=False))
    yield engine
    engine.dispose()


def _rows(engine: Engine) -> list[tuple[int, int]]:
    with engine.connect() as c:
        return [(r.hits, r.prev_hits) for r in c.execute(sa.text("SELECT * FROM rate_limits"))]


def test_hits_past_the_limit_wait_and_are_not_counted(any_engine: Engine, clock: Clock) -> None:
    limiter = RateLimiter(any_engine, clock)
    assert [limiter.hit((FORM, "a")).allowed for _ in range(3)] == [True] * 3
    refused = limiter.hit((FORM, "a"))
    assert not refused.allowed and refused.counted == ()
    assert refused.wait == pytest.approx(60.0 + 20.0)  # next window, once 1/3 of it has passed
    assert retry_after(refused.wait) == "80"
    assert limiter.hit((FORM, "b")).allowed  # another key has its own count
    for _ in range(5):
        assert not limiter.hit((FORM, "a")).allowed
    assert sorted(_rows(any_engine)) == [(1, 0), (3, 0)]  # refused hits left no trace


def test_the_window_slides(any_engine: Engine, clock: Clock) -> None:
    limiter = RateLimiter(any_engine, clock)
    for _ in range(3):
        assert limiter.hit((FORM, "a")).allowed
    clock.now += 60.0  # the next window: its first moment still counts all three
    refused = limiter.hit((FORM, "a"))
    assert not refused.allowed and refused.wait == pytest.approx(20.0)
    clock.now += 20.0  # a third of the way: the three weigh two, one more fits
    assert limiter.hit((FORM, "a")).allowed
    assert not limiter.hit((FORM, "a")).allowed
    clock.now += 100.0  # two windows on: nothing of it is left
    assert [limiter.hit((FORM, "a")).allowed for _ in range(4)] == [True] * 3 + [False]


def test_two_processes_share_one_limit(
    any_engine: Engine, second_engine: Engine, clock: Clock
) -> None:
    one, two = RateLimiter(any_engine, clock), RateLimiter(second_engine, clock)
    assert one.hit((FORM, "a")).allowed and two.hit((FORM, "a")).allowed
    assert one.hit((FORM, "a")).allowed
    assert not two.hit((FORM, "a")).allowed and not one.hit((FORM, "a")).allowed


def test_a_clock_behind_never_resets_the_count(
    any_engine: Engine, second_engine: Engine, clock: Clock
) -> None:
    ahead = RateLimiter(any_engine, lambda: clock.now + 0.5)
    behind = RateLimiter(second_engine, lambda: clock.now - 0.5)
    for _ in range(3):
        assert ahead.hit((FORM, "a")).allowed
    assert not behind.hit((FORM, "a")).allowed


def test_a_hit_on_several_limits_counts_on_all_or_none(any_engine: Engine, clock: Clock) -> None:
    limiter = RateLimiter(any_engine, clock)
    tight, loose = Limit("tight", 1, 60.0), Limit("loose", 10, 60.0)
    assert limiter.hit((tight, "x"), (loose, "y")).allowed
    assert not limiter.hit((tight, "x"), (loose, "y")).allowed
    assert sorted(_rows(any_engine)) == [(1, 0), (1, 0)]  # loose: only the allowed hit


def test_a_refund_takes_a_hit_back_even_after_the_window_moved(
    any_engine: Engine, clock: Clock
) -> None:
    limiter = RateLimiter(any_engine, clock)
    first = limiter.hit((FORM, "a"))
    limiter.refund(first)
    assert _rows(any_engine) == [(0, 0)]
    late = limiter.hit((FORM, "a"))
    clock.now += 60.0
    limiter.hit((FORM, "a"))
    assert _rows(any_engine) == [(1, 1)]
    limiter.refund(late)  # counted in what is now the previous window
    assert _rows(any_engine) == [(1, 0)]
    limiter.refund(limiter.hit((FORM, "a")))
    limiter.refund(late)  # never below zero
    assert _rows(any_engine) == [(1, 0)]


def test_rows_that_count_nothing_are_pruned(any_engine: Engine, clock: Clock) -> None:
    limiter = RateLimiter(any_engine, clock)
    limiter.hit((FORM, "old"))
    clock.now += 130.0  # past the end of the next window, and the prune interval
    limiter.hit((FORM, "new"))
    assert _rows(any_engine) == [(1, 0)]


def test_concurrent_hits_are_all_counted(
    any_engine: Engine, second_engine: Engine, clock: Clock
) -> None:
    generous = Limit("form", 1000, 60.0)
    limiters = [RateLimiter(any_engine, clock), RateLimiter(second_engine, clock)]

    def hammer(n: int) -> bool:
        return limiters[n % 2].hit((generous, "a")).allowed

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(hammer, range(200)))
    assert _rows(any_engine) == [(200, 0)]


def test_keys_keep_no_address_or_email(any_engine: Engine, clock: Clock) -> None:
    RateLimiter(any_engine, clock).hit((FORM, "ann@example.com"), (FORM, "192.0.2.1"))
    with any_engine.connect() as c:
        keys = list(c.execute(sa.text("SELECT key FROM rate_limits")).scalars())
    assert len(keys) == 2 and all(len(k) == 32 and "@" not in k and "." not in k for k in keys)
