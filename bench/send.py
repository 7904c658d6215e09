"""Benchmark: drip's SMTP pool (``emails.SmtpTransport``) against Postfix ``smtp-source``.

Run from the repository root::

    .venv/bin/python -m bench.send [--messages 10000] [--rounds 5] [--concurrency 10]
    .venv/bin/python -m bench.send --quick

Sending is the last step of every email, so the question is how close drip's pool gets to a
client that costs almost nothing: Postfix's ``smtp-source`` (C, event-driven, no pipelining).
Both send into the same ``smtp-sink`` (Postfix's discard-everything server) started once per
run on a free loopback port, so the server, the kernel and the loopback are the same for both;
only the client differs. Both paths send:

* the same bytes: real drip messages, rendered once up front through the public API
  (``Renderer.render`` + ``build_message``, the ``welcome`` step of ``examples/acme``, as
  ``bench.render`` does); ``smtp-source`` sends one of them from a file (``-F``), so the size
  is the same to the byte and it adds no headers of its own;
* the same number of messages per round, over the same number of concurrent SMTP sessions:
  ``smtp-source -s N`` against N asyncio tasks calling ``transport.send`` (pool size and
  ``smtp_max_connections`` set to N);
* with the same connection reuse: the pool retires a connection after
  ``smtp_messages_per_connection`` messages (K). ``smtp-source`` has no such option (one message
  per session, or with ``-d`` every message over the same sessions), so the baseline runs as
  consecutive ``smtp-source -d -s N -m N*K`` batches: each session sends about K messages,
  then QUITs and the next batch connects (for K = 1, one run without ``-d``). A third,
  informative path (not in the ratio) is one ``smtp-source -d`` run that never recycles its
  sessions, to show what the batching costs: starting a process takes a few milliseconds, so
  batches of fewer than some hundreds of messages (small N*K) handicap the baseline.

Each path is timed from its start (for the baseline, the start of the first ``smtp-source``
process) until every session has had its QUIT answered (for drip, ``transport.close()``
returned), a new SmtpTransport each time. After each timed batch the run checks in
``smtp-sink``'s counters (``-c``) that the sink received exactly that many messages, and that
every session that said QUIT has ended. The protocol differs in small ways: ``smtp-source``
says HELO (one reply line) where drip says EHLO, and drip's pool checks a connection idle for a
second or more with NOOP, which favour the baseline; ``smtp-sink`` announces PIPELINING, as
mainstream relays do, and drip uses it (MAIL, RCPT and DATA in one write: two round trips a
message) where ``smtp-source`` sends one command at a time (four), which favours drip.
``smtp-sink`` announces no ``SIZE``; drip's costs nothing (the message's length).

CPU placement: the client of both paths (this process, which runs drip's pool on one asyncio
thread, and ``smtp-source``, one process, which inherits this process's CPU) is pinned to one
CPU and ``smtp-sink`` (one process) to another, unless ``--no-pin``. So each client gets one
core, the sink never competes with it, and the placement is the same in every round. Other
work on this shared machine is not controlled, only measured: the kernel's schedstat gives how
long the client and the sink were ready to run but waited for their CPU, printed per round.
Rounds are interleaved (their order alternates) so a noisy neighbour slows every path of a
round, and medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

# The same step, contacts and fixed date as bench.render, so both benchmarks send the same email.
from bench._cli import add_quick, positive, with_defaults

# The sink and the report live beside this module; their names stay importable from here
# (``bench.broadcast`` and its helpers use DRIP, SOURCE, Counters, Sink and find_tool).
from bench._send_report import DRIP as DRIP
from bench._send_report import LABELS as LABELS
from bench._send_report import SOURCE as SOURCE
from bench._send_report import SOURCE_ONE_RUN as SOURCE_ONE_RUN
from bench._send_report import Round as Round
from bench._send_report import report as report
from bench._smtp_sink import Counters as Counters
from bench._smtp_sink import Sched as Sched
from bench._smtp_sink import Sink as Sink
from bench._smtp_sink import find_tool as find_tool
from bench._smtp_sink import this_thread as this_thread
from bench._stack import free_port as free_port
from bench.render import DATE, PUBLIC_BASE_URL, SECRET_KEY, WORKSPACE, find_send, make_contacts
from bench.render import message_id as make_message_id
from campaigns.workspace import load_workspace
from drip.settings import Settings
from emails import Renderer, SmtpTransport, build_message, domain_of

MIN_ROUNDS = 3
DEFAULTS = {"messages": 10_000, "rounds": 5}
QUICK = {"messages": 2_000, "rounds": 3}
#: Distinct rendered messages; rendering costs ~3 ms each, so longer runs cycle through them.
DISTINCT = 256
WARMUP = 500

# -- the messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    recipient: str
    data: bytes


def render_messages(count: int, settings: Settings) -> list[Message]:
    """``count`` distinct messages (one per contact) of the welcome step, as ``send_email``
    builds them: personalised, tracked links, one-click unsubscribe, CRLF MIME bytes."""
    workspace = load_workspace(WORKSPACE)
    send = find_send(workspace)
    config = workspace.config
    renderer = Renderer(workspace, settings)
    domain = domain_of(config.from_)
    sender = parseaddr(config.from_)[1]
    messages = []
    for contact in make_contacts(count):
        mid = make_message_id(contact)
        rendered = renderer.render(
            template=send.template,
            subject=send.subject,
            preheader=send.preheader,
            contact=contact,
            message_id=mid,
            campaign_id=send.campaign_id,
            step_id=send.step_id,
            track=send.track,
        )
        data = build_message(
            rendered,
            from_addr=config.from_,
            to_addr=contact.email,
            reply_to=config.reply_to,
            message_id=mid,
            domain=domain,
            unsubscribe_mailto=config.unsubscribe_mailto,
            date=DATE,
        )
        messages.append(Message(sender, contact.email, data))
    return messages


def write_source_file(message: Message, path: Path) -> None:
    """``smtp-source -F`` reads lines, dot-stuffs them and ends each with CRLF: give it LF lines
    so it sends exactly these bytes (a CR left in would be sent doubled)."""
    path.write_bytes(message.data.replace(b"\r\n", b"\n"))


@dataclass
class Bench:
    sink: Sink
    source: str
    source_file: Path
    messages: list[Message]
    concurrency: int
    per_connection: int
    home: Path

    def settings(self) -> Settings:
        return Settings(
            home=self.home,
            smtp_host="127.0.0.1",
            smtp_port=self.sink.port,
            smtp_pool_size=self.concurrency,
            smtp_max_connections=self.concurrency,
            smtp_messages_per_connection=self.per_connection,
            smtp_rate_per_second=0.0,
            secret_key=SECRET_KEY,
            public_base_url=PUBLIC_BASE_URL,
        )

    async def drip(
        self, count: int, make: Callable[[int], Message] | None = None
    ) -> tuple[float, int]:
        """Send ``count`` messages through a new SmtpTransport, N tasks at a time, as N
        concurrent ``send_email`` activities would; then close it. Returns (s, connections).
        ``make(n)`` builds message n in the loop (``bench.broadcast``: render + send);
        without it the pre-rendered messages are sent."""
        transport = SmtpTransport(self.settings())
        messages = self.messages
        todo = iter(range(count))

        async def worker() -> None:
            for n in todo:  # shared: each message is taken by exactly one task
                message = make(n) if make is not None else messages[n % len(messages)]
                await transport.send(
                    sender=message.sender, recipients=[message.recipient], data=message.data
                )

        start = time.perf_counter()
        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            await transport.close()
        return time.perf_counter() - start, transport.connections_opened

    def source_command(self, count: int, *, reuse: bool = True) -> list[str]:
        message = self.messages[0]
        # -d: keep the session for the next message (batches bound how many)
        return [
            self.source,
            *(["-d"] if reuse else []),
            "-s",
            str(self.concurrency),
            "-m",
            str(count),
            "-F",
            str(self.source_file),
            "-f",
            message.sender,
            "-t",
            message.recipient,
            f"127.0.0.1:{self.sink.port}",
        ]

    def smtp_source(self, count: int, *, batch: int | None) -> tuple[float, Sched]:
        """``count`` messages by smtp-source, in consecutive runs of ``batch`` messages (all in
        one run if None). Returns (seconds, what the scheduler says of its processes)."""
        if batch is None:
            commands = [self.source_command(count)]
        elif self.per_connection == 1:  # smtp-source's own mode: one message per session
            commands = [self.source_command(count, reuse=False)]
        else:
            sizes = [min(batch, count - n) for n in range(0, count, batch)]
            commands = [self.source_command(size) for size in sizes]
        used = Sched()
        start = time.perf_counter()
        for command in commands:
            with subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            ) as process:
                # wait without reaping it, so its schedstat can still be read
                os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
                used += Sched.read(f"/proc/{process.pid}/schedstat")
                assert process.stderr is not None
                error = process.stderr.read().decode(errors="replace").strip()
            if process.returncode != 0:
                raise SystemExit(f"smtp-source failed ({process.returncode}): {error}")
        return time.perf_counter() - start, used

    async def run(self, path: str, count: int) -> Round:
        gc.collect()  # no path pays for the garbage the previous one left
        before, sink = self.sink.counters(), self.sink.sched()
        opened: int | None = None
        if path == DRIP:
            own = this_thread()
            seconds, opened = await self.drip(count)
            client = this_thread() - own
        elif path == SOURCE:
            batch = self.concurrency * self.per_connection
            seconds, client = self.smtp_source(count, batch=batch)
        else:
            seconds, client = self.smtp_source(count, batch=None)
        sink = self.sink.sched() - sink
        after = self.sink.wait_for(before, count, path)
        return Round(
            path=path,
            count=count,
            seconds=seconds,
            client=client,
            sink=sink,
            sessions=after.sessions - before.sessions,
            received=after.messages - before.messages,
            connections_opened=opened,
        )

    async def profile(self, count: int) -> str:
        """One extra drip batch under cProfile: where this process's time goes."""
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            seconds, _ = await self.drip(count)
        finally:
            profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(18)
        text = out.getvalue()
        body = text[text.find("   ncalls") :] if "   ncalls" in text else text
        return (
            f"profile: one drip batch of {count} under cProfile ({count / seconds:,.0f}/s with "
            f"the profiler's overhead), by own time:\n{body.rstrip()}"
        )


