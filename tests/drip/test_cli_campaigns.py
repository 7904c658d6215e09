"""``drip campaigns`` as a user runs it: validate, diff, deploy, list, graph, schema."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from campaigns.graph import to_svg
from campaigns.workspace import load_workspace
from tests.support import EXAMPLES, ROOT, copy_workspace, venv_binary


def _drip(
    tmp_path: Path, *args: str, workspace: Path = EXAMPLES
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(tmp_path / ".drip"),
        "DRIP_WORKSPACE": str(workspace),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [venv_binary("drip"), "campaigns", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_exits_1_listing_every_problem(tmp_path: Path) -> None:
    ok = _drip(tmp_path, "validate")
    assert ok.returncode == 0, ok.stderr
    assert "ok " in ok.stdout and "welcome.yaml" in ok.stdout
    root = copy_workspace(
        tmp_path,
        {
            "timeout: 2d": "timeout: 2 dayz",
            "      subject: Three trail": "      subjct: Three trail",
        },
    )
    bad = _drip(tmp_path, "validate", str(root))
    assert bad.returncode == 1
    assert "welcome.yaml:19:16: steps.wait_for_open.wait_for.timeout: '2 dayz'" in bad.stderr
    assert "unknown key 'subjct' (did you mean 'subject'?)" in bad.stderr
    # a pre-commit hook passes changed files: each is checked within its workspace, once
    files = [str(root / "campaigns" / "welcome.yaml"), str(root / "emails" / "tips.mjml")]
    by_file = _drip(tmp_path, "validate", *files)
    assert by_file.returncode == 1 and by_file.stderr == bad.stderr


def test_diff_then_deploy_then_nothing_to_do(tmp_path: Path) -> None:
    before = _drip(tmp_path, "diff")
    assert before.returncode == 1 and "welcome: nothing ->" in before.stdout
    deployed = _drip(tmp_path, "deploy")
    assert deployed.returncode == 0 and "deployed" in deployed.stdout
    after = _drip(tmp_path, "diff")
    assert after.returncode == 0 and "unchanged" in after.stdout
    listed = _drip(tmp_path, "list")
    assert listed.returncode == 0 and "differs" not in listed.stdout


def test_diff_shows_an_edited_template_and_deploy_records_it(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    assert _drip(tmp_path, "deploy", workspace=root).returncode == 0
    partial = root / "emails" / "partials" / "shop-note.mjml"
    partial.write_text(partial.read_text().replace("Bristol", "Bath"))
    diff = _drip(tmp_path, "diff", workspace=root)
    assert diff.returncode == 1
    assert "~ template welcome-hiking: partials/shop-note.mjml" in diff.stdout
    assert "= welcome: " in diff.stdout  # its emails do not include the partial
    deployed = _drip(tmp_path, "deploy", workspace=root)
    assert "newsletter-onboarding: v" in deployed.stdout and "deployed" in deployed.stdout
    assert _drip(tmp_path, "diff", workspace=root).returncode == 0


def test_graph_prints_mermaid_and_writes_svg(tmp_path: Path) -> None:
    out = _drip(tmp_path, "graph", "welcome", "--svg", str(tmp_path / "w.svg"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("flowchart TD")
    assert 's_wait_for_open -->|"open"| s_tips' in out.stdout
    ET.fromstring((tmp_path / "w.svg").read_text())
    missing = _drip(tmp_path, "graph", "welcom")
    assert missing.returncode == 1 and "did you mean 'welcome'" in missing.stderr


def test_the_readme_picture_is_current() -> None:
    plan = load_workspace(EXAMPLES).plans["welcome"]
    assert (ROOT / "docs" / "welcome.svg").read_text() == to_svg(plan), (
        "run: .venv/bin/drip campaigns graph welcome --svg docs/welcome.svg"
    )


def test_schema_prints_json_schema(tmp_path: Path) -> None:
    out = _drip(tmp_path, "schema")
    assert (
        out.returncode == 0 and out.stdout == (ROOT / "schema" / "campaign.schema.json").read_text()
    )
    broadcast = _drip(tmp_path, "schema", "--broadcast")
    assert broadcast.returncode == 0
    assert broadcast.stdout == (ROOT / "schema" / "broadcast.schema.json").read_text()


def test_validate_covers_broadcasts(tmp_path: Path) -> None:
    ok = _drip(tmp_path, "validate")
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert any(
        "broadcasts/black-friday.yaml (broadcast, A/B test of 2 variants, version " in line
        for line in lines
    ), lines
    assert any("broadcasts/newsletter-december.yaml (broadcast, version " in line for line in lines)
    root = copy_workspace(tmp_path)
    path = root / "broadcasts" / "black-friday.yaml"
    path.write_text(path.read_text().replace("topic: deals", "topic: deels"))
    (root / "broadcasts" / "december.yaml").write_text(
        "id: december\nname: D\nemail: {template: tips, subject: 'Hi {{ contact.name'}\n"
    )
    bad = _drip(tmp_path, "validate", str(path))
    assert bad.returncode == 1
    assert "acme/broadcasts/black-friday.yaml:16:8: topic: topic 'deels' is not in " in bad.stderr
    # with the topic fixed, the subject that fails every send is found, at its line
    path.write_text(path.read_text().replace("topic: deels", "topic: deals"))
    bad = _drip(tmp_path, "validate", str(path))
    assert bad.returncode == 1
    assert f"{root}/broadcasts/december.yaml:3: error syntax" in bad.stderr
