"""``bench.send`` runs end to end (issue 6, emails): a few messages per path through drip's pool
and Postfix's ``smtp-source`` into ``smtp-sink``, in a subprocess as a person would run it.

Only that it works is checked, never a speed (benchmarks never gate CI): the last line is the
JSON summary with a ratio, the sink counted every message of every timed round, and every
connection drip's pool opened was closed by the end of its round.

Without Postfix's test programs the test skips, saying how to get them; under ``bash .ci/run``
(``DRIP_REQUIRE_SYSTEM_TOOLS=1``) it fails instead, since CI installs them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.send import find_tool
from tests.support import missing_system_tool

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 40
ROUNDS = 3
CONCURRENCY = 3
PER_CONNECTION = 5
MISSING = (
    "smtp-sink and smtp-source are not installed: `apt-get install postfix` (Debian `postfix`)"
)


def require_postfix_tools() -> None:
    if find_tool("smtp-sink") is None or find_tool("smtp-source") is None:
        missing_system_tool(MISSING)


def test_send_bench_runs_and_the_sink_gets_every_message() -> None:
    require_postfix_tools()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.send",
            "--messages",
            str(MESSAGES),
            "--rounds",
            str(ROUNDS),
            "--concurrency",
            str(CONCURRENCY),
            "--per-connection",
            str(PER_CONNECTION),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])

    assert summary["ratio"] > 0
    assert len(summary["ratio_rounds"]) == ROUNDS
    assert summary["messages"] == MESSAGES
    assert summary["message_bytes"] > 5_000  # a real rendered email, not a stub
    # the sink counted every message each path sent in its timed rounds
    assert summary["sink_messages"] == {
        "drip": MESSAGES * ROUNDS,
        "smtp-source": MESSAGES * ROUNDS,
        "smtp-source -d": MESSAGES * ROUNDS,
    }
    # the pool reused connections up to its budget, and closed all it opened
    opened = summary["connections_opened"]
    assert len(opened) == ROUNDS
    assert all(n >= math.ceil(MESSAGES / PER_CONNECTION) for n in opened)
    assert summary["sink_sessions"]["drip"] == opened
    assert any("ratio drip/smtp-source" in line for line in lines)