def pin_cpus(enabled: bool) -> tuple[int | None, int | None]:
    """(client CPU, sink CPU): this process (and the smtp-source it starts) on one CPU, the sink
    on another. None where there are fewer than two CPUs to choose from or pinning is off."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    client, sink = cpus[0], cpus[1]
    os.sched_setaffinity(0, {client})
    return client, sink


async def measure(bench: Bench, args: argparse.Namespace) -> dict[str, list[Round]]:
    paths = [SOURCE, DRIP, SOURCE_ONE_RUN]
    warmup = min(args.messages, WARMUP)
    # Warm-up: imports, aiosmtplib's code paths, the page cache for smtp-source, CPU clocks.
    for path in paths:
        await bench.run(path, warmup)
    print(f"  warm-up done ({warmup} messages per path)", flush=True)
    rounds: dict[str, list[Round]] = {path: [] for path in paths}
    for number in range(1, args.rounds + 1):
        for path in paths if number % 2 else reversed(paths):
            rounds[path].append(await bench.run(path, args.messages))
        s, d, o = rounds[SOURCE][-1], rounds[DRIP][-1], rounds[SOURCE_ONE_RUN][-1]
        print(
            f"  round {number}: smtp-source {s.rate:7,.0f}/s   drip {d.rate:7,.0f}/s "
            f"({d.connections_opened} connections)   ratio {d.rate / s.rate:.2f}   "
            f"[-d {o.rate:,.0f}/s]   client+sink waited for a CPU: {s.waited:.0%}, {d.waited:.0%}, "
            f"{o.waited:.0%}",
            flush=True,
        )
    return rounds


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sink_binary, source_binary = find_tool("smtp-sink"), find_tool("smtp-source")
    if sink_binary is None or source_binary is None:
        raise SystemExit("smtp-sink and smtp-source are needed: install Debian's `postfix`")
    client_cpu, sink_cpu = pin_cpus(not args.no_pin)
    pinned = (
        f"client (drip or smtp-source) on CPU {client_cpu}, smtp-sink on CPU {sink_cpu}"
        if client_cpu is not None
        else "not pinned (--no-pin, or a single CPU)"
    )
    with tempfile.TemporaryDirectory(prefix="drip-bench-") as tmp:
        directory = Path(tmp)
        home = directory / ".drip"
        home.mkdir()
        render_settings = Settings(
            home=home,
            secret_key=SECRET_KEY,
            public_base_url=PUBLIC_BASE_URL,
        )
        t0 = time.perf_counter()
        messages = render_messages(min(args.messages, DISTINCT), render_settings)
        # smtp-source sends one of them: the median size, so its bytes stand for all
        sizes = sorted(messages, key=lambda m: len(m.data))
        typical = sizes[len(sizes) // 2]
        messages.remove(typical)
        messages.insert(0, typical)
        source_file = directory / "message.eml"
        write_source_file(typical, source_file)
        print(
            f"  {len(messages)} distinct messages rendered in {time.perf_counter() - t0:.1f} s, "
            f"{len(sizes[0].data):,}-{len(sizes[-1].data):,} bytes; smtp-source sends one of "
            f"{len(typical.data):,}",
            flush=True,
        )
        sink = Sink(sink_binary, directory, args.concurrency).start(sink_cpu)
        try:
            bench = Bench(
                sink=sink,
                source=source_binary,
                source_file=source_file,
                messages=messages,
                concurrency=args.concurrency,
                per_connection=args.per_connection,
                home=home,
            )
            rounds = await measure(bench, args)
            if args.profile:
                print(await bench.profile(args.messages), flush=True)
        finally:
            sink.stop()
    return report(rounds, args, len(typical.data), pinned)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.send",
        description="drip's SMTP pool vs Postfix smtp-source, both into smtp-sink.",
    )
    parser.add_argument(
        "--messages",
        type=positive,
        help=f"messages per path per round (default {DEFAULTS['messages']})",
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        help=f"rounds; medians are reported (default {DEFAULTS['rounds']}, at least {MIN_ROUNDS})",
    )
    parser.add_argument(
        "--concurrency",
        type=positive,
        default=10,
        help="concurrent SMTP sessions: smtp-source -s, drip's tasks, pool size and "
        "smtp_max_connections (default 10)",
    )
    parser.add_argument(
        "--per-connection",
        type=positive,
        default=Settings.model_fields["smtp_messages_per_connection"].default,
        help="messages per connection: drip's smtp_messages_per_connection, smtp-source's batch "
        "of N*K (default: the setting's default, %(default)s)",
    )
    add_quick(parser, QUICK, "seconds")
    parser.add_argument(
        "--no-pin", action="store_true", help="leave CPU placement to the scheduler"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, profile one more drip batch and print where its time goes",
    )
    return with_defaults(
        parser, parser.parse_args(argv), defaults=DEFAULTS, quick=QUICK, min_rounds=MIN_ROUNDS
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"bench.send: {args.messages} messages per path per round, {args.rounds} rounds, "
        f"{args.concurrency} sessions, {args.per_connection} messages per connection; "
        f"Python {sys.version.split()[0]}",
        flush=True,
    )
    summary = asyncio.run(run(args))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
