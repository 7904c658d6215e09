"""Where a process's time goes, by sampling every thread's stack: ``bench.broadcast --profile``.

cProfile sees only the thread it runs in (the worker's asyncio thread) and doubles Python's
cost; py-spy is not installed here. A daemon thread that reads ``sys._current_frames()`` every
few milliseconds sees every thread (the event loop, the activity threads, the SDK's workflow
threads) at a cost of a few per cent. It can only sample while it holds the GIL, so time in C
code that keeps the GIL (SQLite, regular expressions) is seen at its Python caller.

``python -m bench._worker`` starts it when ``DRIP_BENCH_PROFILE`` names a file, and writes the
report there when the worker exits.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

__all__ = ["Sampler"]

#: Frames that mean "waiting": a thread sampled here is idle, not working.
IDLE = frozenset(
    {
        ("selectors.py", "select"),
        ("threading.py", "wait"),
        ("thread.py", "_worker"),
        ("queue.py", "get"),
        ("_sampler.py", "run"),
        ("_deadline.py", "_run"),  # the render watchdog, asleep between scans
    }
)
TICK = os.sysconf("SC_CLK_TCK")
#: threads Python does not know: the Temporal SDK's core (Rust, tokio)
RUST = "SDK core (Rust threads)"


def _where(frame: FrameType) -> tuple[str, str, int]:
    code = frame.f_code
    return (code.co_filename, code.co_name, frame.f_lineno if frame.f_lineno else 0)


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


class Sampler(threading.Thread):
    def __init__(self, out: Path, interval: float = 0.005) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.out = out
        self.interval = interval
        self.samples = 0
        self.busy: Counter[str] = Counter()  # per thread kind: samples not idle
        self.own: Counter[tuple[str, str]] = Counter()  # (kind, function): top of stack
        self.total: Counter[tuple[str, str]] = Counter()  # (kind, function): anywhere on stack
        self.started = time.monotonic()
        #: CPU seconds by native thread id: (kind, seconds), read from /proc every second, so
        #: threads that end before the report (the executor's) are counted too
        self.thread_cpu: dict[int, tuple[str, float]] = {}

    @staticmethod
    def kind(name: str) -> str:
        if name == "MainThread":
            return "event loop"
        if name.startswith("asyncio"):
            return "to_thread"
        if name.startswith("temporal_workflow"):
            return "workflow"
        return "other"

    def read_cpu(self) -> None:
        kinds = {t.native_id: self.kind(t.name) for t in threading.enumerate()}
        for task in Path("/proc/self/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tid = int(task.name)
            kind = kinds.get(tid, RUST)
            if kind == "other" and tid == threading.get_native_id():
                kind = "sampler"
            self.thread_cpu[tid] = (kind, (int(fields[11]) + int(fields[12])) / TICK)

    def cpu_by_kind(self) -> dict[str, float]:
        self.read_cpu()
        cpu: dict[str, float] = {}
        for kind, seconds in self.thread_cpu.values():
            cpu[kind] = cpu.get(kind, 0.0) + seconds
        return cpu

    def run(self) -> None:
        me = threading.get_ident()
        next_cpu = 0.0
        while True:
            time.sleep(self.interval)
            if time.monotonic() >= next_cpu:
                self.read_cpu()
                next_cpu = time.monotonic() + 1.0
            names = {t.ident: t.name for t in threading.enumerate()}
            self.samples += 1
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                top = _where(frame)
                if (Path(top[0]).name, top[1]) in IDLE:
                    continue
                kind = self.kind(names.get(ident, ""))
                self.busy[kind] += 1
                self.own[(kind, f"{_short(top[0])}:{top[1]}")] += 1
                seen: set[str] = set()
                f: FrameType | None = frame
                while f is not None:
                    label = f"{_short(f.f_code.co_filename)}:{f.f_code.co_name}"
                    if label not in seen:
                        seen.add(label)
                        self.total[(kind, label)] += 1
                    f = f.f_back

    def report(self) -> str:
        seconds = time.monotonic() - self.started
        lines = [
            f"{self.samples} samples over {seconds:.1f} s (one every {self.interval * 1000:.0f} "
            "ms while the sampler got the GIL); a thread counts when not idle"
        ]
        cpu = self.cpu_by_kind()
        lines.append(
            "CPU seconds by thread kind (from /proc): "
            + ", ".join(
                f"{kind} {seconds:.1f}"
                for kind, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
            )
        )
        for kind, busy in self.busy.most_common():
            lines.append("")
            lines.append(
                f"== {kind}: busy in {busy} samples ({100 * busy / max(1, self.samples):.0f}% "
                "of the samples)"
            )
            lines.append("   own (top of stack):")
            for (k, label), n in self.own.most_common():
                if n < busy * 0.01:
                    break
                if k == kind:
                    lines.append(f"   {100 * n / busy:5.1f}%  {label}")
            lines.append("   inclusive (anywhere on the stack):")
            shown = 0
            for (k, label), n in self.total.most_common():
                if k == kind:
                    lines.append(f"   {100 * n / busy:5.1f}%  {label}")
                    shown += 1
                    if shown >= 40:
                        break
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        self.out.write_text(self.report())

    @classmethod
    def install(cls, out: Path) -> Sampler:
        sampler = cls(out)
        sampler.start()
        atexit.register(sampler.write)
        return sampler
