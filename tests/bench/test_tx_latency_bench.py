"""``bench.tx_latency`` runs end to end (issue 21, transactional API): a few requests a second
through the API, a worker on a Temporal dev server and an SMTP relay, in a subprocess as a
person would run it.

Only that it works is checked, never a speed (benchmarks never gate CI): every message reached
the relay (the benchmark fails otherwise) and the last line is the JSON summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tx_latency_bench_measures_every_message() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.tx_latency",
            "--rate",
            "5",
            "--seconds",
            "2",
            "--rounds",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert any("round 1: 10 messages" in line for line in lines), done.stdout
    summary = json.loads(lines[-1])
    assert summary["bench"] == "tx_latency"
    assert 0 < summary["answer_p50_ms"] <= summary["answer_p99_ms"]
    assert 0 < summary["smtp_p50_ms"] <= summary["smtp_p99_ms"]
