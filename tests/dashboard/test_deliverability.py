"""The Delivery page's pacing by receiving domain, on SQLite and PostgreSQL: on an empty
database every configured group is at full pace; with the rows workers write
(``contacts.pacing``: bookings, a deferral, transaction slots, a warm-up's count) each group
shows its limit, its pace now, its backoff until when in the workspace's time zone, its
deferrals with the relay's last reply, its transactions in flight and the day's warm-up count."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from campaigns.workspace import Workspace, load_workspace
from contacts import pacing
from drip.settings import Settings
from emails.pacing import DomainPacer
from emails.pacing_report import group_statuses
from tests.dashboard.support import make_user, sign_in
from tests.support import api_client, copy_workspace

PAGE = "/dashboard/admin/delivery"
ZONE = ZoneInfo("Europe/Berlin")

DELIVERABILITY = """
timezone: Europe/Berlin
deliverability:
  domains:
    google: {domains: [gmail.com, googlemail.com], per_second: 20, connections: 4}
    corp: {domains: [corp.example], per_second: 2}
  backoff: {first: 10m}
"""


def _workspace(tmp_path: Path, extra: str = "") -> Workspace:
    root = copy_workspace(tmp_path)
    with (root / "workspace.yaml").open("a") as out:
        out.write(DELIVERABILITY + extra)
    return load_workspace(root)


def _cells(page: str, group: str) -> dict[str, str]:
    """The figures of one group's row, as text."""
    row = re.search(rf'<tr data-group="{group}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {group}"
    found = {
        name: html.unescape(re.sub(r"<[^>]+>", "", value)).strip()
        for name, value in re.findall(r'data-figure="([a-z-]+)">(.*?)</(?:td|span)>', row[1], re.S)
    }
    domains = re.search(r'data-label="Domains">(.*?)</td>', row[1], re.S)
    assert domains
    found["domains"] = html.unescape(re.sub(r"<[^>]+>", "", domains[1]))
    return found


async def _page(settings: Settings, workspace: Workspace, engine: Engine) -> str:
    make_user(engine, "ops@example.com", "admin")
    async with api_client(settings, workspace, engine) as http:
        await sign_in(http, "ops@example.com")
        page = await http.get(PAGE)
    assert page.status_code == 200
    return page.text


async def test_an_empty_database_shows_every_group_at_full_pace(
    settings: Settings, any_engine: Engine, tmp_path: Path
) -> None:
    page = await _page(settings, _workspace(tmp_path), any_engine)
    groups = re.findall(r'<tr data-group="([^"]+)">', page)
    # the workspace's groups in its order (built-in ones first), every other domain last
    assert groups == ["google", "microsoft", "yahoo", "corp", "default"]
    google = _cells(page, "google")
    assert google == {
        "domains": "gmail.com, googlemail.com",
        "limit": "20/s, 4 at once",
        "pace": "20/s (100%)",
        "backoff": "no",
        "deferrals": "0",
        "in-flight": "0 of 4",
    }
    assert _cells(page, "corp")["limit"] == "2/s"
    default = _cells(page, "default")
    assert default["domains"] == "every other domain"
    assert default["limit"] == default["pace"] == "no limit"
    assert default["in-flight"] == "not counted"  # only a limit on them leases them
    assert "Warm-up" not in page  # none configured: no column for it


async def test_the_rows_workers_write_show_as_pace_backoff_deferrals_and_warm_up(
    settings: Settings, any_engine: Engine, tmp_path: Path
) -> None:
    today = datetime.now(ZONE).date()
    warmup = f"  warmup: {{start: {today - timedelta(days=2)}, per_day: [100, 200, 300, 400]}}\n"
    workspace = _workspace(tmp_path, warmup)
    pacer = DomainPacer(any_engine, workspace.config.deliverability, zone=ZONE)
    now = time.time()
    google = pacer.limits("google")
    assert google.day_cap == 300  # day 3
    with any_engine.begin() as conn:
        for _ in range(3):
            assert pacing.book(conn, "google", google, now=now, horizon=30).at is not None
        assert pacing.book(conn, "yahoo", pacer.limits("yahoo"), now=now, horizon=30).at
        until = pacing.record_deferral(
            conn, "google", google, now=now, reply="421 4.7.0 Try again later"
        )
        # a group the workspace no longer names, deferred while it did
        pacing.record_deferral(conn, "old", pacing.Limits(), now=now - 3600, reply="454 quota")
    for holder in ("worker-1", "worker-2"):
        with any_engine.begin() as conn:
            assert isinstance(
                pacing.take_slot(conn, "google", 4, holder=holder, now=now, lease=300), int
            )
    page = await _page(settings, workspace, any_engine)

    cells = _cells(page, "google")
    shown = datetime.fromtimestamp(until, ZONE)
    assert cells["limit"] == "20/s, 4 at once"
    assert cells["pace"] == "10/s (50%)"  # halved, and not climbing back before the wait ends
    # ten minutes from now, in the workspace's time zone
    assert cells["backoff"].startswith(f"until {shown:%H:%M:%S %Z}") or cells["backoff"].startswith(
        f"until {shown:%Y-%m-%d %H:%M:%S %Z}"
    )
    assert cells["backoff"].endswith("(in 10 min)")
    assert cells["deferrals"] == "1"
    assert cells["last-reply"] == "last: 421 4.7.0 Try again later"
    assert cells["in-flight"] == "2 of 4"
    assert cells["warmup"] == "day 3 of 4: 3 of 300 sent today"

    yahoo = _cells(page, "yahoo")
    assert (yahoo["pace"], yahoo["backoff"], yahoo["deferrals"]) == ("no limit", "no", "0")
    assert yahoo["warmup"] == "day 3 of 4: 1 of 300 sent today"
    assert "Times in Europe/Berlin" in page

    old = _cells(page, "old")  # listed after the workspace's groups, its history kept
    assert re.findall(r'<tr data-group="([^"]+)">', page)[-1] == "old"
    assert old["domains"] == "(no longer in the workspace)"
    assert old["backoff"] == "no" and old["deferrals"] == "1"


def test_a_warm_up_before_its_start_and_after_its_end_says_so(
    any_engine: Engine, tmp_path: Path
) -> None:
    for start, said in (
        (datetime(2026, 12, 20).date(), "starts 2026-12-20"),
        (datetime(2026, 11, 1).date(), "over (its last day was 2026-11-02)"),
    ):
        workspace = _workspace(
            tmp_path / start.isoformat(), f"  warmup: {{start: {start}, per_day: [10, 20]}}\n"
        )
        now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        statuses = group_statuses(any_engine, workspace.config.deliverability, ZONE, now)
        assert {s.warmup.describe() for s in statuses if s.warmup} == {said}
