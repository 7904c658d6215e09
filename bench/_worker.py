"""``drip worker``, with a stack sampler when ``DRIP_BENCH_PROFILE`` names a report file.

``bench.broadcast --profile`` runs the worker as ``python -m bench._worker`` so the report says
where the worker's own time went; without the variable this is exactly ``drip worker``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench._sampler import Sampler
from drip.cli import app

if __name__ == "__main__":
    if report := os.environ.get("DRIP_BENCH_PROFILE"):
        Sampler.install(Path(report))
    app(["worker"], prog_name="drip")
