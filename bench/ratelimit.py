"""Benchmark: what one rate-limit check costs, now that the counters are in the database.

Run from the repository root::

    .venv/bin/python -m bench.ratelimit [--checks 2000] [--rounds 3]
                                        [--database-url postgresql://user@host:port/db]

Each round times, on a fresh migrated database (a SQLite file in a temp dir, or the PostgreSQL
database given, its ``rate_limits`` rows deleted first), one thread calling in turn:

* ``select 1``: a transaction that runs ``SELECT 1`` through the same pool: the baseline, the
  least any check kept in the database can cost;
* ``form``: ``RateLimiter.hit`` on one key (a form post's check), over 100 client addresses;
* ``sign-in``: a hit on two keys (address and email) in one transaction (a failed sign-in);
* ``sign-in ok``: the same, then ``refund`` (a successful sign-in: two transactions).

Limits are high enough that every hit is let through (the common case). The figures are
microseconds per check, median over rounds, and the ratio to ``select 1`` of the same round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from contacts.db import create_db_engine, migrate
from webhooks._ratelimit import Limit, RateLimiter

FORM = Limit("form", 10**9, 60.0)
ADDRESS = Limit("sign-in address", 10**9, 300.0)
EMAIL = Limit("sign-in email", 10**9, 300.0)


def _paths(engine: Engine) -> dict[str, Callable[[int], None]]:
    limiter = RateLimiter(engine)

    def select_one(_: int) -> None:
        with engine.begin() as c:
            c.execute(sa.text("SELECT 1"))

    def form(n: int) -> None:
        limiter.hit((FORM, f"192.0.2.{n % 100}\x00newsletter"))

    def sign_in(n: int) -> None:
        limiter.hit((ADDRESS, f"192.0.2.{n % 100}"), (EMAIL, f"user{n % 50}@example.com"))

    def sign_in_ok(n: int) -> None:
        verdict = limiter.hit((ADDRESS, f"192.0.2.{n % 100}"), (EMAIL, f"user{n % 50}@example.com"))
        limiter.refund(verdict)

    return {"select 1": select_one, "form": form, "sign-in": sign_in, "sign-in ok": sign_in_ok}


def _engine(url: str | None, folder: Path) -> Engine:
    engine = create_db_engine(url or f"sqlite:///{folder / 'drip.db'}")
    migrate(engine)
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM rate_limits"))
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the median of fewer says little)")
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds + 1):  # the first is the warm-up, not recorded
            engine = _engine(args.database_url, Path(tmp) / str(r))
            figures: dict[str, float] = {}
            for name, path in _paths(engine).items():
                started = time.perf_counter()
                for n in range(args.checks):
                    path(n)
                figures[name] = (time.perf_counter() - started) / args.checks * 1e6
            engine.dispose()
            if r:
                rounds.append(figures)
    database = sa.make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
    print(f"rate-limit checks on {database}, {args.checks} a path, {args.rounds} rounds")
    print(f"{'path':<12} {'us/check':>9} {'min-max':>15} {'x select 1':>11}  per round")
    summary: dict[str, dict[str, float]] = {}
    for name in rounds[0]:
        values = [f[name] for f in rounds]
        ratios = [f[name] / f["select 1"] for f in rounds]
        median = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        per_round = " ".join(f"{x:.2f}" for x in ratios)
        ratio = statistics.median(ratios)
        print(f"{name:<12} {median:>9.0f} {spread:>15} {ratio:>11.2f}  {per_round}")
        summary[name] = {"us": round(median, 1), "ratio": round(ratio, 2)}
    print(json.dumps({"database": database, "checks": args.checks, "paths": summary}))


if __name__ == "__main__":
    main()
