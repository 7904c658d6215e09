"""``bench.broadcast`` runs end to end (issue 19, broadcasts): a tiny audience through the whole
stack the benchmark starts (Temporal dev server, ``drip worker`` in its own process, SQLite,
``smtp-sink`` counting by recipient), in a subprocess as a person would run it.

Only that it works is checked, never a speed (benchmarks never gate CI): the last line is the
JSON summary, every subscribed contact got the broadcast exactly once at the relay and nobody
else got it, and every path produced its rounds.

Without Postfix's test programs the test skips, saying how to get them; under ``bash .ci/run``
(``DRIP_REQUIRE_SYSTEM_TOOLS=1``) it fails instead, since CI installs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench._population import people
from tests.bench.test_send_bench import require_postfix_tools

ROOT = Path(__file__).resolve().parents[2]
CONTACTS = 60
ROUNDS = 3


def test_broadcast_bench_reaches_every_subscribed_contact_once() -> None:
    require_postfix_tools()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.broadcast",
            "--quick",
            "--contacts",
            str(CONTACTS),
            "--journeys",
            "4",
            "--baseline-messages",
            "30",
            "--rounds",
            str(ROUNDS),
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

    subscribed = sum(p.eligible for p in people(CONTACTS))
    assert 0 < subscribed < CONTACTS  # the list has unsubscribed and bounced contacts
    assert summary["recipients"] == subscribed
    assert summary["sent"] == subscribed
    assert summary["lost"] == summary["duplicated"] == summary["unexpected"] == 0
    assert summary["journeys_lost"] == summary["journeys_duplicated"] == 0
    assert sum(summary["suppressed"].values()) == CONTACTS - subscribed
    for key in ("emails_per_s", "ratio", "vs_journeys", "worker_rss_mb"):
        assert summary[key] > 0, key
    for key in ("ceiling_rounds", "smtp_source_rounds", "journeys_rounds", "ratio_rounds"):
        assert len(summary[key]) == ROUNDS, key
    assert summary["message_bytes"] > 5_000  # a real rendered email, not a stub
    assert any(line.startswith("ratio per ceiling round") for line in lines)
