"""Record journey histories for the replay suite: set DRIP_RECORD_HISTORIES=1 and run pytest.

Commit the files it writes to ``tests/workflows/histories/``; the replay test then fails on any
change to the journey workflow that would break a journey already running with that history.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).parent / "histories"


async def maybe_record(handle: WorkflowHandle[object, object], name: str) -> None:
    if not os.environ.get("DRIP_RECORD_HISTORIES"):
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    # Never overwrite: the old histories stand for journeys still running on the old code.
    path = HISTORIES / f"{name}.json"
    n = 1
    while path.exists():
        n += 1
        path = HISTORIES / f"{name}-{n}.json"
    path.write_text(history.to_json())
