"""JSON Schema of campaign and broadcast files, for editors: with the YAML language server, a
file that starts with ``# yaml-language-server: $schema=<path or URL>`` gets completion, hover
help and red squiggles as it is typed. The loader stays the authority: conditions, references
between steps, templates, topics and loops are checked only by ``drip campaigns validate``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from campaigns.broadcasts import Broadcast
from campaigns.schema import Campaign

__all__ = [
    "BROADCAST_SCHEMA_PATH",
    "SCHEMA_PATH",
    "broadcast_json_schema",
    "broadcast_json_schema_text",
    "campaign_json_schema",
    "campaign_json_schema_text",
]

#: Where the repository keeps a copy (checked by the test suite to be current).
SCHEMA_PATH = "schema/campaign.schema.json"
BROADCAST_SCHEMA_PATH = "schema/broadcast.schema.json"


def _schema(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _text(schema: dict[str, Any]) -> str:
    """Stable text (sorted keys, final newline), so the committed copy diffs cleanly."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def campaign_json_schema() -> dict[str, Any]:
    return _schema(Campaign, "drip campaign")


def campaign_json_schema_text() -> str:
    return _text(campaign_json_schema())


def broadcast_json_schema() -> dict[str, Any]:
    return _schema(Broadcast, "drip broadcast")


def broadcast_json_schema_text() -> str:
    return _text(broadcast_json_schema())
