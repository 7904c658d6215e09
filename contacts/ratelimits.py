"""Rate-limit counters in the database, so every API process counts against the same limit.

One row per limited key (a form and a client address, a typed email, ...), holding the hits of
the current fixed window and of the one before it: the limiter (``webhooks._ratelimit``) weighs
the previous window by how much of it still overlaps the last ``window`` seconds, a sliding
window to within a few percent at the cost of two integers. Counting is one atomic
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per key, so concurrent processes never lose
a hit to a read-then-write race (PostgreSQL locks the row, SQLite the database, for the
transaction). Rows carry no address or email in the clear: the key is a hash of them.

A row says nothing once two windows have passed without a hit; ``prune`` deletes such rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

__all__ = ["Counted", "RateLimitCounter", "count_hit", "prune", "uncount_hit"]


class RateLimitCounter(SQLModel, table=True):
    __tablename__ = "rate_limits"

    #: a hash of the limit's name and the limited value (``webhooks._ratelimit``)
    key: str = Field(primary_key=True, max_length=64)
    #: the current window: ``floor(unix time / window seconds)``
    slot: int = Field(sa_type=sa.BigInteger)
    hits: int = 0
    #: the hits of window ``slot - 1`` (0 if it had none, or is further back)
    prev_hits: int = 0
    #: unix seconds after which the row counts nothing (the end of window ``slot + 1``)
    expires_at: int = Field(sa_type=sa.BigInteger, index=True)


@dataclass(frozen=True, slots=True)
class Counted:
    """The row after one hit was counted in it."""

    slot: int
    hits: int
    prev_hits: int


# Every right-hand side of SET reads the row as it was (SQLite and PostgreSQL alike). A row
# ahead of this process's window (another process's clock runs a little ahead) keeps its
# window: a hit is never used to move the row back and so reset its count.
_COUNT = sa.text(
    """
    INSERT INTO rate_limits (key, slot, hits, prev_hits, expires_at)
    VALUES (:key, :slot, 1, 0, :expires_at)
    ON CONFLICT (key) DO UPDATE SET
        prev_hits = CASE
            WHEN rate_limits.slot >= :slot THEN rate_limits.prev_hits
            WHEN rate_limits.slot = :slot - 1 THEN rate_limits.hits
            ELSE 0 END,
        hits = CASE WHEN rate_limits.slot >= :slot THEN rate_limits.hits + 1 ELSE 1 END,
        slot = CASE WHEN rate_limits.slot > :slot THEN rate_limits.slot ELSE :slot END,
        expires_at = CASE
            WHEN rate_limits.slot > :slot THEN rate_limits.expires_at ELSE :expires_at END
    RETURNING slot, hits, prev_hits
    """
)

_UNCOUNT = sa.text(
    """
    UPDATE rate_limits SET
        hits = CASE WHEN slot = :slot AND hits > 0 THEN hits - 1 ELSE hits END,
        prev_hits = CASE
            WHEN slot = :slot + 1 AND prev_hits > 0 THEN prev_hits - 1 ELSE prev_hits END
    WHERE key = :key
    """
)

_PRUNE = sa.text("DELETE FROM rate_limits WHERE expires_at < :now")


def count_hit(connection: Connection, key: str, slot: int, window: float) -> Counted:
    """Count one hit under ``key`` in window ``slot`` (in the caller's transaction)."""
    expires_at = int((slot + 2) * window) + 1
    row = connection.execute(_COUNT, {"key": key, "slot": slot, "expires_at": expires_at}).one()
    return Counted(slot=int(row.slot), hits=int(row.hits), prev_hits=int(row.prev_hits))


def uncount_hit(connection: Connection, key: str, slot: int) -> None:
    """Take back one hit counted in window ``slot`` (found in the previous-window count if the
    window has moved on since)."""
    connection.execute(_UNCOUNT, {"key": key, "slot": slot})


def prune(connection: Connection, now: float) -> int:
    """Delete the rows that count nothing any more; how many."""
    result = connection.execute(_PRUNE, {"now": int(now)})
    return int(getattr(result, "rowcount", 0) or 0)
