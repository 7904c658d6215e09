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
microsecond; the watchdog polls every 50 ms while renders come, and sleeps after two quiet
seconds until the next one.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time

__all__ = ["RenderOvertime", "start", "stop"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int
#: the same C function, declared to pass NULL: clears an exception not yet delivered
_clear_async_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
#: Longest sleep between scans while renders are under way; a deadline is met this late at most.
_POLL = 0.05
#: Seconds without a render after which the watchdog sleeps until the next one.
_IDLE_AFTER = 2.0


class RenderOvertime(BaseException):
    """Raised inside a render that ran past its deadline.

    A BaseException, so no ``except Exception`` inside Jinja or a filter swallows it on the way
    out; ``render_bounded`` turns it into a TemplateError."""


class _Watchdog:
    """The deadlines of the renders under way, and the thread that enforces them.

    The per-render path takes no lock: adding and popping a dict entry are atomic in CPython,
    and whoever pops a watch's entry first owns it. If ``stop`` pops it, the render finished in
    time; if the watchdog pops it, the deadline passed and the interruption is (being) sent,
    which ``stop`` then waits out under the lock and clears if it was not delivered yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: token -> (thread id, deadline) of the renders under way
        self._active: dict[int, tuple[int, float]] = {}
        self._tokens = itertools.count()
        self._wake = threading.Event()
        self._idle = True
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> int:
        token = next(self._tokens)
        self._active[token] = (threading.get_ident(), time.monotonic() + seconds)
        if self._idle:  # read after the write above; _run writes _idle before reading _active
            self._idle = False
            if self._thread is None or not self._thread.is_alive():
                self._spawn()
            self._wake.set()
        return token

    def stop(self, token: int) -> bool:
        """End the watch; True if the deadline had passed (the render must fail then, even if
        the interruption was not delivered yet: it is cleared here)."""
        if self._active.pop(token, None) is not None:
            return False
        with self._lock:  # the watchdog fires under the lock: once we have it, it is sent
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
        busy_at = time.monotonic()
        while True:
            with self._lock:
                now = time.monotonic()
                nearest: float | None = None
                for token, (thread_id, deadline) in self._active.copy().items():
                    if deadline > now:
                        nearest = deadline if nearest is None else min(nearest, deadline)
                    elif self._active.pop(token, None) is not None:
                        _set_async_exc(thread_id, RenderOvertime)
                if nearest is not None:
                    busy_at = now
                # Sleep only after a quiet spell: waking this thread for every render would
                # hand the GIL back and forth thousands of times a second during a bulk send.
                idle = nearest is None and now - busy_at > _IDLE_AFTER
                if idle:
                    self._wake.clear()
                    self._idle = True
                    idle = not self._active  # a render that started meanwhile saw _idle False
                    self._idle = idle
            if idle:
                self._wake.wait()
                busy_at = time.monotonic()
            else:
                time.sleep(_POLL if nearest is None else min(_POLL, max(0.0, nearest - now)))


_WATCHDOG = _Watchdog()


def _after_fork() -> None:
    """A forked child has no watchdog thread and maybe a lock held by the parent's: start over."""
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)


def start(seconds: float) -> int:
    """Watch the calling thread for ``seconds``: past them it gets RenderOvertime. Returns the
    ticket to pass to :func:`stop`, in a ``finally``."""
    return _WATCHDOG.start(seconds)


def stop(ticket: int) -> bool:
    """End a watch; True if its time ran out (no interruption is pending after this)."""
    return _WATCHDOG.stop(ticket)
