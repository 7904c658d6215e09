"""``drip deliverability status|reset`` through the ``drip`` command group (typer's CliRunner),
on a copy of the demo workspace with a ``deliverability:`` section and a real SQLite database
holding the rows workers write (``contacts.pacing``)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import Result
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from campaigns.workspace import load_workspace
from contacts import pacing
from contacts.db import create_db_engine, migrate
from drip import cli_deliverability
from drip.cli import app
from drip.settings import get_settings
from emails.pacing import DomainPacer
from tests.docs._blocks import DOCS
from tests.support import copy_workspace

GOOGLE = pacing.Limits(per_second=20, connections=4, backoff_first=600.0)


def _operator_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace_yaml: str, width: int = 250
) -> Path:
    """A copy of the demo workspace with ``workspace_yaml`` added to its workspace.yaml and a
    fresh database, named in ``DRIP_*`` as an operator's shell would."""
    root = copy_workspace(tmp_path)
    with (root / "workspace.yaml").open("a") as out:
        out.write(workspace_yaml)
    monkeypatch.setenv("DRIP_HOME", str(tmp_path / ".drip"))
    monkeypatch.setenv("DRIP_WORKSPACE", str(root))
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    for console in (cli_deliverability.console, cli_deliverability.err):
        monkeypatch.setattr(console, "width", width)  # tables must not fold what we look for
    get_settings.cache_clear()
    return root


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Google limited, in Berlin time."""
    yield _operator_shell(
        tmp_path,
        monkeypatch,
        "timezone: Europe/Berlin\n"
        "deliverability:\n"
        "  domains:\n"
        "    google: {domains: [gmail.com, googlemail.com], per_second: 20, connections: 4}\n"
        "  backoff: {first: 10m}\n",
    )
    get_settings.cache_clear()


@pytest.fixture
def engine(workspace: Path) -> Iterator[Engine]:
    db = create_db_engine(get_settings().database_url)
    migrate(db)
    yield db
    db.dispose()


def _drip(*args: str, answer: str | None = None) -> Result:
    return CliRunner().invoke(app, ["deliverability", *args], input=answer)


def _row(out: str, group: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith(f"│ {group} "))
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def _defer_google(engine: Engine) -> float:
    with engine.begin() as conn:
        until = pacing.record_deferral(
            conn, "google", GOOGLE, now=time.time(), reply="421 4.7.0 Try again later"
        )
        pacing.take_slot(conn, "google", 4, holder="worker-1", now=time.time(), lease=300)
    return until


def test_status_on_an_empty_database_shows_every_group_at_full_pace(engine: Engine) -> None:
    shown = _drip("status")
    assert shown.exit_code == 0, shown.output
    assert "times in Europe/Berlin" in shown.output
    assert _row(shown.output, "google") == [
        "google",
        "gmail.com, googlemail.com",
        "20/s, 4 at once",
        "20/s (100%)",
        "no",
        "0",
        "",
        "0 of 4",
    ]
    assert _row(shown.output, "default")[1:5] == [
        "every other domain",
        "no limit",
        "no limit",
        "no",
    ]
    groups = [line.split("│")[1].strip() for line in shown.output.splitlines() if "│" in line]
    assert groups == ["google", "microsoft", "yahoo", "default"]


def test_status_shows_a_backoff_and_reset_ends_it_after_asking(engine: Engine) -> None:
    _defer_google(engine)
    shown = _drip("status")
    assert shown.exit_code == 0, shown.output
    google = _row(shown.output, "google")
    assert google[3] == "10/s (50%)"
    assert google[4].startswith("until ") and google[4].endswith(" (in 10 min)")
    assert google[5:] == ["1", "421 4.7.0 Try again later", "1 of 4"]

    declined = _drip("reset", "google", answer="n\n")
    assert declined.exit_code == 1
    assert "google: backing off until" in declined.output
    assert "End google's backoff and mail it at its full pace now? [y/N]" in declined.output
    assert _row(_drip("status").output, "google")[4] != "no"  # nothing changed

    confirmed = _drip("reset", "google", answer="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "google: backoff ended, mailed at its full pace (20/s, 4 at once)" in confirmed.output
    after = _row(_drip("status").output, "google")
    assert after[3:6] == ["20/s (100%)", "no", "1"]  # the deferral stays in the count

    again = _drip("reset", "google", "--yes")
    assert again.exit_code == 0
    assert "google is not backing off and is at its full pace: nothing to reset" in again.output


def test_reset_with_yes_asks_nothing_and_an_unknown_group_is_refused(engine: Engine) -> None:
    _defer_google(engine)
    done = _drip("reset", "google", "--yes")
    assert done.exit_code == 0, done.output
    assert "[y/N]" not in done.output and "backoff ended" in done.output

    unknown = _drip("reset", "gmail.com", "--yes")
    assert unknown.exit_code == 1
    assert "no group 'gmail.com'; the groups are google, microsoft, yahoo, default" in (
        unknown.output
    )


def _table(text: str) -> list[list[str]]:
    """A rich table's rows as cells, each cell's wrapped lines joined (so the width it was
    printed at does not matter), the times of day in it made ``TIME``."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith(("│", "┃")):
            continue
        cells = [c.strip() for c in line.strip()[1:-1].replace("┃", "│").split("│")]
        if cells[0] or not rows:
            rows.append(cells)
        else:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return [[re.sub(r"\d\d:\d\d:\d\d", "TIME", c) for c in row] for row in rows]


def _docs_block(starts: str) -> str:
    page = (DOCS / "concepts" / "deliverability.md").read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```$", page, re.M | re.S)
    [found] = [b for b in blocks if b.startswith(starts)]
    return str(found)


def test_the_docs_show_what_status_and_reset_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deliverability page's example workspace, with Gmail just deferred while another
    send is under way: the page's status table and reset, but for the times of day."""
    example = _docs_block(
        "deliverability:\n  domains:\n    google: {domains: [gmail.com, googlemail.com], per_second"
    )
    root = _operator_shell(tmp_path, monkeypatch, example, width=200)
    try:
        engine = create_db_engine(get_settings().database_url)
        migrate(engine)
        pacer = DomainPacer(
            engine, load_workspace(root).config.deliverability, zone=ZoneInfo("UTC")
        )
        now = time.time()
        with engine.begin() as conn:
            pacing.record_deferral(
                conn,
                "google",
                pacer.limits("google"),
                now=now,
                reply="421 4.7.0 Try again later, closing connection",
            )
            pacing.take_slot(conn, "google", 4, holder="worker-1", now=now, lease=300)
        engine.dispose()

        status = _docs_block("$ drip deliverability status\n").splitlines()
        shown = _drip("status")
        assert shown.exit_code == 0, shown.output
        assert shown.output.splitlines()[0] == status[1]
        assert _table(shown.output) == _table("\n".join(status))

        reset = _docs_block("$ drip deliverability reset google\n").splitlines()
        done = _drip("reset", "google", answer="y\n")
        assert done.exit_code == 0, done.output
        assert [re.sub(r"\d\d:\d\d:\d\d", "TIME", line) for line in done.output.splitlines()] == [
            re.sub(r"\d\d:\d\d:\d\d", "TIME", line) for line in reset[1:]
        ]
    finally:
        get_settings.cache_clear()
