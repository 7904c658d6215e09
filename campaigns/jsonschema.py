"""JSON Schema of campaign files, for editors: with the YAML language server, a campaign that
starts with ``# yaml-language-server: $schema=<path or URL>`` gets completion, hover help and
red squiggles as it is typed. The loader stays the authority: conditions, references between
steps and loops are checked only by ``drip campaigns validate``.
"""

from __future__ import annotations

import json
from typing import Any

from campaigns.schema import Campaign

__all__ = ["SCHEMA_PATH", "campaign_json_schema", "campaign_json_schema_text"]

#: Where the repository keeps a copy (checked by the test suite to be current).
SCHEMA_PATH = "schema/campaign.schema.json"


def campaign_json_schema() -> dict[str, Any]:
    schema = Campaign.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "drip campaign",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def campaign_json_schema_text() -> str:
    """Stable text (sorted keys, final newline), so the committed copy diffs cleanly."""
    return json.dumps(campaign_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
