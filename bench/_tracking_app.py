"""The app ``bench.tracking`` serves: drip's real API from ``create_app``, configured from the
``DRIP_*`` environment the benchmark sets (a temporary home, the default SQLite set-up)."""

from __future__ import annotations

from webhooks.main import create_app

app = create_app()
