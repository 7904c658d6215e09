"""Postfix ``smtp-sink`` that counts what it receives *by recipient*, for ``bench.broadcast``.

``lost`` and ``duplicated`` must be measured at the relay, per recipient: a total alone would
hide one contact getting two emails while another got none. ``smtp-sink -c`` only counts, and
``-d`` (a file per message) or ``-D`` into a regular file would write 13.5 KB a message to
disk (1.35 GB at 100,000, 13.5 GB at a million). So the sink appends its dump (``-D``) into a
FIFO, and ``grep`` (C, a few percent of one core at thousands of messages a second) keeps only
the envelope line the sink writes before each message, ``X-Rcpt-Args: <address>``, one line
per message received in full (the sink writes the dump when the final ``.`` arrives, before it
counts the message). The sink is single-threaded and writes whole messages, so the lines come in
the order the messages were accepted: a phase of the run is a range of line numbers, taken
when the lines caught up with the sink's own counter.

The bench keeps the FIFO open for writing too, so the reader sees no end of file when the sink
closes the dump between messages; the pipe is enlarged to 1 MB so a reader that is scheduled
late does not stall the sink. The sink writes its temporary per-message file next to the dump,
so the FIFO lives on tmpfs (``/dev/shm``) when there is one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.send import Counters, Sink

__all__ = ["RecipientSink"]

F_SETPIPE_SZ = 1031  # linux/fcntl.h
PIPE_BYTES = 1 << 20
PREFIX = b"X-Rcpt-Args: "


class RecipientSink(Sink):
    """``smtp-sink -c -D fifo``, and ``grep`` writing one recipient a line."""

    def __init__(self, binary: str, directory: Path, concurrency: int) -> None:
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else directory
        self.dump_dir = Path(tempfile.mkdtemp(prefix="drip-bench-sink-", dir=parent))
        self.dump_dir.chmod(0o777)  # the sink drops to `nobody` after binding
        self.fifo = self.dump_dir / "dump"
        os.mkfifo(self.fifo, 0o666)
        self.fifo.chmod(0o666)
        self.lines_file = self.dump_dir / "recipients"
        super().__init__(binary, directory, concurrency, extra=["-D", str(self.fifo)])
        self.reader: subprocess.Popen[bytes] | None = None
        self._hold: int | None = None

    def start(self, cpu: int | None = None) -> RecipientSink:
        # ours, read-write: the FIFO always has a writer, and opening it never blocks
        self._hold = os.open(self.fifo, os.O_RDWR)
        with contextlib.suppress(OSError):  # a smaller pipe only costs some stalls
            fcntl.fcntl(self._hold, F_SETPIPE_SZ, PIPE_BYTES)
        with self.lines_file.open("wb") as out:
            self.reader = subprocess.Popen(
                ["grep", "-a", "--line-buffered", "^X-Rcpt-Args: ", str(self.fifo)], stdout=out
            )
        super().start(cpu)
        return self

    def stop(self) -> None:
        super().stop()
        if self._hold is not None:
            os.close(self._hold)  # the reader sees the end of the file, flushes and exits
            self._hold = None
        if self.reader is not None:
            try:
                self.reader.wait(10)
            except subprocess.TimeoutExpired:
                self.reader.kill()
                self.reader.wait()
        for path in self.dump_dir.iterdir():
            path.unlink()
        self.dump_dir.rmdir()

    def lines(self) -> int:
        with self.lines_file.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    def settle(self, within: float = 30.0) -> Counters:
        """The sink's counters once every message it counted has its recipient line: the
        point that separates one phase of the run from the next."""
        deadline = time.monotonic() + within
        while True:
            counters = self.counters()
            if self.lines() >= counters.messages:
                return counters
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the sink counted {counters.messages} messages but its dump shows "
                    f"{self.lines()} after {within:.0f} s"
                )
            time.sleep(0.05)

    def recipients(self, start: int, end: int) -> Counter[str]:
        """How many messages each address received, over lines ``start`` to ``end`` (message
        numbers as ``settle`` gives them: the messages received in that phase)."""
        found: Counter[str] = Counter()
        with self.lines_file.open("rb") as f:
            for number, line in enumerate(f):
                if number >= end:
                    break
                if number >= start:
                    found[line[len(PREFIX) :].strip().strip(b"<>").decode().lower()] += 1
        return found
