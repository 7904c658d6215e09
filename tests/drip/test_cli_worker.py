"""``drip worker`` in the production shape: clear words for the two usual first-day problems."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import EXAMPLES, free_port, venv_binary


def test_unreachable_temporal_and_undeployed_campaigns_are_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(tmp_path / ".drip"),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "COLUMNS": "300",
    }
    run = subprocess.run(
        [venv_binary("drip"), "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert f"cannot reach Temporal at 127.0.0.1:{port}" in run.stderr
    assert "campaign welcome: the workspace has" in run.stderr
    assert "run `drip campaigns deploy`" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_a_half_configured_dkim_is_one_red_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [venv_binary("drip"), "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DRIP_HOME": str(tmp_path), "DRIP_DKIM_DOMAIN": "acme.example"},
    )
    assert result.returncode == 1
    assert "DRIP_DKIM_SELECTOR" in result.stderr and "Traceback" not in result.stderr
