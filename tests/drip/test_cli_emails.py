"""``drip emails preview|send-test|lint`` as a marketer runs them: the real executable, the demo
workspace, a real SMTP server for the test send."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from sqlalchemy.engine import Engine

from contacts import repository
from contacts.db import session_scope
from drip.settings import Settings
from tests.support import EXAMPLES, SmtpServer, copy_workspace, venv_binary


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


def test_lint_passes_the_demo_workspace(settings: Settings) -> None:
    run = _drip(settings, "lint")
    assert run.returncode == 0, run.stdout + run.stderr
    count = len(list((EXAMPLES / "emails").glob("*.mjml")))
    assert run.stdout.strip() == f"{count} templates: no problems"


def test_lint_lists_findings_and_exits_1_on_errors(settings: Settings, tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    (root / "emails" / "hero.mjml").write_text(
        "<mj-section>\n  <mj-column>\n"
        '    <mj-image src="https://cdn.example/hero.png" />\n'
        '    <mj-button href="http://acme.example/shop">Shop</mj-button>\n'
        "  </mj-column>\n</mj-section>\n"
    )
    run = _drip(settings, "lint", "--workspace", str(root))
    assert run.returncode == 1, run.stdout + run.stderr
    hero = root / "emails" / "hero.mjml"
    assert run.stdout.splitlines() == [
        f"{hero}: warning unused-template: no campaign sends it",
        f"{hero}:3: error missing-alt: <mj-image> has no alt text, so clients that block images "
        'and screen readers show nothing useful: describe the image, or write alt="" if it is '
        "decorative",
        f"{hero}:4: warning insecure-link: link is not https: http://acme.example/shop",
        f"{len(list((root / 'emails').glob('*.mjml')))} templates: 1 error, 2 warnings",
    ]

    as_json = _drip(settings, "lint", "--workspace", str(root), "hero", "--format", "json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert (report["templates"], report["errors"], report["warnings"]) == (1, 1, 2)
    missing_alt = report["findings"][1]
    assert missing_alt.pop("message").startswith("<mj-image> has no alt text")
    assert missing_alt == {"path": str(hero), "line": 3, "severity": "error", "rule": "missing-alt"}


def test_lint_named_templates_and_strict_warnings(settings: Settings, tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    (root / "emails" / "draft.mjml").write_text(
        "<mj-section><mj-column><mj-text>Soon</mj-text></mj-column></mj-section>\n"
    )
    draft = str(root / "emails" / "draft.mjml")
    only_warnings = _drip(settings, "lint", "-w", str(root), draft, "welcome")
    assert only_warnings.returncode == 0, only_warnings.stdout + only_warnings.stderr
    assert only_warnings.stdout.splitlines()[-1] == "2 templates: 1 warning"
    strict = _drip(settings, "lint", "-w", str(root), "draft", "--strict")
    assert strict.returncode == 1
    unknown = _drip(settings, "lint", "-w", str(root), "welcom")
    assert unknown.returncode == 2 and "no template welcom" in unknown.stderr
    nowhere = _drip(settings, "lint", "-w", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 2 and "no such workspace folder" in nowhere.stderr
