"""Benchmark: what lead scoring adds to each routed event, and what replaying the history costs.

Run from the repository root::

    .venv/bin/python -m bench.scoring [--contacts 300] [--events-per-contact 20] [--rounds 3]
                                      [--database-url postgresql://user@host:port/db]

The router scores every event it routes (``SalesPipeline.on_event`` -> ``apply_scores``). With
the demo rules (``examples/acme/sales.yaml``) and one seeded history (opens, clicks, pages,
forms, purchases, a few ``score`` events, contacts interleaved in time order), each path runs
per round on a fresh migrated database (a SQLite file in a temp dir, or a throwaway schema in
the PostgreSQL database given):

* ``live``: per event, ``record_event`` in one transaction (the API's), then ``apply_scores``
  in another (the router's);
* ``record``: the same inserts without scoring: the baseline;
* ``rebuild``: ``rebuild_scores(write=True)`` on the record path's database (``drip scores
  rebuild`` over a history nobody scored yet);
* ``check``: ``rebuild_scores(write=False)`` on the live path's database: it must find 0
  differences in every round, or the run fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench._cli import positive
from campaigns.sales import SalesPlan, load_sales_plan
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import utcnow
from contacts.repository import record_event, upsert_contact
from workflows.score_rebuild import rebuild_scores
from workflows.scoring import apply_scores

SALES = Path(__file__).resolve().parent.parent / "examples" / "acme" / "sales.yaml"
MIN_ROUNDS = 3
SEED = 20260115
#: The history spans this long before the run, so decay and the caps' refills both show.
SPAN = timedelta(days=90)
#: (weight, type, name) of the seeded mix; properties are drawn in ``_event``.
MIX = (
    (40, "open", ""), (18, "click", ""), (22, "page", ""), (8, "form", ""),
    (10, "event", "purchase"), (2, "score", "campaign"),
)  # fmt: skip
LABELS = {
    "live": "live: record_event + apply_scores",
    "record": "record_event only (baseline)",
    "rebuild": "rebuild_scores(write=True)",
    "check": "rebuild_scores(write=False), live DB",
}


@dataclass(frozen=True, slots=True)
class Seeded:
    contact: int  # index into the contacts
    type: str
    name: str
    properties: dict[str, Any]
    at: timedelta  # before the run's start


@dataclass
class Round:
    seconds: dict[str, float] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)  # ms per event
    differences: int = -1


def _event(rng: random.Random, contact: int, at: timedelta) -> Seeded:
    _, type_, name = rng.choices(MIX, weights=[m[0] for m in MIX])[0]
    props: dict[str, Any] = {}
    if type_ == "page":
        path = rng.choices(["/pricing", "/careers/jobs", "/blog/trips", "/"], [3, 1, 4, 2])[0]
        props = {"path": path, "url": f"https://acme.example{path}"}
    elif type_ == "form":
        name = rng.choice(["catalogue", "newsletter"])
    elif type_ == "event":
        props = {"amount": rng.choice([49, 120, 480, 500, 900, 2400])}
    elif type_ == "score":
        props = {"points": rng.choice([5, 10, -5])}
    elif type_ == "click":
        props = {"url": f"https://acme.example/trips/{rng.randrange(20)}"}
    return Seeded(contact, type_, name, props, at)


def make_history(contacts: int, per_contact: int) -> tuple[list[dict[str, Any]], list[Seeded]]:
    """Contacts' fields (every few with fit fields) and their events in arrival order."""
    rng = random.Random(SEED)
    fields: list[dict[str, Any]] = []
    for n in range(contacts):
        f: dict[str, Any] = {"first_name": f"Contact {n}", "country": rng.choice(["GB", "DE"])}
        if n % 5 == 0:
            f["title"] = rng.choice(["Head of Trips", "Director of Studies", "Teacher"])
        if n % 7 == 0:
            f["organisation_type"] = rng.choice(["club", "school", "company"])
        if n % 11 == 0:
            f["group_size"] = rng.choice([8, 25, 60])
        fields.append(f)
    events = [
        _event(rng, n, SPAN * rng.random()) for n in range(contacts) for _ in range(per_contact)
    ]
    events.sort(key=lambda e: -e.at)  # oldest first: contacts interleave as in real traffic
    return fields, events


