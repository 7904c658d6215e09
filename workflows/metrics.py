"""What the worker tells an operator: drip's own Prometheus series, the Temporal SDK's, a
liveness answer, and a log line for every send that did not go out.

Two ports, each off unless set (``DRIP_WORKER_METRICS_PORT`` and
``DRIP_WORKER_TEMPORAL_METRICS_PORT``, on ``DRIP_WORKER_METRICS_HOST``):

- drip's port serves ``/metrics`` (this module's registry) and ``/healthz`` (200 while the
  worker polls; answered by the worker's own event loop, so a wedged loop fails it);
- the Temporal SDK's port is the SDK's own Prometheus exporter (``temporal_*``: task slots,
  poll and schedule-to-start latencies, workflow and activity outcomes), configured on the
  process's ``temporalio.runtime.Runtime``.

Why not one port with the SDK's metrics forwarded through a ``MetricBuffer``: the SDK's
exporter is native code that keeps its own histograms; a buffer would hand every single update
(several per workflow task and activity) to Python, to be re-aggregated on the event loop that
sends the email, and would drop updates whenever the drain falls behind. A second scrape
target is the smaller cost. Both are off by default because two worker processes on one host
would fight over a default port and the second would refuse to start.

drip's series (one registry per worker, so tests can build many):

- ``drip_worker_sends_total{outcome}``: one per ``send_email`` attempt, by how it ended:
  ``sent``; ``failed`` (the relay refused for good, 5xx, or the template failed); ``deferred``
  (4xx, timeout or relay away: Temporal retries it with backoff; or a 4.7.x/454 deferral of
  the recipient's domain: the journey waits for the domain's backoff); ``suppressed`` (the
  contact unsubscribed or bounced, no consent, a suppression list); ``interrupted`` (cut off
  mid-SMTP earlier, not resent); ``postponed`` (paused contact, full frequency cap, or the
  recipient's domain holding mail back, its backoff, pace or warm-up: the journey sends later);
  ``withdrawn`` (a stopping worker gave it back before MAIL FROM: another worker sends it);
  ``already_done`` (a retried attempt found what an earlier one did); ``error`` (anything else,
  e.g. the database away: retried).
- ``drip_worker_send_duration_seconds{outcome}``: each attempt, from start to outcome
  (database, render and SMTP).
- ``drip_worker_send_retries_total``: attempts after the first of the same send.
- ``drip_worker_segment_entered_total{campaign}``, ``drip_worker_segment_left_total{campaign}``
  and ``drip_worker_segment_backlog{campaign}`` (1 while more contacts match than one sweep
  enters): the segment sweep's batches; ``drip_worker_events_swept_total``: events the
  worker's sweep routed that the API could not.
- ``drip_worker_info{version,task_queue,namespace}``: always 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from drip.settings import Settings, __version__
from workflows.types import SendEmailInput

__all__ = [
    "OUTCOMES",
    "MetricsServer",
    "MetricsUnavailable",
    "WorkerMetrics",
    "sdk_metrics_url",
    "temporal_runtime",
    "without_addresses",
]

log = logging.getLogger(__name__)

OUTCOMES = (
    "sent",
    "failed",
    "deferred",
    "suppressed",
    "interrupted",
    "postponed",
    "withdrawn",
    "already_done",
    "error",
)
#: outcomes an operator should hear about, one WARNING line each
_LOGGED = frozenset({"failed", "deferred"})

# seconds; a send is a few database round trips, a render and an SMTP transaction; a relay
# that holds its answer (greylisting, a slow DATA) shows up in the last buckets
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_ADDRESS = re.compile(r"<?[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+>?")


class MetricsUnavailable(RuntimeError):
    """A metrics port cannot be opened; the message names the setting."""


def without_addresses(text: str) -> str:
    """Relays quote the recipient in their refusals (``550 5.1.1 <kim@...>: unknown``); logs
    carry message and contact ids instead, never an address."""
    return _ADDRESS.sub("<address>", text)


class WorkerMetrics:
    """The registry and the series the activities and sweeps update (from any thread)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.sends = Counter(
            "drip_worker_sends",
            "send_email attempts by how they ended",
            ["outcome"],
            registry=self.registry,
        )
        self.send_duration = Histogram(
            "drip_worker_send_duration_seconds",
            "Time of one send_email attempt, from start to outcome, by outcome",
            ["outcome"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every outcome shows (at 0) from the first scrape
            self.sends.labels(outcome)
            self.send_duration.labels(outcome)
        self.retries = Counter(
            "drip_worker_send_retries",
            "send_email attempts after the first of the same send (Temporal's retries)",
            registry=self.registry,
        )
        self.segment_entered = Counter(
            "drip_worker_segment_entered",
            "Contacts entered into a segment_entered campaign by the segment sweep",
            ["campaign"],
            registry=self.registry,
        )
        self.segment_left = Counter(
            "drip_worker_segment_left",
            "Contacts that left a segment_entered campaign's segment",
            ["campaign"],
            registry=self.registry,
        )
        self.segment_backlog = Gauge(
            "drip_worker_segment_backlog",
            "1 while more contacts match a campaign's segment than one sweep enters",
            ["campaign"],
            registry=self.registry,
        )
        self.events_swept = Counter(
            "drip_worker_events_swept",
            "Events routed by the worker's sweep (the API could not route them at once)",
            registry=self.registry,
        )
        self.broadcast_emails = Counter(
            "drip_worker_broadcast_emails",
            "Broadcast recipients handled by this worker's batches, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("sent", "failed", "suppressed", "interrupted"):
            self.broadcast_emails.labels(outcome)
        self.broadcast_batches = Counter(
            "drip_worker_broadcast_batches",
            "Broadcast batch activities by how they ended: done, or deferred (the relay or a "
            "stop handed the rest to a retry)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("done", "deferred"):
            self.broadcast_batches.labels(outcome)
        self.info = Gauge(
            "drip_worker_info",
            "The running worker: drip version, task queue and namespace",
            ["version", "task_queue", "namespace"],
            registry=self.registry,
        )

    def describe(self, settings: Settings, task_queue: str) -> None:
        self.info.labels(__version__, task_queue, settings.temporal_namespace).set(1)

    def send_ended(
        self,
        inp: SendEmailInput,
        outcome: str,
        seconds: float,
        *,
        attempt: int = 1,
        reason: str = "",
    ) -> None:
        """Count and time one attempt; a failed or deferred one is also a WARNING line."""
        self.sends.labels(outcome).inc()
        self.send_duration.labels(outcome).observe(seconds)
        if attempt > 1:
            self.retries.inc()
        if outcome in _LOGGED:
            log.warning(
                "send %s: message %s, contact %s, campaign %s step %s (attempt %d): %s",
                "deferred, retried later" if outcome == "deferred" else "failed",
                inp.message_id,
                inp.contact_id,
                inp.campaign_id,
                inp.step_id,
                attempt,
                without_addresses(reason) or "no reason given",
                extra={
                    "outcome": outcome,
                    "message_id": inp.message_id,
                    "contact_id": inp.contact_id,
                    "campaign_id": inp.campaign_id,
                    "step_id": inp.step_id,
                    "attempt": attempt,
                },
            )

    def sweep_counted(self, campaign_id: str, *, entered: int, left: int, more: bool) -> None:
        self.segment_entered.labels(campaign_id).inc(entered)
        self.segment_left.labels(campaign_id).inc(left)
        self.segment_backlog.labels(campaign_id).set(1 if more else 0)


def temporal_runtime(settings: Settings) -> Runtime | None:
    """The SDK's runtime exporting its metrics on ``DRIP_WORKER_TEMPORAL_METRICS_PORT``, or None
    (the SDK's default runtime, no metrics) when that port is 0."""
    if not settings.worker_temporal_metrics_port:
        return None
    address = _join(settings.worker_metrics_host, settings.worker_temporal_metrics_port)
    _check_free(
        settings.worker_metrics_host,
        settings.worker_temporal_metrics_port,
        "DRIP_WORKER_TEMPORAL_METRICS_PORT",
    )
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=address, durations_as_seconds=True)
            )
        )
    except Exception as exc:  # the SDK's core says RuntimeError or ValueError, in its words
        raise MetricsUnavailable(
            f"the Temporal SDK's metrics cannot listen on {address} "
            f"(DRIP_WORKER_TEMPORAL_METRICS_PORT): {exc}"
        ) from exc


def sdk_metrics_url(settings: Settings) -> str:
    """Where the Temporal SDK's exporter answers, or "" when it is off."""
    port = settings.worker_temporal_metrics_port
    return f"http://{_join(settings.worker_metrics_host, port)}/metrics" if port else ""


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _bind(host: str, port: int, setting: str) -> socket.socket:
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bare, port))
    except OSError as exc:
        sock.close()
        raise MetricsUnavailable(
            f"the worker's metrics cannot listen on {_join(host, port)} ({setting}, "
            f"DRIP_WORKER_METRICS_HOST): {exc.strerror or exc}"
        ) from exc
    return sock


