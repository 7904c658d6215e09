"""``bench.tracking`` runs end to end (issue 7): a short run of each side, in a subprocess as a
person would run it. Only that it works is checked, never a speed: the last line is the JSON
summary with a ratio, and every drip round stored at least as many hits as wrk counted
responses, all consumed by the end.

Without ``wrk`` or ``nginx`` the test skips, saying how to get them; under ``bash .ci/run``
(``DRIP_REQUIRE_SYSTEM_TOOLS=1``) it fails instead, since CI installs them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import missing_system_tool

ROOT = Path(__file__).resolve().parents[2]
MISSING = "wrk or nginx is not installed: `apt-get install wrk nginx-light`"


def test_the_tracking_benchmark_runs_and_loses_no_hit() -> None:
    if shutil.which("wrk") is None or not (
        shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
    ):
        missing_system_tool(MISSING)
    out = subprocess.run(
        [sys.executable, "-m", "bench.tracking", "--rounds", "3", "--duration", "1",
         "--connections", "8", "--server", "uvicorn"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["bench"] == "tracking" and summary["ratio"] > 0
    assert summary["rounds_short"] == 0 and summary["drip_rows"] >= summary["drip_responses"] > 0
    # the mix's unknown tokens are counted, not stored
    mix_answered = summary["mix_rows"] + summary["mix_unknown_counted"]
    assert mix_answered >= summary["mix_responses"] > summary["mix_rows"] > 0
    assert summary["consumed_after_shutdown"] == summary["rows_after_shutdown"]
    assert summary["non_2xx"] == 0
