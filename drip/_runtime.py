"""Process plumbing shared by ``drip dev``, ``drip worker`` and ``drip api``: stop signals.

One policy everywhere: the first SIGINT/SIGTERM asks for a clean stop and the command exits 0;
a second one forces it. uvicorn's own handling is switched off because it re-raises the signal
after shutting down (so the process would die of it) and because ``drip dev`` must decide the
order in which its parts stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Generator, Iterator

import uvicorn

__all__ = ["ApiServer", "stop_on_signals"]


class ApiServer(uvicorn.Server):
    """A uvicorn server that leaves signals to us; stop it with ``should_exit = True``."""

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