@contextmanager
def fresh_db(url: str | None, folder: Path, fields: list[dict[str, Any]]) -> Iterator[Engine]:
    """A migrated database with the contacts stored (untimed); PostgreSQL: a throwaway schema."""
    label = f"bench_scoring_{uuid.uuid4().hex[:12]}"
    admin: Engine | None = None
    if url is None:
        engine = create_db_engine(f"sqlite:///{folder / label}.db")
    else:
        admin = create_db_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{label}"'))
        engine = create_db_engine(url, connect_args={"options": f"-csearch_path={label}"})
    try:
        migrate(engine)
        with session_scope(engine) as session:
            ids = [
                upsert_contact(session, f"c{n:06d}@example.org", f)[0].id
                for n, f in enumerate(fields)
            ]
        assert ids == list(range(1, len(fields) + 1))  # events name contacts by position
        yield engine
    finally:
        engine.dispose()
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{label}" CASCADE'))
            admin.dispose()


def _record(engine: Engine, e: Seeded, key: str, start: datetime) -> int:
    with session_scope(engine) as session:
        event, _ = record_event(
            session,
            contact_id=e.contact + 1,
            type=e.type,
            name=e.name,
            properties=e.properties,
            dedupe_key=key,
            source="bench",
            occurred_at=start - e.at,
        )
        assert event.id is not None
        return event.contact_id


def run_events(
    engine: Engine, events: Sequence[Seeded], plan: SalesPlan | None, r: Round, path: str
) -> None:
    """Record every event, each in its own transaction; with ``plan``, score it in a second."""
    start = utcnow()
    ms: list[float] = []
    scoring_ms: list[float] = []
    gc.collect()
    clock = time.perf_counter
    began = clock()
    for i, e in enumerate(events):
        t0 = clock()
        contact_id = _record(engine, e, f"bench-{i}", start)
        if plan is not None:
            t1 = clock()
            with session_scope(engine) as session:
                apply_scores(session, contact_id, plan, now=utcnow())
            scoring_ms.append((clock() - t1) * 1000)
        ms.append((clock() - t0) * 1000)
    r.seconds[path] = clock() - began
    r.latency[path] = ms
    if plan is not None:
        r.latency["scoring"] = scoring_ms


