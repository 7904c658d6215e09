"""Structured logs: one JSON object per line, for a log pipeline to index without parsing text.

``DRIP_LOG_FORMAT=json`` (the default with ``DRIP_ENV=production``) makes ``drip api`` and
``drip worker`` write every record as one line on stderr::

    {"time": "2026-11-03T10:15:02.417Z", "level": "INFO", "logger": "drip.access",
     "message": "POST /forms/newsletter 201", "request_id": "7f3c...", "route": "/forms/{form_id}",
     "status": 201, "duration_ms": 12.4}

``request_id`` is the one of the HTTP request being served (the API's middleware sets it from
``X-Request-ID`` or makes one), so every line a request causes, not only its access line, can be
found by it. Fields passed as ``extra={...}`` appear as keys. Only the standard library is used:
a formatter is twenty lines, and the worker needs it as much as the API.

It lives in ``webhooks`` because the API's middleware sets the request id and the web layer may
not import ``drip``; ``drip`` (the CLI, for the worker too) imports it from here, and
``drip.logs`` re-exports it for older imports.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["JsonFormatter", "LogFormat", "configure_json_logging", "request_id_var"]

LogFormat = Literal["text", "json"]

#: The id of the request being served in this task (``None`` outside requests).
request_id_var: ContextVar[str | None] = ContextVar("drip_request_id", default=None)

# attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's copy of the message with ANSI colours
)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: time (UTC, ms), level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that is not JSON (a Path, a datetime) never loses the line
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Route every logger, uvicorn's included, to one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