def _check_free(host: str, port: int, setting: str) -> None:
    """The SDK's exporter reports a taken port in its own words (or only in its log): ask the
    operating system first, so the message names the setting."""
    _bind(host, port, setting).close()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Quiet(uvicorn.Server):
    """uvicorn without its signal handlers: stopping is the worker's business (see
    ``drip._runtime``), and uvicorn would re-raise the signal after its own shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``DRIP_WORKER_METRICS_PORT``, in the worker's loop."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics_app = make_asgi_app(metrics.registry)
        #: whether the worker polls; until it is built (connecting to Temporal), it does not
        self.alive: Callable[[], bool] = lambda: False
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; anything else is not for us
            return
        path = scope["path"]
        if path == "/metrics":
            await self._metrics_app(scope, receive, send)
            return
        if path == "/healthz":
            status, body = (200, {"status": "ok"}) if self.alive() else (503, {"status": "down"})
        else:
            status, body = 404, {"status": "not found: /metrics or /healthz"}
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def start(self, host: str, port: int) -> None:
        """Listen now (a taken port is an error here, naming the setting), serve in a task."""
        sock = _bind(host, port, "DRIP_WORKER_METRICS_PORT")
        config = uvicorn.Config(
            self, lifespan="off", access_log=False, log_config=None, log_level="warning"
        )
        self._server = _Quiet(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="metrics")
        self.url = f"http://{_join(host, sock.getsockname()[1])}/metrics"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True  # uvicorn notices within 0.1 s and closes
        try:
            await self._task
        except asyncio.CancelledError:  # we are cancelled again (a forced stop): do not wait
            self._task.cancel()
            raise
        except (Exception, SystemExit):  # uvicorn exits on a failed start; keep the stop going
            log.warning("the worker's metrics server had failed", exc_info=True)
