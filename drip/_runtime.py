"""Process plumbing shared by the commands: stop signals, running async work that talks to
Temporal without crashing at exit, and the directory where API worker processes add up their
metrics.

One policy everywhere: the first SIGINT/SIGTERM asks for a clean stop and the command exits 0;
a second one forces it. uvicorn's own handling is switched off because it re-raises the signal
after shutting down (so the process would die of it) and because ``drip dev`` must decide the
order in which its parts stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

__all__ = ["ApiServer", "run_with_temporal", "shared_metrics", "stop_on_signals"]

T = TypeVar("T")

#: prometheus_client's multiprocess switch (``webhooks.metrics.MULTIPROCESS_DIR_ENV``; not
#: imported from there, which would import prometheus_client here, before it is set)
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ApiServer(uvicorn.Server):
    """A uvicorn server that leaves signals to us; stop it with ``should_exit = True``.

    It also ignores ``X-Forwarded-For``/``X-Forwarded-Proto``: uvicorn believes them from any
    loopback peer by default, so anything on the host (or a proxy passing a client's header
    through) could pick its address and escape the rate limits. Who the client is is the
    app's decision alone (``webhooks.middleware.ClientAddressMiddleware``, from
    ``DRIP_TRUSTED_PROXIES``), the same under uvicorn as under granian."""

    def __init__(self, config: uvicorn.Config) -> None:
        config.proxy_headers = False
        super().__init__(config)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.contextmanager
def stop_on_signals(
    on_stop: Callable[[], object], on_force: Callable[[], object] | None = None
) -> Iterator[list[int]]:
    """Call ``on_stop`` on the first SIGINT/SIGTERM, ``on_force`` on any later one.

    Yields the list of signals received, so the caller can tell a requested stop (exit 0) from
    a failure. Outside the main thread (tests) nothing is installed.
    """
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        if len(received) == 1:
            on_stop()
        elif on_force is not None:
            on_force()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        yield received
    finally:
        for installed_sig in installed:
            loop.remove_signal_handler(installed_sig)


def run_with_temporal(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for a command that talks to Temporal, then free the client at once.

    The Temporal client sits in a reference cycle; left for the interpreter's shutdown, its Rust
    threads call into a finalizing Python and the process dies (SIGABRT or SIGSEGV) after the
    command has done its work, in about one run in seven on this machine (temporalio/sdk-python
    issue 300). Collecting it while Python is whole avoids that."""
    try:
        return asyncio.run(work)
    finally:
        gc.collect()


@contextlib.contextmanager
def shared_metrics(processes: int) -> Iterator[Path | None]:
    """Let ``processes`` API worker processes add up their metrics, for the ``with`` block.

    With more than one, ``PROMETHEUS_MULTIPROC_DIR`` names a new empty directory (a fresh one
    every run: files left by an earlier run would be summed in) that the workers inherit; it is
    removed when the server has stopped (each worker switches prometheus_client to it when it
    builds its app: ``webhooks.metrics``). With one process the variable is removed, so one
    inherited from the shell cannot point a single process at a stale directory."""
    if processes <= 1:
        os.environ.pop(_MULTIPROC_ENV, None)
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="drip-api-metrics-"))
    os.environ[_MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(_MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
