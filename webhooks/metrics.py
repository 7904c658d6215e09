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
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from contacts.interrupted import count_statement as interrupted_count
from contacts.models import Event
from drip import __version__

__all__ = ["CONTENT_TYPE", "ApiMetrics"]

#: The Prometheus text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


class ApiMetrics:
    """The registry and the series the middleware updates."""

    def __init__(self, engine: Engine) -> None:
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
        self.registry.register(_StateCollector(engine))

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
        return generate_latest(self.registry)
