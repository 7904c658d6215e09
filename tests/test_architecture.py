"""Imports flow one way (shared/README.md, Architecture): drip.settings <- contacts <- emails <-
workflows <- webhooks <- drip (cli, dev), and campaigns imports none of ours but drip.settings.

The contracts are import-linter's, in pyproject.toml (``[tool.importlinter]``); ``lint-imports``
reads the code's imports without running it, direct and indirect ones alike. The second test runs
the same contracts over a small tree of the same packages with one forbidden import each, so a
contract that stopped checking anything (a renamed layer, a too-wide ``ignore_imports``) fails
here instead of passing silently.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_imports_flow_one_way() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _contracts_toml() -> str:
    """pyproject.toml's ``[tool.importlinter]`` as TOML again (its values are strings, booleans
    and lists of strings, which JSON writes the way TOML reads them)."""
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "importlinter"
    ]
    lines = ["[tool.importlinter]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config.items() if key != "contracts"]
    for contract in config["contracts"]:
        lines += ["", "[[tool.importlinter.contracts]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items()]
    return "\n".join(lines) + "\n"


#: the small tree: every allowed direction once, settings imported from every package
_ALLOWED = {
    "drip/__init__.py": "from drip.settings import __version__\n",
    "drip/settings.py": "__version__ = '0'\n",
    "drip/cli.py": "import webhooks.app\nimport workflows.worker\nimport campaigns.model\n",
    "campaigns/__init__.py": "",
    "campaigns/model.py": "from drip.settings import __version__\n",
    "contacts/__init__.py": "",
    "contacts/db.py": "import drip.settings\nimport campaigns.model\n",
    "emails/__init__.py": "",
    "emails/render.py": "import contacts.db\nfrom drip import settings\n",
    "workflows/__init__.py": "",
    "workflows/worker.py": "import emails.render\nimport contacts.db\n",
    "webhooks/__init__.py": "",
    "webhooks/app.py": "import workflows.worker\nimport emails.render\nimport drip.settings\n",
}


@pytest.mark.parametrize(
    ("module", "line"),
    [
        pytest.param(None, None, id="allowed"),
        ("webhooks/mailbox.py", "from drip import cli\n"),
        ("workflows/version.py", "from drip import __version__\n"),
        ("emails/logs.py", "import drip.cli\n"),
        ("contacts/notify.py", "import emails.render\n"),
        ("emails/hook.py", "from webhooks import app\n"),
        ("workflows/page.py", "import webhooks.app\n"),
        ("campaigns/audience.py", "import contacts.db\n"),
        ("drip/settings.py", "import contacts.db\n"),
    ],
)
def test_the_contracts_catch_a_forbidden_import(
    tmp_path: Path, module: str | None, line: str | None
) -> None:
    (tmp_path / "pyproject.toml").write_text(_contracts_toml())
    for name, text in _ALLOWED.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    if module is not None and line is not None:
        path = tmp_path / module
        path.write_text((path.read_text() if path.exists() else "") + line)
    result = _lint_imports(tmp_path)
    if module is None:
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "BROKEN" in result.stdout
        assert module.removesuffix(".py").replace("/", ".") in result.stdout
