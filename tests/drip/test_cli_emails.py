"""``drip emails preview|send-test`` as a marketer runs them: the real executable, the demo
workspace, a real SMTP server for the test send."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlalchemy.engine import Engine

from contacts import repository
from contacts.db import session_scope
from drip.settings import Settings
from tests.support import EXAMPLES, SmtpServer, venv_binary


def _drip(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(settings.home),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_DATABASE_URL": settings.database_url,
        "DRIP_SMTP_HOST": settings.smtp_host,
        "DRIP_SMTP_PORT": str(settings.smtp_port),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [venv_binary("drip"), "emails", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_preview_writes_html_and_text_for_a_stored_contact(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    with session_scope(engine) as s:
        repository.upsert_contact(s, "bea@example.com", {"first_name": "Bea"})
    run = _drip(
        settings, "preview", "welcome", "--contact", "bea@example.com", "--out", str(tmp_path)
    )
    assert run.returncode == 0, run.stderr
    assert "subject: Welcome to Acme Outdoor, Bea" in run.stdout
    html = (tmp_path / "welcome.html").read_text()
    text = (tmp_path / "welcome.txt").read_text()
    assert "Welcome to Acme Outdoor, Bea" in html and "Bristol BS1 4XX" in html
    assert "Bristol BS1 4XX" in text
    assert "/t/o/" not in html and "/t/c/" not in html  # previews track nothing


def test_preview_refuses_an_unknown_template_or_contact(settings: Settings) -> None:
    unknown = _drip(settings, "preview", "welcom")
    assert unknown.returncode == 1 and "no template welcom" in unknown.stderr
    nobody = _drip(settings, "preview", "welcome", "--contact", "nobody@example.com")
    assert nobody.returncode == 1 and "no contact nobody@example.com" in nobody.stderr


def test_send_test_delivers_one_marked_email(settings: Settings, smtp: SmtpServer) -> None:
    run = _drip(settings, "send-test", "tips", "--to", "Me <me@example.com>")
    assert run.returncode == 0, run.stderr
    [got] = smtp.mailbox.messages
    assert got.recipients == ["me@example.com"]
    assert got.subject == "[TEST] Three trail tips our guides swear by"
    assert got.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_send_test_with_the_relay_down_says_so(settings: Settings, smtp: SmtpServer) -> None:
    smtp.stop()
    run = _drip(settings, "send-test", "tips", "--to", "me@example.com")
    assert run.returncode == 1 and "not sent" in run.stderr
