"""Postfix's ``smtp-sink`` for the SMTP benchmarks (``bench.send``, ``bench.broadcast``): found
where Debian puts it, started on a free loopback port, its running counters read from a file; and
what the scheduler says of a thread or process (``Sched``), the noise a shared machine adds."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._stack import free_port

#: Debian's postfix package installs these in /usr/sbin, which a non-root PATH may lack.
TOOL_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
SINK_USER = "nobody"  # smtp-sink refuses to run as root without -u
#: Lines of ``smtp-sink -c``: "sess=N quit=N mesg=N", each ended by a carriage return.
COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


def find_tool(name: str) -> str | None:
    """A Postfix test program: on PATH, or where Debian's ``postfix`` package puts it."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *TOOL_DIRS])
    return shutil.which(name, path=path)


# -- smtp-sink --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counters:
    sessions: int = 0  # ended
    quits: int = 0  # QUIT commands
    messages: int = 0


class Sink:
    """``smtp-sink`` on a free loopback port, its running counters (``-c``) written to a file:
    reading them from a pipe would need a thread in this process, which would compete with the
    client being measured, and an unread pipe would fill and stall the sink."""

    def __init__(
        self, binary: str, directory: Path, concurrency: int, extra: Sequence[str] = ()
    ) -> None:
        self.binary = binary
        #: more options before the address (``bench.broadcast`` adds ``-D``: a dump to count
        #: messages by recipient)
        self.extra = list(extra)
        self.port = free_port()
        self.concurrency = concurrency
        self.counter_file = directory / "smtp-sink.counters"
        self.error_file = directory / "smtp-sink.errors"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, cpu: int | None) -> Sink:
        command = [self.binary, "-c"]
        if os.geteuid() == 0:
            command += ["-u", SINK_USER]
        # -m: simultaneous sessions it serves (default 256); backlog: queued connects
        sessions = max(256, 4 * self.concurrency)
        command += ["-m", str(sessions), *self.extra]
        command += [f"127.0.0.1:{self.port}", str(max(1024, sessions))]
        with self.counter_file.open("wb") as out, self.error_file.open("wb") as errors:
            self.process = subprocess.Popen(command, stdout=out, stderr=errors)
        if cpu is not None:
            os.sched_setaffinity(self.process.pid, {cpu})
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts; this probe session shows up in the counters only
            if self.process.poll() is not None:
                error = self.error_file.read_text(errors="replace").strip()
                raise SystemExit(f"smtp-sink exited: {error or self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("smtp-sink did not accept connections within 10 s") from None
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def counters(self) -> Counters:
        """The sink's latest counters: sessions ended, messages received."""
        with self.counter_file.open("rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(max(0, size - 256))
            found = COUNTERS.findall(f.read())
        if not found:
            return Counters()
        sessions, quits, messages = found[-1]
        return Counters(int(sessions), int(quits), int(messages))

    def sched(self) -> Sched:
        assert self.process is not None
        return Sched.read(f"/proc/{self.process.pid}/schedstat")

    def wait_for(self, before: Counters, messages: int, label: str) -> Counters:
        """The counters once ``messages`` more arrived since ``before`` and every session that
        said QUIT has ended (the sink counts a session when the client has closed it, just after
        the client returned). A different count, after every client reported success, fails the
        benchmark."""
        deadline = time.monotonic() + 10
        while True:
            now = self.counters()
            received = now.messages - before.messages
            ended = now.sessions - before.sessions >= now.quits - before.quits
            if received == messages and ended:
                return now
            if received > messages or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        raise SystemExit(
            f"{label}: smtp-sink received {received} messages, not {messages} "
            f"(sessions ended {now.sessions - before.sessions}, QUITs {now.quits - before.quits})"
        )


@dataclass(frozen=True, slots=True)
class Sched:
    """What the scheduler says of one thread (``/proc/.../schedstat``): seconds on a CPU, and
    seconds it was ready to run but waited for a CPU. The second is the noise this benchmark
    cannot control: other work on the machine taking the CPU the client or the sink needs."""

    cpu: float = 0.0
    waited: float = 0.0

    @classmethod
    def read(cls, path: str) -> Sched:
        try:
            on_cpu, waiting, _ = Path(path).read_text().split()
        except (OSError, ValueError):  # a kernel without schedstats: the figures read 0
            return cls()
        return cls(int(on_cpu) / 1e9, int(waiting) / 1e9)

    def __add__(self, other: Sched) -> Sched:
        return Sched(self.cpu + other.cpu, self.waited + other.waited)

    def __sub__(self, other: Sched) -> Sched:
        return Sched(self.cpu - other.cpu, self.waited - other.waited)


def this_thread() -> Sched:
    """The asyncio thread, which runs drip's whole client (aiosmtplib has no threads)."""
    return Sched.read(f"/proc/self/task/{threading.get_native_id()}/schedstat")
