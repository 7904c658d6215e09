"""A render's deadline that actually stops it: the rendering thread is interrupted in place.

A template that loops without printing (``{% for a in x %}{% for b in x %}{% endfor %}...``)
never returns to a check between output chunks, and in the worker it runs in a thread that
``asyncio`` cannot cancel: the send would sit at 100% CPU, retries would add more threads and
the process would not stop. So one watchdog thread per process keeps the deadlines of the renders
under way and, when one passes, raises :class:`RenderOvertime` inside that render's thread
(``PyThreadState_SetAsyncExc``), which Python delivers at its next bytecode; the render unwinds
like any exception and the thread is free again. A trace function could do the same but slows
every render several times; a process per render costs milliseconds each.

C-level operations cannot be interrupted this way (the exception waits for the operation to
end), which is why the sandbox (``emails._sandbox``) refuses large ones before they run.

Starting and ending a watch is a dict write and a lock, so the per-render cost is about a
microsecond; the watchdog sleeps while no render is under way.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time

__all__ = ["RenderOvertime", "Watch", "watch"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int
#: the same C function, declared to pass NULL: clears an exception not yet delivered
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
#: Longest sleep between scans while renders are under way; a deadline is met this late at most.
_POLL = 0.05


class RenderOvertime(BaseException):
    """Raised inside a render that ran past its deadline.

    A BaseException, so no ``except Exception`` inside Jinja or a filter swallows it on the way
    out; ``render_bounded`` turns it into a TemplateError."""


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: token -> (thread id, deadline) of the renders under way
        self._active: dict[int, tuple[int, float]] = {}
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._wake = threading.Event()
        self._idle = True
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> int:
        token = next(self._tokens)
        with self._lock:
            self._active[token] = (threading.get_ident(), time.monotonic() + seconds)
            wake, self._idle = self._idle, False
        if wake:
            if self._thread is None or not self._thread.is_alive():
                self._spawn()
            self._wake.set()
        return token

    def stop(self, token: int) -> bool:
        """End the watch; True if the deadline had passed (the render must fail then, even if
        the interruption was not delivered yet: it is cleared here)."""
        with self._lock:
            self._active.pop(token, None)
            if token not in self._fired:
                return False
            self._fired.discard(token)
            _clear_async_exc(threading.get_ident(), None)
            return True

    def _spawn(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="drip-render-watchdog", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for token, (thread_id, deadline) in self._active.copy().items():
                    if deadline <= now:
                        del self._active[token]
                        self._fired.add(token)
                        _set_async_exc(thread_id, RenderOvertime)
                nearest = min((d for _, d in self._active.values()), default=None)
                if nearest is None:
                    self._idle = True
                    self._wake.clear()
            if nearest is None:
                self._wake.wait()
            else:
                time.sleep(min(_POLL, max(0.0, nearest - now)))


_WATCHDOG = _Watchdog()


def _after_fork() -> None:
    """A forked child has no watchdog thread and maybe a lock held by the parent's: start over."""
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


class Watch:
    """``with Watch(seconds) as w:`` interrupts the block with RenderOvertime after ``seconds``;
    ``w.overtime`` says afterwards whether it ran out of time."""

    __slots__ = ("_seconds", "_token", "overtime")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self.overtime = False

    def __enter__(self) -> Watch:
        self._token = _WATCHDOG.start(self._seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        self.overtime = _WATCHDOG.stop(self._token)


def watch(seconds: float) -> Watch:
    return Watch(seconds)
