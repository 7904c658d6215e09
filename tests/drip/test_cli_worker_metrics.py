"""``drip worker`` with a metrics port that is taken: one red line naming the setting, before
it connects to anything, not a traceback or a worker that runs unwatched."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import EXAMPLES, free_port, venv_binary


@pytest.mark.parametrize(
    "setting", ["DRIP_WORKER_METRICS_PORT", "DRIP_WORKER_TEMPORAL_METRICS_PORT"]
)
def test_a_taken_metrics_port_is_named(tmp_path: Path, setting: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [venv_binary("drip"), "worker"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
                "DRIP_HOME": str(tmp_path / ".drip"),
                "DRIP_WORKSPACE": str(EXAMPLES),
                "DRIP_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens
                setting: str(port),
                "COLUMNS": "300",
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} ({setting}" in run.stderr
    assert "cannot reach Temporal" not in run.stderr  # it stopped before connecting
    assert "Traceback" not in run.stderr + run.stdout
