"""The processes ``bench.broadcast`` starts besides the Temporal dev server: ``drip worker``
(one or more, each in its own process, as in production) and what it reads from ``/proc``
about them: CPU seconds and resident memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["WorkerProcess", "cpu_seconds", "descendants", "memory_mb"]

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mb(pid: int | str, key: str = "VmRSS") -> float:
    """A ``/proc/PID/status`` size in MB: ``VmRSS`` (resident now) or ``VmHWM`` (its peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """The live processes started by ``pid``, at any depth (a worker's render processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class WorkerProcess:
    """``drip worker`` in its own process, configured by ``DRIP_*`` variables (the bench sets
    them in its own environment, which the worker inherits). With ``profile`` it runs as
    ``python -m bench._worker``, the same command with a stack sampler that writes there."""

    READY = "worker started"

    def __init__(self, log: Path, cwd: Path, profile: Path | None = None) -> None:
        self.log = log
        self.cwd = cwd
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> WorkerProcess:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        if self.profile is not None:
            env["DRIP_BENCH_PROFILE"] = str(self.profile)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            command = [sys.executable, "-m", "bench._worker"]
        else:
            drip = Path(sys.executable).parent / "drip"
            command = [str(drip) if drip.exists() else "drip", "worker"]
        with self.log.open("ab") as out:
            # cwd: a temp dir, so no .env of the checkout overrides the bench's settings
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def cpu_seconds(self) -> float:
        """CPU seconds of the worker and the processes it started (render processes)."""
        return sum(cpu_seconds(p) for p in (self.pid, *descendants(self.pid)))

    def memory_mb(self) -> float:
        """Resident memory of the worker and the processes it started, in MB."""
        return sum(memory_mb(p) for p in (self.pid, *descendants(self.pid)))

    def wait_ready(self, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while self.READY not in self.log.read_text(errors="replace"):
            if self.process is None or self.process.poll() is not None:
                raise SystemExit(f"the worker exited; the end of {self.log}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start within {within:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM (a graceful stop: the sampler's report is written at exit), SIGKILL after
        ``grace`` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
