"""The compiled plan: the small, serialisable form of a campaign that a journey workflow walks.

It is plain dataclasses of JSON-friendly values so Temporal can carry it in the workflow input:
a journey keeps the exact plan it started with, whatever is deployed later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Plan", "PlanStep", "plan_from_dict", "plan_hash"]


@dataclass(frozen=True)
class PlanStep:
    """One step with its outgoing pointers; only the fields of its ``kind`` are set."""

    id: str
    kind: str
    next: str | None = None
    template: str = ""
    subject: str = ""
    preheader: str = ""
    track: bool = True
    seconds: float = 0.0
    wait_event: str = ""
    wait_ref: str = ""
    on_event: str = ""
    on_timeout: str = ""
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    set_fields: dict[str, Any] = field(default_factory=dict)
    unset_fields: list[str] = field(default_factory=list)

    def edges(self) -> list[tuple[str, str]]:
        """``(label, target step id)`` of every way out of this step, in a stable order: what
        graphs draw and reachability checks follow. The label is empty for plain ``next``."""
        if self.kind == "wait_for":
            return [(f"{self.wait_event}", self.on_event), ("timeout", self.on_timeout)]
        return [("", self.next)] if self.next else []


@dataclass(frozen=True)
class Plan:
    campaign_id: str
    name: str
    version: str
    entry: str
    steps: dict[str, PlanStep]
    trigger_form: str = ""
    trigger_event: str = ""

    def step(self, step_id: str) -> PlanStep:
        return self.steps[step_id]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_hash(content: dict[str, Any]) -> str:
    """A content hash over canonical JSON: the same campaign always gets the same version."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "v" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def plan_from_dict(data: dict[str, Any]) -> Plan:
    steps = {k: PlanStep(**v) for k, v in data["steps"].items()}
    return Plan(**{**data, "steps": steps})
