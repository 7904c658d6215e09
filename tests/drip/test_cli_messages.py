"""``drip messages`` without a worker: options and ``--since`` are checked (exit 2 and why),
an empty list says so, and ids that cannot be resent are refused before anything is asked.
The resends themselves, through a real worker, are in tests/e2e/test_interrupted_resend.py and
tests/workflows/test_resend.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from contacts import outbox, repository
from contacts.db import create_db_engine, migrate, session_scope
from contacts.models import Message, MessageState
from drip import cli, cli_messages
from drip.cli_messages import parse_since
from drip.settings import get_settings
from tests.support import copy_workspace

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def drip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DRIP_HOME", str(tmp_path / ".drip"))
    monkeypatch.setenv("DRIP_WORKSPACE", str(copy_workspace(tmp_path)))
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    monkeypatch.setattr(cli_messages.console, "width", 200)
    monkeypatch.setattr(cli_messages.err, "width", 200)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli.app, ["messages", *args])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("12h", NOW - timedelta(hours=12)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T09:00+01:00", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_back_or_a_moment(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.usefixtures("drip")
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["resend"], "give the ids of the emails to resend, or --all-interrupted"),
        (["resend", "m1", "--all-interrupted"], "give message ids or --all-interrupted, not both"),
        (["resend", "m1", "--campaign", "x"], "--campaign goes with --all-interrupted"),
        (["interrupted", "--since", "yesterday"], "write a duration back from now"),
    ],
)
def test_a_wrong_option_does_nothing_and_says_why(args: list[str], says: str) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())


@pytest.mark.usefixtures("drip")
def test_nothing_interrupted_is_said_plainly_and_unresendable_ids_are_refused() -> None:
    listed = _run("interrupted")
    assert (listed.exit_code, listed.output) == (
        0,
        "No interrupted emails: nothing awaits a decision.\n",
    )
    engine = create_db_engine(get_settings().database_url)
    migrate(engine)
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email="kim@example.com", consent_source="test")
        assert contact.id is not None
        row = outbox.reserve_message(
            s,
            Message(
                id="m-sent",
                key="k",
                contact_id=contact.id,
                campaign_id="welcome",
                step_id="welcome",
                workflow_id="w",
                template="welcome",
                open_token="o",
            ),
        )
        outbox.finish_send(s, row.id, MessageState.sent)
    engine.dispose()
    refused = _run("resend", "m-sent", "nope", "--yes")
    assert refused.exit_code == 1
    out = " ".join(refused.output.split())
    assert "m-sent: not resent: it is sent, not interrupted" in out
    assert "nope: not resent: no message nope" in out
    assert "Resend" not in out  # nothing was asked, nothing queued
    everything = _run("resend", "--all-interrupted", "--yes")
    assert (everything.exit_code, everything.output) == (0, "No interrupted emails to resend.\n")
