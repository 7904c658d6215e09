"""Any number of processes may migrate at once: ``drip db upgrade``, ``drip worker`` and
``drip api`` all migrate on start, and a deployment starts them together.

Real processes on a fresh database, since the race is between processes: before the migration
lock, four upgrades started together on PostgreSQL left three dead on a UniqueViolation."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from contacts.db import alembic_config, create_db_engine
from tests.postgres import postgres_url
from tests.support import venv_binary

PROCESSES = 8


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database nothing has migrated yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'drip.db'}"
    return postgres_url(request)


def test_upgrades_started_together_all_succeed(fresh_url: str, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(tmp_path / ".drip"),
        "DRIP_DATABASE_URL": fresh_url,
        "COLUMNS": "300",
    }
    upgrades = [
        subprocess.Popen(
            [venv_binary("drip"), "db", "upgrade"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in upgrades]
    failed = [out for p, out in zip(upgrades, outputs, strict=True) if p.returncode != 0]
    assert not failed, f"{len(failed)} of {PROCESSES} upgrades failed; the first:\n{failed[0]}"
    assert all("database at head" in out for out in outputs), outputs
    engine = create_db_engine(fresh_url)
    try:
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert [v for (v,) in versions] == [head]
