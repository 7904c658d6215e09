"""The hit writer: tracking hits buffered in memory, stored in batches, then consumed.

A pixel request only appends a ``NewHit`` to an in-process buffer and answers; a background
thread wakes every ``FLUSH_SECONDS`` and

1. stores the whole buffer in one transaction (``contacts.hits.insert_hits``): from then on the
   hits survive a crash. Hits whose token names no message or link are not stored, only
   counted (``on_unknown``, the app's Prometheus counter): they would let anyone grow the table;
2. consumes stored hits (``contacts.hits.consume``): flags machines, records human opens and
   clicks as events, in transactions of up to 5,000 hits;
3. hands the few events that can change a journey (a message's first human open or click) to
   ``on_route``, which the app points at ``JourneyGateway.route`` on its event loop. An event
   that cannot be routed there and then keeps ``routed_at`` empty and the worker's sweep
   routes it, exactly like a form post's.

Why the consumer runs here, in the API process, and not in the worker: the batch it consumes
was just written by this thread (no second process polling the table, no claim protocol on
SQLite), its token look-ups are one ``IN (...)`` query per batch, it runs off the request path
in this thread, and Temporal is signalled only for first human opens and clicks: tens a second
at most, from tens of thousands of hits. Hits left unconsumed by a crash are consumed by the
next flush of any API process (on PostgreSQL several share the table with ``SKIP LOCKED``).

What a crash can lose: the hits of the last flush interval that were answered but not yet
stored (at most ``FLUSH_SECONDS`` plus one batch's write). A graceful stop (``close``, from the
app's lifespan) stores and consumes everything first.

The thread starts on the first hit and ends after ``IDLE_SECONDS`` without any, so an app that
is never served a hit, or a test's app that is dropped without a lifespan, leaves no thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import Engine

from contacts import hits
from contacts.db import session_scope
from contacts.hits import ALL_LINKS_WINDOW, Consumed, NewHit
from contacts.models import utcnow
from webhooks.bots import classify_user_agent

__all__ = ["FLUSH_SECONDS", "HitWriter"]

log = logging.getLogger(__name__)

#: How often the buffer is stored: the most a crash can lose of answered hits.
FLUSH_SECONDS = 0.25
#: The writer thread stops after this long without hits (and starts again on the next one).
IDLE_SECONDS = 5.0
#: Hits kept in memory while the database refuses writes; beyond, the oldest are dropped.
MAX_BUFFERED = 1_000_000
_CONSUME_LIMIT = 5000


class HitWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        min_seconds_after_send: float,
        on_route: Callable[[list[int]], None] | None = None,
        on_unknown: Callable[[str, int], None] | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        click_settle: timedelta = ALL_LINKS_WINDOW,
    ) -> None:
        self.engine = engine
        self.min_seconds_after_send = min_seconds_after_send
        self.on_route = on_route
        self.on_unknown = on_unknown
        self.flush_seconds = flush_seconds
        self.click_settle = click_settle
        self._buffer: list[NewHit] = []
        self._lock = threading.Lock()  # guards _buffer and _thread
        self._flushing = threading.Lock()  # one flush at a time (thread, close, tests)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_hit = 0.0
        self._closed = False
        #: counters for operations and tests
        self.stored = 0
        self.dropped = 0
        #: hits not stored (or deleted once stored) for an unknown token, by kind
        self.unknown: dict[str, int] = {}

    def add(self, hit: NewHit) -> None:
        """Buffer one hit (called on the request path: no I/O, no waiting)."""
        with self._lock:
            self._buffer.append(hit)
            self._last_hit = time.monotonic()
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="drip-hit-writer", daemon=True
                )
                self._thread.start()

    def pending(self) -> int:
        return len(self._buffer)

    def flush(self, *, everything: bool = False) -> Consumed:
        """Store the buffer, then consume what is ripe (``everything``: clicks too, unsettled).
        Safe to call from any thread; the writer thread calls it every ``flush_seconds``."""
        with self._flushing:
            with self._lock:
                batch, self._buffer = self._buffer, []
            unknown: dict[str, int] = {}
            if batch:
                try:
                    with session_scope(self.engine) as session:
                        unknown = hits.insert_hits(session, batch)
                except Exception:
                    with self._lock:  # keep them for the next flush, oldest first
                        self._buffer[:0] = batch
                        excess = len(self._buffer) - MAX_BUFFERED
                        if excess > 0:
                            del self._buffer[:excess]
                            self.dropped += excess
                    raise
                self.stored += len(batch) - sum(unknown.values())
                self._count_unknown(unknown)
            total = Consumed()
            settle = timedelta(0) if everything else self.click_settle
            # one chunk per round while hits pour in, so storing the next batch never waits
            # long; everything when stopping
            while True:
                with session_scope(self.engine) as session:
                    done = hits.consume(
                        session,
                        now=utcnow(),
                        classify_user_agent=classify_user_agent,
                        min_seconds_after_send=self.min_seconds_after_send,
                        settle=settle,
                        limit=_CONSUME_LIMIT,
                    )
                total.consumed += done.consumed
                total.flagged += done.flagged
                total.events += done.events
                total.to_route += done.to_route
                for kind, n in done.unknown.items():
                    total.unknown[kind] = total.unknown.get(kind, 0) + n
                self._count_unknown(done.unknown)
                if done.consumed < _CONSUME_LIMIT or not everything:
                    break
        if total.to_route and self.on_route is not None:
            self.on_route(total.to_route)
        return total

    def _count_unknown(self, counts: dict[str, int]) -> None:
        for kind, n in counts.items():
            self.unknown[kind] = self.unknown.get(kind, 0) + n
            if self.on_unknown is not None:
                self.on_unknown(kind, n)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush(everything=self._closed)
            except Exception:  # keep writing: the buffer is kept and retried next time
                log.exception("tracking hits not stored this round; retrying")
            with self._lock:
                idle = time.monotonic() - self._last_hit
                # stay until the last clicks have settled and been consumed
                settled = idle > self.click_settle.total_seconds() + self.flush_seconds
                if self._closed or (not self._buffer and settled and idle > IDLE_SECONDS):
                    self._thread = None
                    return

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and store and consume everything (a graceful shutdown)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)
        try:
            self.flush(everything=True)
        except Exception:
            log.exception("tracking hits could not be stored at shutdown: %d lost", self.pending())
