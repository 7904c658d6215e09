"""``drip worker`` says what it does: its metrics port counts sends by outcome and times them,
the Temporal SDK's exporter serves ``temporal_*`` on its own port, ``/healthz`` answers, and the
log has a start line, a stop line and one WARNING per failed or deferred send (no addresses).

A real worker process, the real Temporal dev server and a real SMTP server that refuses one
recipient for good (550) and another for now (451) until the test lets it through.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from drip.settings import Settings
from tests.e2e.conftest import WorkerProcess, temporal_target
from tests.support import SmtpServer, api_client, copy_workspace, free_port

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(http: httpx.AsyncClient, url: str) -> Samples:
    r = await http.get(url)
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _sends(samples: Samples, outcome: str) -> float:
    return samples.get(("drip_worker_sends_total", frozenset({("outcome", outcome)})), 0.0)


async def _until(check: Callable[[], Awaitable[bool]], what: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.2)


def _log(path: Path) -> list[dict[str, Any]]:
    """The worker's JSON log lines (other output, e.g. from the SDK's core, is skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_the_metrics_port_counts_sends_by_outcome(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"workspace": copy_workspace(tmp_path)})
    port, sdk_port = free_port(), free_port()
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    worker.env |= {
        "DRIP_WORKER_METRICS_PORT": str(port),
        "DRIP_WORKER_TEMPORAL_METRICS_PORT": str(sdk_port),
        "DRIP_LOG_FORMAT": "json",
    }
    metrics = f"http://127.0.0.1:{port}/metrics"
    smtp.mailbox.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
    # a relay-wide "later" (4.3.0), retried by Temporal within seconds; a 4.7.x deferral would
    # make example.com's group wait its backoff (tests/workflows/test_send_metrics.py)
    smtp.mailbox.refuse["later@example.com"] = "451 4.3.0 <later@example.com>: try again later"
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            worker.start()

            async def listening() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await _until(listening, "the worker's /healthz")
            health = await http.get(f"http://127.0.0.1:{port}/healthz")
            assert health.json() == {"status": "ok"}
            first = await _scrape(http, metrics)
            assert _sends(first, "sent") == 0 and _sends(first, "deferred") == 0  # shown at 0

            workspace = load_workspace(settings.workspace)
            async with api_client(settings, workspace, engine, dev_env.client) as api:
                for name in ("ok", "gone", "later"):
                    r = await api.post(
                        "/forms/newsletter",
                        json={"email": f"{name}@example.com", "first_name": "A", "consent": True},
                    )
                    assert r.status_code == 202

            async def refused_and_deferred() -> bool:
                now = await _scrape(http, metrics)
                return (
                    _sends(now, "sent") == 1
                    and _sends(now, "failed") == 1
                    and _sends(now, "deferred") >= 1
                )

            await _until(refused_and_deferred, "one sent, one refused, one deferred")
            del smtp.mailbox.refuse["later@example.com"]  # the relay takes it on the retry
            await smtp.mailbox.wait_for(lambda m: len(m.messages) == 2, within=90)

            async def retried_and_sent() -> bool:
                return _sends(await _scrape(http, metrics), "sent") == 2

            await _until(retried_and_sent, "the deferred email sent on its retry")
            done = await _scrape(http, metrics)
            sdk = await http.get(f"http://127.0.0.1:{sdk_port}/metrics")
        finally:
            worker.stop()

    assert {o: _sends(done, o) for o in ("sent", "failed", "deferred", "suppressed")} == {
        "sent": 2.0,
        "failed": 1.0,
        "deferred": 1.0,
        "suppressed": 0.0,
    }
    assert done[("drip_worker_send_retries_total", frozenset())] == 1.0
    sent_timings = ("drip_worker_send_duration_seconds_count", frozenset({("outcome", "sent")}))
    assert done[sent_timings] == 2.0
    slowest = (
        "drip_worker_send_duration_seconds_bucket",
        frozenset({("outcome", "sent"), ("le", "+Inf")}),
    )
    assert done[slowest] == 2.0

    # the SDK's own series, from its exporter: the activities this worker ran
    assert sdk.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(sdk.text)}
    executed = [
        s
        for name, f in families.items()
        if name.startswith("temporal_activity_execution_latency")
        for s in f.samples
        if s.labels.get("activity_type") == "send_email"
    ]
    assert executed, sorted(families)
    assert any(name.startswith("temporal_worker_task_slots") for name in families)

    lines = _log(tmp_path / "worker.log")
    messages = [line["message"] for line in lines]
    started = next(line for line in lines if line["message"].startswith("worker started"))
    assert started["level"] == "INFO"
    assert started["task_queue"] == settings.temporal_task_queue
    assert started["namespace"] == "default"
    assert started["metrics_url"] == metrics
    assert f"http://127.0.0.1:{sdk_port}/metrics" in started["message"]
    assert any(m.startswith("worker stopped") for m in messages), messages
    warnings = [line for line in lines if line.get("outcome") in ("failed", "deferred")]
    assert sorted(w["outcome"] for w in warnings) == ["deferred", "failed"]
    for w in warnings:
        assert w["level"] == "WARNING"
        assert w["campaign_id"] == "welcome" and w["step_id"] == "welcome"
        assert w["message_id"] in w["message"] and f"contact {w['contact_id']}" in w["message"]
    assert "550 5.1.1 <address>: no such user" in next(
        w["message"] for w in warnings if w["outcome"] == "failed"
    )
    assert "451" in next(w["message"] for w in warnings if w["outcome"] == "deferred")
    assert "@example.com" not in (tmp_path / "worker.log").read_text()
