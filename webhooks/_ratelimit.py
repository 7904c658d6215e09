"""Rate limits that hold across every API process: the counters live in the database.

``drip api --workers N``, or N instances behind a load balancer, share one limit because they
share the contact database; no Redis to run. A limit is a sliding-window counter
(``contacts.ratelimits``): the current fixed window's hits plus the previous window's, weighted
by how much of it the last ``window`` seconds still cover. Checking costs one small write
transaction: one upsert per key (two for a sign-in: the address and the email), and now and
then a prune of rows that count nothing any more. On PostgreSQL the transaction commits
without waiting for the WAL flush: losing the last counts in a crash only forgives a few hits.

A refused hit is not counted (its transaction is rolled back), so a client that keeps knocking
gets in as soon as ``Retry-After`` says, not later; a hit that turns out not to deserve counting
(a successful sign-in) is taken back with ``refund``.

Calls do database I/O: call them from a thread (``run_in_threadpool``), not the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine, Transaction

from contacts import ratelimits

__all__ = ["Limit", "RateLimiter", "Verdict", "retry_after"]

#: how often one process deletes the rows that count nothing any more
PRUNE_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``limit`` hits per key in any ``window`` seconds."""

    #: part of every key, so the same value under two limits is two counts
    name: str
    limit: int
    window: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to one hit: let through (``wait`` 0) or refused for ``wait`` seconds."""

    wait: float
    #: (key, window) of each count this hit made, for ``refund``; empty when refused
    counted: tuple[tuple[str, int], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.wait == 0.0


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(round(seconds, 3))))  # 80.00000001 s is 80


class RateLimiter:
    """The limits of one app, counted in its database with everyone else's."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        # wall-clock time, not monotonic: every process must agree on the window boundaries
        self._clock = clock
        self._next_prune = 0.0

    def hit(self, *checks: tuple[Limit, str]) -> Verdict:
        """Count one hit against each (limit, value); all are counted or, when any limit is
        reached, none is and the wait is the longest of the refusing limits'."""
        now = self._clock()
        # a fixed order of keys: two transactions never wait on each other's rows in a cycle
        keyed = sorted((_key(limit, value), limit) for limit, value in checks)
        counted: list[tuple[str, int]] = []
        wait = 0.0
        with self._transaction() as (connection, transaction):
            for key, limit in keyed:
                slot = int(now // limit.window)
                row = ratelimits.count_hit(connection, key, slot, limit.window)
                wait = max(wait, _wait(limit, row, now))
                counted.append((key, row.slot))
            if wait:
                transaction.rollback()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_SECONDS
            with self._transaction() as (connection, _):
                ratelimits.prune(connection, now)
        return Verdict(wait) if wait else Verdict(0.0, tuple(counted))

    def refund(self, verdict: Verdict) -> None:
        """Take back the counts of a hit that was let through."""
        if not verdict.counted:
            return
        with self._transaction() as (connection, _):
            for key, slot in verdict.counted:
                ratelimits.uncount_hit(connection, key, slot)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[Connection, Transaction]]:
        """A transaction that, on PostgreSQL, commits without waiting for the WAL flush (a
        crash may forget its last counts: it only forgives a few hits)."""
        with self.engine.connect() as connection, connection.begin() as transaction:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            yield connection, transaction


def _key(limit: Limit, value: str) -> str:
    """A fixed-size key that does not keep the address or email it counts."""
    raw = f"{limit.name}\x00{value}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _wait(limit: Limit, row: ratelimits.Counted, now: float) -> float:
    """0 if the hit just counted keeps the estimate within the limit, else the seconds until
    one more hit would (the previous window's weight falls, or a new window begins)."""
    # the fraction of the window gone (subtracting first: unix time over 60 loses digits)
    into = min(max((now - row.slot * limit.window) / limit.window, 0.0), 1.0)
    if row.prev_hits * (1.0 - into) + row.hits <= limit.limit + 1e-6:  # float dust
        return 0.0
    before = row.hits - 1  # what the window held before this (to be rolled back) hit
    if before + 1 <= limit.limit and row.prev_hits:
        # within this window, once the previous one weighs little enough
        needed = 1.0 - (limit.limit - before - 1) / row.prev_hits
        return max((needed - into) * limit.window, 0.001)
    # in the next window this one is the previous: wait for its weight to fall far enough
    needed = 1.0 - (limit.limit - 1) / before if before else 0.0
    return max((1.0 - into + max(needed, 0.0)) * limit.window, 0.001)
