"""Prometheus metrics of one API app: request counts and latencies, plus state read on scrape.

Each app has its own registry (tests build many apps in one process; the global registry would
refuse the second). Series:

- ``drip_http_requests_total{method,route,status}`` and
  ``drip_http_request_duration_seconds{method,route,status}``: ``route`` is the route's template
  (``/forms/{form_id}``), never the raw path, so a token in a URL cannot explode the series;
  a path no route matches is ``unmatched``.
- ``drip_tracking_hits_total{kind}``: the pixel and click paths (``/t/...``) are the hottest of
  all, so they only bump a pre-bound counter (``open``, ``click`` or ``other``): no timing.
- ``drip_tracking_unknown_tokens_total{kind}``: pixel (``open``) and click requests whose token
  names no message or link. They are counted here instead of stored as hits, so junk requests
  cannot grow the ``hits`` table; a steady rise is someone probing the tracking paths (or a
  mail client mangling URLs).
- ``drip_events_unrouted``: events stored but not yet delivered to Temporal, counted on scrape
  (the index on ``routed_at`` makes that cheap); growth means Temporal or the worker is away.
- ``drip_messages_interrupted``: emails whose SMTP transaction was cut off (the relay may or
  may not have them), not resent by themselves, awaiting an operator's decision
  (``drip messages interrupted``, ``drip messages resend``); alert when it is above 0.
- ``drip_info{version}``: always 1, to join dashboards on the running version.
- ``drip_api_processes``: the API processes whose counts this scrape adds up (1, or the
  ``--workers`` still running).

Several worker processes (``drip api --workers N``) share their counts through prometheus_client's
multiprocess mode: ``drip api`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
the workers start, each process writes its counters and histograms to its own memory-mapped file
there, and whichever worker answers ``/metrics`` sums all the files, so every scrape shows the
totals of the whole server (a worker that was replaced keeps its counts in the sum; counters
never go down while the server runs). The gauges read from the database are computed by the
answering process alone, once a scrape, never summed. The variable is prometheus_client's own
(its files are found there), which is why it is an environment variable and not a drip setting;
without it (one process, ``drip dev``, the tests' apps) each app keeps its counts in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from contacts.interrupted import count_statement as interrupted_count
from contacts.models import Event
from drip.settings import __version__

__all__ = ["CONTENT_TYPE", "MULTIPROCESS_DIR_ENV", "ApiMetrics"]

#: The Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: prometheus_client's switch to its multiprocess mode: a directory for the processes' files.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger(__name__)

# seconds; from a cached page (1 ms) to a form post waiting on Temporal's route budget (2 s)
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """Gauges read from the database when Prometheus scrapes, never on the request path."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("drip_info", "The running drip version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        try:
            with self.engine.connect() as conn:
                stmt = (
                    select(func.count())
                    .select_from(Event)
                    .where(
                        Event.routed_at.is_(None)  # type: ignore[union-attr]
                    )
                )
                unrouted = conn.execute(stmt).scalar_one()
                interrupted = conn.execute(interrupted_count()).scalar_one()
        except Exception:  # a scrape must still show the request series when the DB is away
            log.warning("drip_events_unrouted not collected", exc_info=True)
            return
        yield GaugeMetricFamily(
            "drip_events_unrouted",
            "Events stored but not yet routed to journeys (the worker's sweep retries them)",
            value=unrouted,
        )
        yield GaugeMetricFamily(
            "drip_messages_interrupted",
            "Emails cut off mid-SMTP (they may or may not have arrived), awaiting an operator's "
            "decision: drip messages interrupted | resend",
            value=interrupted,
        )


def _multiprocess_dir() -> str | None:
    """The shared directory when this process adds up its counts with others', else None.

    prometheus_client picks in-memory or file-backed values once, from the variable as it is
    when the library is first imported, and whatever imports it first (the worker's metrics
    come in through ``drip.cli``) may do so before ``drip api`` sets or clears the variable.
    So the API process makes the choice match the variable when it builds its app: every
    value it creates from then on (children are made on first use) follows."""
    path = os.environ.get(MULTIPROCESS_DIR_ENV) or None
    file_backed = getattr(values.ValueClass, "_multiprocess", False)
    if path is not None and not file_backed:
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    elif path is None and file_backed:
        values.ValueClass = values.MutexValue
    return path


class ApiMetrics:
    """The registry and the series the middleware updates."""

    def __init__(self, engine: Engine) -> None:
        self.multiprocess_dir = _multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "drip_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "drip_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template and status",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        tracking = Counter(
            "drip_tracking_hits",
            "Open pixel and click requests (/t/...), counted without timing: the hot path",
            ["kind"],
            registry=self.registry,
        )
        self.tracking_open = tracking.labels("open")
        self.tracking_click = tracking.labels("click")
        self.tracking_other = tracking.labels("other")
        unknown = Counter(
            "drip_tracking_unknown_tokens",
            "Open pixel and click requests whose token names no message or link: counted, "
            "not stored",
            ["kind"],
            registry=self.registry,
        )
        self._unknown = {kind: unknown.labels(kind) for kind in ("open", "click")}
        Gauge(
            "drip_api_processes",
            "API processes whose counts this scrape adds up (drip api --workers)",
            multiprocess_mode="livesum",  # this process's 1 leaves the sum when it stops
            registry=self.registry,
        ).set(1)
        state = _StateCollector(engine)
        if self.multiprocess_dir is None:
            self.registry.register(state)
            self._scraped = self.registry
        else:
            # the files of every process, then the database gauges once (not once a process)
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            self._scraped.register(state)

    def unknown_tokens(self, kind: str, n: int = 1) -> None:
        """Count ``n`` hits with an unknown token (any thread: the hit writer calls it too)."""
        counter = self._unknown.get(kind)
        if counter is not None:
            counter.inc(n)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(method, route, code).inc()
        self.duration.labels(method, route, code).observe(seconds)

    def exposition(self) -> bytes:
        """The text format; blocking (it queries the database): call it in a thread."""
        return generate_latest(self._scraped)

    def close(self) -> None:
        """Leave the multiprocess sums: a stopped process no longer counts as serving (its
        counters stay in the totals)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]
