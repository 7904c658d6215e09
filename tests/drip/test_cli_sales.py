"""``drip sales``: teams, reps, away and back, sync and assign, with typer's CliRunner against a
real SQLite database and a copy of the demo workspace (its sales.yaml)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from rich.console import Console
from sqlalchemy.engine import Engine
from sqlmodel import select
from typer.testing import CliRunner

from contacts import repository
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import SalesRep
from drip import cli, cli_sales
from drip.settings import get_settings
from tests.support import copy_workspace, venv_binary


@dataclass
class Drip:
    """``drip sales ...`` in this process, on this test's database and workspace."""

    engine: Engine
    workspace: Path
    env: dict[str, str]

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(cli_sales.app, list(args), catch_exceptions=False)

    def contact(self, email: str, **fields: object) -> int:
        with session_scope(self.engine) as s:
            contact, _ = repository.upsert_contact(s, email, fields)
            assert contact.id is not None
            return contact.id

    def rep(self, email: str) -> SalesRep:
        with session_scope(self.engine) as s:
            return s.exec(select(SalesRep).where(SalesRep.email == email)).one()


@pytest.fixture
def drip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Drip]:
    workspace = copy_workspace(tmp_path, sales=True)
    env = {
        "DRIP_HOME": str(tmp_path / ".drip"),
        "DRIP_WORKSPACE": str(workspace),
        "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'drip.db'}",
    }
    for name in os.environ:
        if name.startswith("DRIP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # wide enough that addresses and dates are never folded across lines
    monkeypatch.setattr(cli_sales, "console", Console(width=200))
    monkeypatch.setattr(cli_sales, "err", Console(width=200, stderr=True))
    get_settings.cache_clear()
    engine = create_db_engine(env["DRIP_DATABASE_URL"])
    migrate(engine)
    yield Drip(engine, workspace, env)
    engine.dispose()
    get_settings.cache_clear()


def test_sync_then_list_teams_and_reps(drip: Drip) -> None:
    assert "no sales reps" in drip("reps").stdout
    run = drip("sync")
    assert run.exit_code == 0, run.output
    assert "synced 2 teams and 3 reps from sales.yaml" in run.stdout
    assert "tom@acme.example" in run.stdout

    teams = drip("teams")
    assert teams.exit_code == 0, teams.output
    uk = next(line for line in teams.stdout.splitlines() if " uk " in line)
    assert "UK and Ireland" in uk and "Priya Shah" in uk and "2/2" in uk and "workspace" in uk

    with session_scope(drip.engine) as s:
        owned, _ = repository.upsert_contact(s, "a@example.com")
        owned.owner, owned.stage = "tom@acme.example", "mql"
        s.add(owned)
    reps = drip("reps", "--team", "uk")
    assert reps.exit_code == 0, reps.output
    lines = reps.stdout.splitlines()
    assert "open leads" in reps.stdout and "lena@acme.example" not in reps.stdout
    tom = next(line for line in lines if "tom@acme.example" in line).split()
    # email, team, weight, capacity, open leads, assigned (the table's borders are dropped)
    assert [cell for cell in tom if cell not in "│┃|"] == [
        "tom@acme.example",
        "uk",
        "2",
        "40",
        "1",
        "0",
    ]

    # a rep taken out of sales.yaml stays, inactive
    sales_yaml = drip.workspace / "sales.yaml"
    sales_yaml.write_text(
        sales_yaml.read_text().replace("      - {email: sara@acme.example, name: Sara Jones}\n", "")
    )
    assert drip("sync").exit_code == 0
    assert "inactive" in next(line for line in drip("reps").stdout.splitlines() if "sara@" in line)
    assert drip.rep("sara@acme.example").active is False


def test_away_and_back(drip: Drip) -> None:
    drip("sync")
    run = drip("away", "TOM@acme.example", "--until", "2099-12-01")
    assert run.exit_code == 0, run.output
    # the sales team's zone (Europe/London in the demo): midnight there, GMT in December
    assert "tom@acme.example is away until 2099-12-01 00:00 Europe/London" in run.stdout
    assert drip.rep("tom@acme.example").away_until == datetime(2099, 12, 1, tzinfo=UTC)
    assert "until 2099-12-01 00:00 UTC" in drip("reps").stdout
    drip("sync")  # sales.yaml does not own away dates
    assert drip.rep("tom@acme.example").away_until is not None

    run = drip("back", "tom@acme.example")
    assert run.exit_code == 0 and "tom@acme.example is back" in run.stdout
    assert drip.rep("tom@acme.example").away_until is None

    past = drip("away", "tom@acme.example", "--until", "2020-01-01")
    assert past.exit_code == 1 and "has passed" in past.stderr
    unknown = drip("away", "nobody@acme.example", "--until", "2099-01-01")
    assert unknown.exit_code == 1 and "no sales rep nobody@acme.example" in unknown.stderr
    bad = drip("away", "tom@acme.example", "--until", "next week")
    assert bad.exit_code == 2


def test_assign_prints_who_and_why(drip: Drip) -> None:
    drip("sync")
    ann = drip.contact("ann@example.com", country="GB")
    run = drip("assign", "ann@example.com")
    assert run.exit_code == 0, run.output
    assert f"contact {ann} ann@example.com: assigned to tom@acme.example (team uk)" in run.stdout
    assert 'territory uk (contact.country in ["GB", "IE"]); round-robin: tom@acme.example' in (
        run.stdout
    )
    again = drip("assign", str(ann))
    assert "kept by tom@acme.example" in again.stdout and "kept owner" in again.stdout
    moved = drip("assign", str(ann), "--reassign")
    assert "assigned to sara@acme.example" in moved.stdout
    assert drip.rep("tom@acme.example").assigned == 1
    assert drip.rep("sara@acme.example").assigned == 1

    drip("away", "lena@acme.example", "--until", "2099-01-01")
    bo = drip("assign", str(drip.contact("bo@example.com", country="SE")))
    assert "assigned to nobody (team europe)" in bo.stdout
    assert "lena@acme.example away until 2099-01-01" in bo.stdout

    missing = drip("assign", "nobody@example.com")
    assert missing.exit_code == 1 and "no contact nobody@example.com" in missing.stderr


def test_a_broken_sales_yaml_is_one_red_message(drip: Drip) -> None:
    (drip.workspace / "sales.yaml").write_text("teams:\n  - {id: uk, reps: [{email: nope}]}\n")
    run = drip("sync")
    assert run.exit_code == 1 and "sales.yaml has problems" in run.stderr
    assert "email" in run.stderr


def test_the_drip_executable_has_the_sales_commands(drip: Drip) -> None:
    assert "sales" in {group.name for group in cli.app.registered_groups}
    run = subprocess.run(
        [venv_binary("drip"), "sales", "sync"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}, **drip.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "synced 2 teams and 3 reps" in run.stdout