def one_round(
    url: str | None,
    folder: Path,
    plan: SalesPlan,
    fields: list[dict[str, Any]],
    events: Sequence[Seeded],
    live_first: bool,
) -> Round:
    r = Round()
    for path in ("live", "record") if live_first else ("record", "live"):
        with fresh_db(url, folder, fields) as engine:
            run_events(engine, events, plan if path == "live" else None, r, path)
            gc.collect()
            began = time.perf_counter()
            report = rebuild_scores(engine, plan, now=utcnow(), write=path == "record")
            r.seconds["rebuild" if path == "record" else "check"] = time.perf_counter() - began
            if report.events != len(events):  # every seeded type is one the rules score
                raise SystemExit(f"{path}: replay folded {report.events} of {len(events)} events")
            if path == "live":
                r.differences = report.changed
                for d in report.differences[:3]:
                    print(f"    difference: contact {d.contact_id}: {d.detail}", file=sys.stderr)
    return r


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(rounds: list[Round], events: int, contacts: int, backend: str) -> None:
    def rates(path: str) -> list[float]:
        return [events / r.seconds[path] for r in rounds]

    def spread(values: list[float], fmt: str = ",.0f") -> str:
        return f"{statistics.median(values):>10{fmt}}   {min(values):{fmt}}-{max(values):{fmt}}"

    print()
    print(f"median of {len(rounds)} rounds, {events:,} events of {contacts:,} contacts, {backend}")
    print(f"{'path':<40}{'events/s':>10}   rounds min-max")
    for path, label in LABELS.items():
        print(f"{label:<40}{spread(rates(path))}")
    print()
    print(f"{'per event, ms':<40}{'p50':>10}   rounds min-max   {'p99':>8}   rounds min-max")
    for path, label in (
        ("live", "live: both transactions"),
        ("scoring", "  of which apply_scores transaction"),
        ("record", "record_event only"),
    ):
        p50 = [pct(r.latency[path], 0.5) for r in rounds]
        p99 = [pct(r.latency[path], 0.99) for r in rounds]
        print(f"{label:<40}{spread(p50, '.2f')}  {spread(p99, '.2f')}")
    slower = [r.seconds["live"] / r.seconds["record"] for r in rounds]
    added = [1000 * (r.seconds["live"] - r.seconds["record"]) / events for r in rounds]
    live, record, rebuild = (statistics.median(rates(p)) for p in ("live", "record", "rebuild"))
    print()
    print(
        f"ratio live/record-only time per event: {record / live:.2f}x "
        f"(rounds {', '.join(f'{s:.2f}' for s in slower)}); scoring adds "
        f"{statistics.median(added):.2f} ms per routed event"
    )
    print(
        f"rebuild: {events / rebuild:.2f} s for the whole history, "
        f"{rebuild / live:.1f}x the live path's events/s"
    )
    diffs = [r.differences for r in rounds]
    summary = {
        "bench": "scoring",
        "backend": backend,
        "contacts": contacts,
        "events": events,
        "rounds": len(rounds),
        "live_per_s": round(live),
        "record_per_s": round(record),
        "rebuild_per_s": round(rebuild),
        "check_per_s": round(statistics.median(rates("check"))),
        "live_p50_ms": round(statistics.median(pct(r.latency["live"], 0.5) for r in rounds), 3),
        "live_p99_ms": round(statistics.median(pct(r.latency["live"], 0.99) for r in rounds), 3),
        "ratio": round(record / live, 3),
        "ratio_rounds": [round(s, 3) for s in slower],
        "check_differences": diffs,
    }
    print(json.dumps(summary))
    ok = all(d == 0 for d in diffs)
    print(
        f"check after the live run: rebuild_scores(write=False) replayed {events:,} events of "
        f"{contacts:,} contacts and found {'/'.join(map(str, diffs))} differences (rounds): "
        + ("OK" if ok else "FAILED")
    )
    if not ok:
        raise SystemExit(1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scoring",
        description="What lead scoring adds to each routed event, against recording alone.",
    )
    parser.add_argument("--contacts", type=positive, default=300, help="contacts (300)")
    parser.add_argument("--events-per-contact", type=positive, default=20, help="(20)")
    parser.add_argument("--rounds", type=positive, default=3, help=f"at least {MIN_ROUNDS} (3)")
    parser.add_argument("--database-url", help="a PostgreSQL URL (default: SQLite in a temp dir)")
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}: one round on a shared box is noise")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL URL (SQLite is the default)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = load_sales_plan(SALES)
    fields, events = make_history(args.contacts, args.events_per_contact)
    backend = "PostgreSQL" if args.database_url else "SQLite (WAL, synchronous=NORMAL)"
    with tempfile.TemporaryDirectory(prefix="drip-bench-") as home:
        folder = Path(home)
        # Warm-up: imports, compiled conditions and statements, CPU frequency; nothing recorded.
        warm_fields, warm_events = make_history(20, 5)
        one_round(args.database_url, folder, plan, warm_fields, warm_events, True)
        print(
            f"bench.scoring: {len(events):,} events of {args.contacts:,} contacts per path, "
            f"{args.rounds} rounds, {backend}, Python {sys.version.split()[0]}"
        )
        rounds: list[Round] = []
        for number in range(1, args.rounds + 1):
            r = one_round(args.database_url, folder, plan, fields, events, number % 2 == 1)
            rounds.append(r)
            line = "  ".join(f"{p} {len(events) / s:,.0f}/s" for p, s in r.seconds.items())
            print(f"  round {number}: {line}  differences {r.differences}", flush=True)
    report(rounds, len(events), args.contacts, backend)


if __name__ == "__main__":
    main()
