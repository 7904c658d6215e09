"""The documentation site builds with --strict (a broken link, anchor or generated part fails),
and every whole workspace file it shows is one ``drip campaigns validate`` accepts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import typer
from ruamel.yaml import YAML

from campaigns.conditions import parse_condition
from drip.cli import app
from drip.settings import Settings
from tests.docs._blocks import marked_blocks
from tests.support import EXAMPLES, ROOT, venv_binary


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = subprocess.run(
        [venv_binary("mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stderr
    language = (tmp_path / "site" / "reference" / "language" / "index.html").read_text()
    assert 'id="campaign-waitfor"' in language and 'id="broadcast-abtest"' in language
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "drip broadcasts send" in cli
    api = (tmp_path / "site" / "reference" / "http-api" / "index.html").read_text()
    assert "POST /forms/{form_id}" in api


def test_the_yaml_the_docs_show_validates(tmp_path: Path) -> None:
    blocks = [b for b in marked_blocks("validate") if b.name != "conditions"]
    names = {b.name for b in blocks}
    assert {"campaigns/welcome.yaml", "broadcasts/black-friday.yaml"} <= names
    workspace = tmp_path / "acme"
    shutil.copytree(EXAMPLES, workspace)
    yaml = YAML(typ="safe")
    # whole files first, then the parts shown of them
    for block in sorted(blocks, key=lambda b: b.name.endswith("+")):
        # each shown file replaces the example of that name, so a reference to another
        # example file (a template, a form, a topic) resolves as it does for a reader; a part
        # of a file (PATH+) replaces the top-level keys it shows
        if block.name.endswith("+"):
            path = workspace / block.name[:-1]
            merged = {**yaml.load(path.read_text()), **yaml.load(block.body)}
            with path.open("w") as out:
                yaml.dump(merged, out)
        else:
            (workspace / block.name).write_text(block.body)
    checked = subprocess.run(
        [venv_binary("drip"), "campaigns", "validate", str(workspace)],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    shown = "\n".join(b.where for b in blocks)
    assert checked.returncode == 0, f"{checked.stdout}\n{checked.stderr}\nblocks:\n{shown}"
    for block in blocks:
        if block.name.startswith(("campaigns/", "broadcasts/")):
            assert f"ok {workspace / block.name.rstrip('+')}" in checked.stdout, checked.stdout


def test_the_conditions_the_docs_show_parse() -> None:
    blocks = [b for b in marked_blocks("validate") if b.name == "conditions"]
    assert blocks
    for block in blocks:
        for line in YAML(typ="safe").load_all(block.body.replace("\nwhen:", "\n---\nwhen:")):
            parse_condition(line["when"])


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    documented = set(re.findall(r"`(DRIP_[A-Z0-9_]+)`", page))
    settings = {f"DRIP_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "add them to docs/reference/configuration.md"
    assert documented - settings == set(), "no such settings in drip/settings.py"


def test_every_command_in_the_cli_overview_exists() -> None:
    page = (ROOT / "docs" / "reference" / "cli.md").read_text().split("## Every command")[0]
    rows = re.findall(r"^\| `drip ([a-z][a-z |\\-]*)", page, re.M)
    assert len(rows) > 20
    for row in rows:
        command: Any = typer.main.get_command(app)
        for word in row.replace("\\|", "|").split():
            if not hasattr(command, "commands") or word.startswith(("-", "[")):
                break
            names = word.split("|")  # pause|resume|cancel: each of them
            for name in names:
                assert name in command.commands, f"drip {row}: no command {name!r}"
            command = command.commands[names[0]]


def _lines(text: str) -> list[str]:
    """A block's lines as the docs may show them: indented, or as a ``$`` command."""
    return [line.strip().removeprefix("$ ") for line in text.strip().splitlines()]


def test_the_readme_fits_on_two_screens_and_shows_only_checked_things() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    # CI runs exactly the README's test command
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    assert re.search(r"^make test\s", readme, re.M)
    # every block the README shows is one of the docs' (where the tests check it)
    pages = ["\n".join(_lines(p.read_text())) for p in sorted((ROOT / "docs").rglob("*.md"))]
    for block in re.findall(r"^ *```\w*\n(.*?)^ *```$", readme, re.M | re.S):
        shown = "\n".join(_lines(block))
        assert any(shown in page for page in pages), f"not in docs/:\n{shown}"
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", readme):
        assert (ROOT / target).exists(), target
