"""``drip worker`` with ``DRIP_TEMPORAL_NAMESPACE`` naming a namespace the real Temporal dev
server lacks: one line naming it and the command that creates it, not a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.support import EXAMPLES, venv_binary


async def test_a_missing_namespace_is_one_line_with_the_command(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = dev_env.client.service_client.config.target_host
    missing = f"marketing-{uuid.uuid4().hex[:8]}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(tmp_path / ".drip"),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_TEMPORAL_ADDRESS": address,
        "DRIP_TEMPORAL_NAMESPACE": missing,
        "COLUMNS": "300",
    }
    run = await asyncio.to_thread(
        subprocess.run,
        [venv_binary("drip"), "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr + run.stdout
    named = [line for line in run.stderr.splitlines() if missing in line]
    assert named == [
        f"the Temporal namespace '{missing}' does not exist on {address}; create it once with "
        f"`temporal operator namespace create --namespace {missing} --address {address}`, or "
        "set DRIP_TEMPORAL_NAMESPACE to one that exists"
    ], run.stderr
