"""``drip users password|enable`` through the ``drip`` command group (typer's CliRunner), on a
real SQLite database named by ``DRIP_DATABASE_URL`` as an operator's shell would name it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from contacts import users
from contacts.db import create_db_engine, migrate, session_scope
from drip import cli_users
from drip.cli import app
from drip.settings import get_settings
from tests.support import EXAMPLES

OLD = "correct horse battery staple"
NEW = "purple elephant violin sunrise"


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("DRIP_HOME", str(tmp_path / ".drip"))
    monkeypatch.setenv("DRIP_WORKSPACE", str(EXAMPLES))
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    for console in (cli_users.console, cli_users.err):
        monkeypatch.setattr(console, "width", 200)  # messages must not fold what we look for
    get_settings.cache_clear()
    db = create_db_engine(get_settings().database_url)
    migrate(db)
    yield db
    db.dispose()
    get_settings.cache_clear()


def _drip(*args: str, stdin: str = "") -> Result:
    return CliRunner().invoke(app, ["users", *args], input=stdin)


def _mia(engine: Engine, sessions: int = 0) -> list[str]:
    """mia@example.com, signed in from ``sessions`` browsers: their tokens."""
    with session_scope(engine) as s:
        user = users.create_user(s, "mia@example.com", OLD, "marketer")
        return [users.start_session(s, user) for _ in range(sessions)]


def _password_is(engine: Engine, password: str) -> bool:
    with session_scope(engine) as s:
        return users.authenticate(s, "mia@example.com", password) is not None


def test_password_prompts_twice_hidden_and_signs_out_everywhere(engine: Engine) -> None:
    tokens = _mia(engine, sessions=2)
    r = _drip("password", "Mia@Example.com", stdin=f"{NEW}\n{NEW}\n")
    assert r.exit_code == 0, r.output
    assert "New password:" in r.output and "Repeat for confirmation:" in r.output
    assert NEW not in r.output  # hidden input is not echoed
    assert "changed the password of mia@example.com" in r.stdout
    assert _password_is(engine, NEW) and not _password_is(engine, OLD)
    with session_scope(engine) as s:
        assert [users.load_session(s, t) for t in tokens] == [None, None]


def test_password_prompt_asks_again_when_the_two_differ(engine: Engine) -> None:
    _mia(engine)
    r = _drip("password", "mia@example.com", stdin=f"{NEW}\ntypo typo typo\n{NEW}\n{NEW}\n")
    assert r.exit_code == 0, r.output
    assert "do not match" in r.output
    assert _password_is(engine, NEW)


def test_password_stdin_reads_one_line(engine: Engine) -> None:
    _mia(engine)
    r = _drip("password", "mia@example.com", "--password-stdin", stdin=f"{NEW}\r\nignored\n")
    assert r.exit_code == 0, r.output
    assert "Password" not in r.output  # no prompt for scripts
    assert _password_is(engine, NEW)


@pytest.mark.parametrize(("typed", "says"), [("short", "at least 10"), ("", "at least 10")])
def test_a_password_against_the_rules_fails_and_changes_nothing(
    engine: Engine, typed: str, says: str
) -> None:
    (token,) = _mia(engine, sessions=1)
    r = _drip("password", "mia@example.com", "--password-stdin", stdin=typed + "\n")
    assert r.exit_code == 1 and says in r.stderr
    assert _password_is(engine, OLD)
    with session_scope(engine) as s:
        assert users.load_session(s, token) is not None


def test_password_of_an_unknown_user_fails_before_the_prompt(engine: Engine) -> None:
    r = _drip("password", "nobody@example.com", stdin=f"{NEW}\n{NEW}\n")
    assert r.exit_code == 1
    assert "no user nobody@example.com" in r.stderr and "Password" not in r.output


def test_disable_then_enable(engine: Engine) -> None:
    _mia(engine)
    assert _drip("disable", "mia@example.com").exit_code == 0
    assert not _password_is(engine, OLD)
    r = _drip("enable", "MIA@example.com")
    assert r.exit_code == 0, r.output
    assert "enabled dashboard user mia@example.com" in r.stdout
    assert _password_is(engine, OLD)
    missing = _drip("enable", "nobody@example.com")
    assert missing.exit_code == 1 and "no user nobody@example.com" in missing.stderr


def test_help_lists_the_new_commands(engine: Engine) -> None:
    r = _drip("--help")
    assert r.exit_code == 0 and "password" in r.stdout and "enable" in r.stdout
