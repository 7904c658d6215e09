"""``drip suppressions add|remove|list|import|export`` as an operator runs them: the real ``drip``
executable against a real SQLite file, then the list checked where the sends read it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy.engine import Engine

from contacts import suppressions
from contacts.db import session_scope
from drip.settings import Settings
from tests.support import run_drip


def _drip(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_drip(settings, "suppressions", *args)


def test_add_list_export_remove_and_import_back(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    added = _drip(settings, "add", "Ann@Example.com", "@competitor.com", "--reason", "asked")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        "suppressed address ann@example.com: asked",
        "suppressed domain competitor.com: asked",
    ]
    again = _drip(settings, "add", "ann@example.com", "--reason", "legal hold")
    assert again.stdout.strip() == "updated address ann@example.com: legal hold"
    listed = _drip(settings, "list", "--kind", "domain")
    assert "competitor.com" in listed.stdout and "ann@example.com" not in listed.stdout
    assert "cli" in listed.stdout

    out = tmp_path / "list.csv"
    exported = _drip(settings, "export", str(out))
    assert exported.returncode == 0 and exported.stderr.strip() == f"exported 2 entries to {out}"
    assert _drip(settings, "export").stdout == out.read_text()
    removed = _drip(settings, "remove", "ann@example.com", "competitor.com")
    assert removed.stdout.splitlines() == ["removed ann@example.com", "removed competitor.com"]
    assert _drip(settings, "list").stdout.strip() == "the suppression list is empty"

    imported = _drip(settings, "import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "added 2, updated 0, bad rows 0"
    with session_scope(engine) as s:
        assert [(r.value, r.reason) for r in suppressions.list_entries(s)] == [
            ("ann@example.com", "legal hold"),
            ("competitor.com", "asked"),
        ]
        assert suppressions.reason_for(s, "x@competitor.com", roles=False) == ("suppressed: asked")


def test_bad_entries_and_bad_rows_are_named_and_the_rest_is_done(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    bad = _drip(settings, "add", "not an address", "ok@example.com")
    assert bad.returncode == 1
    assert bad.stdout.strip() == f"suppressed address ok@example.com: {suppressions.DEFAULT_REASON}"
    assert "refused: not an address is neither an address nor a domain" in bad.stderr
    missing = _drip(settings, "remove", "nobody@example.com")
    assert missing.returncode == 1
    assert "nobody@example.com is not on the suppression list" in missing.stderr

    rows = tmp_path / "rows.csv"
    rows.write_text("email_or_domain,reason\nbo@example.com,moved\nbroken,\n")
    partial = _drip(settings, "import", str(rows))
    assert partial.returncode == 1
    assert partial.stdout.strip() == "added 1, updated 0, bad rows 1"
    assert f"{rows}:3: broken is neither an address nor a domain" in partial.stderr
    junk = tmp_path / "junk.csv"
    junk.write_text("name,age\nann,3\n")
    refused = _drip(settings, "import", str(junk))
    assert refused.returncode == 1 and "nothing imported" in refused.stderr
    with session_scope(engine) as s:
        assert [r.value for r in suppressions.list_entries(s)] == [
            "ok@example.com",
            "bo@example.com",
        ]
