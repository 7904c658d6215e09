"""``drip scores show|rebuild|refresh`` through the ``drip`` command group (typer's CliRunner),
on a copy of the demo workspace and a real SQLite database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from campaigns.sales import load_sales_plan
from contacts import repository
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import Contact, utcnow
from drip import cli_journeys, cli_scores
from drip.cli import app
from drip.settings import get_settings
from tests.support import copy_workspace
from workflows.scoring import apply_scores

DAY = timedelta(days=1)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the demo workspace and a fresh database, named in ``DRIP_*`` as an operator's
    shell would; the settings are read again for each test."""
    root = copy_workspace(tmp_path, sales=True)
    monkeypatch.setenv("DRIP_HOME", str(tmp_path / ".drip"))
    monkeypatch.setenv("DRIP_WORKSPACE", str(root))
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    for console in (cli_scores.console, cli_scores.err, cli_journeys.err):
        monkeypatch.setattr(console, "width", 200)  # tables must not fold what we look for
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


@pytest.fixture
def engine(workspace: Path) -> Iterator[Engine]:
    db = create_db_engine(get_settings().database_url)
    migrate(db)
    yield db
    db.dispose()


def _drip(*args: str) -> Result:
    return CliRunner().invoke(app, ["scores", *args])


def _scored_contact(engine: Engine, root: Path, email: str, at: datetime, **fields: Any) -> int:
    """A contact who saw the pricing page and sent the catalogue form at ``at``, scored then."""
    plan = load_sales_plan(root / "sales.yaml")
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email, fields)
        assert contact.id is not None
        for type_, name, props in (("page", "", {"path": "/pricing"}), ("form", "catalogue", {})):
            repository.record_event(
                s,
                contact_id=contact.id,
                type=type_,
                name=name,
                properties=props,
                dedupe_key=uuid.uuid4().hex,
                occurred_at=at,
            )
        apply_scores(s, contact.id, plan, now=at)
        return contact.id


def _score(engine: Engine, contact_id: int) -> int:
    with session_scope(engine) as s:
        return repository.get_contact(s, contact_id).score


def test_show_prints_the_score_fit_and_reasons(workspace: Path, engine: Engine) -> None:
    now = utcnow()
    ann = _scored_contact(engine, workspace, "ann@example.com", now, title="Head of Music")
    shown = _drip("show", "ann@example.com")
    assert shown.exit_code == 0, shown.output
    assert f"ann@example.com (contact {ann}): score 40, stage subscriber" in shown.stdout
    assert "fit: decision-maker +15" in shown.stdout
    assert "group-enquiry: form catalogue" in shown.stdout
    assert "pricing: page /pricing" in shown.stdout
    assert shown.stdout.index("group-enquiry") < shown.stdout.index("pricing:")  # newest first
    assert _drip("show", str(ann), "--limit", "1").stdout.count("page /pricing") == 0

    missing = _drip("show", "nobody@example.com")
    assert missing.exit_code == 1 and "no contact nobody@example.com" in missing.stderr


def test_rebuild_check_finds_a_wrong_score_and_rebuild_repairs_it(
    workspace: Path, engine: Engine
) -> None:
    now = utcnow()
    ann = _scored_contact(engine, workspace, "ann@example.com", now - 5 * DAY)
    bob = _scored_contact(engine, workspace, "bob@example.com", now - 3 * DAY)
    check = _drip("rebuild", "--check")
    assert check.exit_code == 0, check.output
    assert "2 contacts, 4 events replayed; 0 contacts differed" in check.stdout
    assert "every stored score equals the replay" in check.stdout

    with session_scope(engine) as s:
        contact = s.get(Contact, bob)
        assert contact is not None
        contact.score = 99
        s.add(contact)
    check = _drip("rebuild", "--check")
    assert check.exit_code == 1
    assert "1 contact differed" in check.stdout
    assert f"{bob} bob@example.com" in check.stdout and "score 99 stored" in check.stdout
    assert "the stored scores of 1 contact differ from the replay" in check.stderr
    assert _score(engine, bob) == 99  # --check changes nothing

    only_ann = _drip("rebuild", "--contact", str(ann))
    assert only_ann.exit_code == 0 and "1 contact, 2 events replayed" in only_ann.stdout
    assert _score(engine, bob) == 99
    fixed = _drip("rebuild", "--contact", "bob@example.com")
    assert fixed.exit_code == 0, fixed.output
    assert "1 contact differed" in fixed.stdout and "now come from the replay" in fixed.stdout
    assert _score(engine, bob) == 23  # stored as of now: 25 three days ago, decayed
    assert _drip("rebuild", "--check").exit_code == 0


def test_refresh_applies_the_decay_now(workspace: Path, engine: Engine) -> None:
    month_ago = utcnow() - 30 * DAY - timedelta(hours=1)
    cat = _scored_contact(engine, workspace, "cat@example.com", month_ago)
    assert _score(engine, cat) == 25
    refreshed = _drip("refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert "1 score changed" in refreshed.stdout
    assert _score(engine, cat) == 12  # 12.49...: worth half after 30 days
    assert "0 scores changed" in _drip("refresh").stdout


def test_without_rules_the_commands_say_so(workspace: Path, engine: Engine) -> None:
    (workspace / "sales.yaml").unlink()
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, "dan@example.com")
        assert contact.id is not None
        repository.update_contact(s, contact.id, add_score=5, score_key="k")
    for args in (("show", "dan@example.com"), ("rebuild",), ("rebuild", "--check"), ("refresh",)):
        run = _drip(*args)
        assert run.exit_code == 0, run.output
        assert "no scoring rules" in run.stdout
    assert "score 5" in _drip("show", "dan@example.com").stdout


def test_a_broken_sales_file_is_one_red_message(workspace: Path, engine: Engine) -> None:
    path = workspace / "sales.yaml"
    path.write_text(path.read_text().replace("half_life: 30d", "half_life: soon"))
    run = _drip("rebuild", "--check")
    assert run.exit_code == 1
    assert "has problems" in run.stderr and "sales.yaml" in run.stderr and not run.stdout
