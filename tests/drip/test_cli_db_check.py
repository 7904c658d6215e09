"""``drip db check [--repair]`` and the CLI's own door (``drip contacts update --set``), as an
operator runs them: the real ``drip`` executable, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess

from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts.db import session_scope
from contacts.models import Contact
from drip.settings import Settings
from tests.contacts.test_cleaning import _broken, _others_still_found, _poisoned_database
from tests.support import EXAMPLES, venv_binary


def _drip(settings: Settings, engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(settings.home),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [venv_binary("drip"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_reports_repair_fixes_and_then_all_is_well(
    settings: Settings, any_engine: Engine
) -> None:
    ann, eve = _poisoned_database(any_engine)

    run = _drip(settings, any_engine, "db", "check")
    assert run.returncode == 1, run.stdout + run.stderr
    assert (
        f"contacts row {eve}, fields.name: contains a bidirectional control (U+202E), which "
        "can disguise text" in run.stdout
    )
    assert "events row 1, name: contains a control character (U+001B)" in run.stdout
    assert "run drip db check --repair" in run.stderr
    assert _broken(any_engine, ann)  # the check changed nothing

    run = _drip(settings, any_engine, "db", "check", "--repair")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(repaired)" in run.stdout and "problem(s) repaired" in run.stdout
    _others_still_found(any_engine, ann)

    run = _drip(settings, any_engine, "db", "check")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no problems in stored values" in run.stdout


def test_contacts_update_refuses_what_no_door_stores(
    settings: Settings, any_engine: Engine
) -> None:
    with session_scope(any_engine) as s:
        s.add(Contact(email="ann@example.com", fields={"city": "Bristol"}))
    for given, said in (
        ("score=1e999", "score is not a finite number (inf)"),
        ('name="\\u202eevil"', "name contains a bidirectional control (U+202E)"),
    ):
        run = _drip(settings, any_engine, "contacts", "update", "ann@example.com", "--set", given)
        assert run.returncode == 2, run.stdout + run.stderr
        assert said in run.stderr
    run = _drip(settings, any_engine, "contacts", "update", "ann@example.com", "--add-tag", "a\tb")
    assert run.returncode == 2 and "control character (U+0009)" in run.stderr
    with session_scope(any_engine) as s:
        ann = s.exec(select(Contact)).one()
    assert ann.fields == {"city": "Bristol"} and ann.tags == []
