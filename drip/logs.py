"""Structured logs moved to ``webhooks.logs`` (the API's middleware sets the request id there,
and the web layer may not import ``drip``); this name stays so existing imports keep working."""

from webhooks.logs import JsonFormatter, LogFormat, configure_json_logging, request_id_var

__all__ = ["JsonFormatter", "LogFormat", "configure_json_logging", "request_id_var"]
