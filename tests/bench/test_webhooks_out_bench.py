"""``bench.webhooks_out`` runs end to end (issue 21): a short run in a subprocess as a person
would run it. Only that it works is checked, never a speed: the last line is the JSON summary
with a ratio, and every event of every round (the warm-up too) was delivered, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_webhooks_benchmark_runs_and_delivers_every_event() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.webhooks_out", "--events", "30", "--contacts", "3",
         "--rounds", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["bench"] == "webhooks_out" and summary["ratio"] > 0
    assert summary["delivered"] == 4 * 30  # the warm-up and three rounds
    # the receiver also counted the httpx baseline's POSTs
    assert summary["received"] == 2 * 4 * 30
