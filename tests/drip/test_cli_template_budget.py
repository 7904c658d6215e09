"""``drip emails lint``, ``drip emails preview`` and ``drip campaigns validate`` on templates that
go over the render budget: each reports an error with the file and line, instead of hanging
(or computing gigabytes) and instead of saying the campaign is fine. The real executable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import copy_workspace, venv_binary

#: a campaign sending the three hostile templates
HOSTILE = """\
id: hostile
name: Hostile
trigger: {form: newsletter}
steps:
  - id: first
    send_email: {template: spin, subject: Spin}
  - id: second
    send_email: {template: bomb, subject: Bomb}
  - id: third
    send_email: {template: wide, subject: "Hi\\n{{ 'a'|center(10**9) }}"}
"""
SPIN = """\
<mj-section><mj-column><mj-text>
  Hello {{ contact.first_name | default('friend') }}
  {% for a in 'x'|center(100000) %}{% for b in 'x'|center(100000) %}{% endfor %}{% endfor %}
</mj-text></mj-column></mj-section>
"""
#: a constant expression: a plain Jinja environment computes it while *compiling*
BOMB = """\
<mj-section><mj-column><mj-text>
  Hello
</mj-text></mj-column></mj-section>
<mj-section><mj-column><mj-text>{{ '%0999999999d' % 1 }}</mj-text></mj-column></mj-section>
"""
WIDE = """\
<mj-section><mj-column><mj-text>Hello</mj-text></mj-column></mj-section>
"""


@pytest.fixture
def hostile_workspace(tmp_path: Path) -> Path:
    root = copy_workspace(tmp_path)
    for name, source in (("spin", SPIN), ("bomb", BOMB), ("wide", WIDE)):
        (root / "emails" / f"{name}.mjml").write_text(source)
    (root / "campaigns" / "hostile.yaml").write_text(HOSTILE)
    return root


def _drip(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(root / ".drip"),
        "DRIP_WORKSPACE": str(root),
        "DRIP_TEMPLATE_RENDER_SECONDS": "0.5",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [venv_binary("drip"), *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,  # a hang is a failure, not a stuck suite
    )


def _expected(root: Path) -> list[str]:
    emails, campaign = root / "emails", root / "campaigns" / "hostile.yaml"
    return [
        f"{emails / 'spin.mjml'}:3: error over-budget: render took over 0.5s and was stopped "
        "(DRIP_TEMPLATE_RENDER_SECONDS)",
        f"{emails / 'bomb.mjml'}:4: error over-budget: %-format width or precision 999999999 is "
        "too large: about 999,999,999 characters, over the budget of 2,000,000 "
        "(DRIP_TEMPLATE_OUTPUT_CHARS)",
        f"{campaign}:10: error over-budget: center(1000000000) is too large: about "
        "1,000,000,000 characters, over the budget of 2,000,000 (DRIP_TEMPLATE_OUTPUT_CHARS)",
    ]


def test_lint_reports_templates_over_budget(hostile_workspace: Path) -> None:
    run = _drip(hostile_workspace, "emails", "lint", "spin", "bomb", "wide")
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    for expected in _expected(hostile_workspace):
        assert expected in lines, run.stdout


def test_validate_reports_templates_over_budget(hostile_workspace: Path) -> None:
    run = _drip(hostile_workspace, "campaigns", "validate")
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    for expected in _expected(hostile_workspace):
        assert expected in lines, run.stderr
    assert f"ok {hostile_workspace}/campaigns/welcome.yaml" in run.stdout


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("spin", "spin: render took over 0.5s and was stopped (DRIP_TEMPLATE_RENDER_SECONDS)"),
        ("bomb", "bomb: over budget: %-format width or precision 999999999 is too large"),
    ],
)
def test_preview_reports_a_template_over_budget(
    hostile_workspace: Path, template: str, reason: str
) -> None:
    run = _drip(hostile_workspace, "emails", "preview", template, "--subject", "Hi")
    assert run.returncode == 1
    assert reason in " ".join(run.stderr.split()), run.stderr
