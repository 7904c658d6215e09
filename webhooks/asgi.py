"""The API as an import target, for servers that build the app in their own worker processes.

``drip api`` (granian) points each worker process at ``webhooks.asgi:create_app`` as a factory;
the same target works by hand::

    granian --interface asgi --factory webhooks.asgi:create_app

With ``--workers N`` by hand, export ``PROMETHEUS_MULTIPROC_DIR`` as an empty directory (emptied
before every start) so that ``/metrics`` adds up the workers' counts (``webhooks.metrics``);
``drip api --workers N`` makes one itself.

Everything comes from the ``DRIP_*`` environment (``drip api`` writes its command-line overrides
there before the workers start). Each process gets its own app, and so its own database pool
and tracking hit writer, which the ASGI lifespan flushes when that process stops.
"""

from __future__ import annotations

from fastapi import FastAPI

from drip.settings import Settings
from webhooks.main import create_app as _create_app

__all__ = ["create_app"]


def create_app() -> FastAPI:
    """The app from the environment's settings, with JSON logs when they are configured.

    Logging is set here too because a worker process started by ``spawn`` (macOS, Windows)
    does not inherit the parent's handlers; under ``fork`` (Linux) this only repeats it."""
    settings = Settings()
    log_format = settings.log_format or ("json" if settings.env == "production" else "text")
    if log_format == "json":
        from webhooks.logs import configure_json_logging

        configure_json_logging()
    return _create_app(settings)
