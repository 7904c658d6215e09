"""What ``bench.send`` measures and prints: one timed batch of a path (``Round``) and the report
of all rounds (medians, CPU per message, the ratio), with its JSON summary."""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from typing import Any

from bench._smtp_sink import Sched

DRIP = "drip"
SOURCE = "smtp-source"
SOURCE_ONE_RUN = "smtp-source -d"
LABELS = {
    SOURCE: "baseline: smtp-source, batches of N*K",
    DRIP: "drip: SmtpTransport, N tasks",
    SOURCE_ONE_RUN: "  info: smtp-source -d, never recycled",
}


@dataclass
class Round:
    """One timed batch of one path."""

    path: str
    count: int
    seconds: float
    client: Sched  # drip's asyncio thread, or the smtp-source processes
    sink: Sched
    sessions: int  # SMTP sessions the sink saw end
    received: int  # messages the sink counted
    connections_opened: int | None = None  # drip's own count (transport.connections_opened)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def waited(self) -> float:
        """Share of the time the client or the sink was ready to run but had no CPU."""
        return (self.client.waited + self.sink.waited) / self.seconds


# -- running and reporting --------------------------------------------------------------------


def report(
    rounds: dict[str, list[Round]], args: argparse.Namespace, size: int, pinned: str
) -> dict[str, Any]:
    """Print the figures; return the JSON summary."""
    rates = {path: [r.rate for r in found] for path, found in rounds.items()}
    median = {path: statistics.median(r) for path, r in rates.items()}
    per_round = [d / s for d, s in zip(rates[DRIP], rates[SOURCE], strict=True)]

    def of(r: Round, part: str) -> Sched:
        return r.client if part == "client" else r.sink

    def us(path: str, part: str) -> float:
        """Median CPU microseconds per message of the client or the sink."""
        return statistics.median(1e6 * of(r, part).cpu / r.count for r in rounds[path])

    def share(path: str, part: str, *, waited: bool = False) -> float:
        """Median share of the wall time the client or the sink was on a CPU (or waited)."""
        return statistics.median(
            (of(r, part).waited if waited else of(r, part).cpu) / r.seconds for r in rounds[path]
        )

    print()
    print(f"{'':<40}{'':>9}   {'':<15}{'--------- client ---------':>27}{'----- sink -----':>18}")
    print(
        f"{'path':<40}{'msgs/s':>9}   {'min-max':<15}{'CPU/msg':>9}{'busy':>8}{'waited':>10}"
        f"{'CPU/msg':>9}{'waited':>9}{'sessions':>10}"
    )
    for path in (SOURCE, DRIP, SOURCE_ONE_RUN):
        low, high = min(rates[path]), max(rates[path])
        sessions = statistics.median(r.sessions for r in rounds[path])
        print(
            f"{LABELS[path]:<40}{median[path]:>9,.0f}   {f'{low:,.0f}-{high:,.0f}':<15}"
            f"{us(path, 'client'):>6.0f} us{share(path, 'client'):>8.0%}"
            f"{share(path, 'client', waited=True):>10.0%}{us(path, 'sink'):>6.0f} us"
            f"{share(path, 'sink', waited=True):>9.0%}{sessions:>10.0f}"
        )
    opened = [r.connections_opened or 0 for r in rounds[DRIP]]
    expected = max(
        math.ceil(args.messages / args.per_connection), min(args.concurrency, args.messages)
    )
    ratio = median[DRIP] / median[SOURCE]
    print()
    print(
        f"median of {args.rounds} rounds of {args.messages} messages ({size:,} bytes each) per "
        f"path; N = {args.concurrency} concurrent sessions, K = {args.per_connection} messages "
        "per connection"
    )
    print(f"placement: {pinned}; rounds interleaved, order alternating; sink counts checked")
    print(
        "client = drip's asyncio thread or the smtp-source processes; busy = its CPU time over "
        "the wall time; waited = time it was ready to run but other work had the CPU (noise)"
    )
    print(
        f"drip's pool opened {min(opened)}-{max(opened)} connections per round "
        f"(the least possible is {expected})"
    )
    cpu_x = us(DRIP, "client") / us(SOURCE, "client")
    print(
        f"drip's client spends {cpu_x:.1f}x the CPU per message smtp-source does: the figure "
        "least moved by other work on the machine; 1 / that is the ratio drip would reach if "
        "both were CPU-bound"
    )
    print(
        "batching smtp-source to K messages per session costs it "
        f"{100 * (1 - median[SOURCE] / median[SOURCE_ONE_RUN]):.0f}% "
        "next to never recycling sessions"
    )
    print(
        f"ratio drip/smtp-source: {ratio:.2f} (rounds {min(per_round):.2f}-{max(per_round):.2f}); "
        "goal >= 0.5"
    )
    return {
        "ratio": round(ratio, 3),
        "ratio_rounds": [round(r, 3) for r in per_round],
        "drip_per_s": round(median[DRIP], 1),
        "baseline_per_s": round(median[SOURCE], 1),
        "baseline_never_recycled_per_s": round(median[SOURCE_ONE_RUN], 1),
        "drip_client_cpu_us_per_message": round(us(DRIP, "client"), 1),
        "baseline_client_cpu_us_per_message": round(us(SOURCE, "client"), 1),
        "client_cpu_x": round(cpu_x, 2),
        "waited_for_cpu_rounds": {
            path: [round(r.waited, 3) for r in found] for path, found in rounds.items()
        },
        "connections_opened": opened,
        "sink_messages": {path: sum(r.received for r in found) for path, found in rounds.items()},
        "sink_sessions": {path: [r.sessions for r in found] for path, found in rounds.items()},
        "messages": args.messages,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "per_connection": args.per_connection,
        "message_bytes": size,
        "pinned": pinned,
    }
