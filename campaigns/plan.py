"""The compiled plan: the small, serialisable form of a campaign that a journey workflow walks.

It is plain dataclasses of JSON-friendly values so Temporal can carry it in the workflow input:
a journey keeps the exact plan it started with, whatever is deployed later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["Plan", "PlanCase", "PlanStep", "PlanVariant", "plan_from_dict", "plan_hash"]


@dataclass(frozen=True)
class PlanCase:
    """A branch case: if ``when`` (condition text) holds, go to ``goto``."""

    when: str
    goto: str


@dataclass(frozen=True)
class PlanVariant:
    name: str
    percent: int
    goto: str


@dataclass(frozen=True)
class PlanStep:
    """One step with its outgoing pointers; only the fields of its ``kind`` are set.

    Every field has a default, so a plan recorded before a field existed (in a running journey's
    history) still loads.
    """

    id: str
    kind: str
    next: str | None = None
    # send_email
    template: str = ""
    subject: str = ""
    preheader: str = ""
    from_addr: str = ""
    reply_to: str = ""
    track: bool = True
    # wait: seconds, or until a time of day / a date / a contact date field (+ offset)
    seconds: float = 0.0
    until_time: str = ""
    until_date: str = ""
    until_field: str = ""
    offset_seconds: float = 0.0
    # wait_for
    wait_event: str = ""
    wait_ref: str = ""
    where: str = ""
    on_event: str = ""
    on_timeout: str = ""
    # branch, split, goto
    cases: list[PlanCase] = field(default_factory=list)
    else_goto: str = ""
    variants: list[PlanVariant] = field(default_factory=list)
    winner_metric: str = ""
    winner_after_seconds: float = 0.0
    winner_min_sample: int = 0
    goto: str = ""
    max_times: int = 0
    # update_contact
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    set_fields: dict[str, Any] = field(default_factory=dict)
    unset_fields: list[str] = field(default_factory=list)
    add_score: int = 0
    # notify_sales, webhook, exit
    message: str = ""
    via: list[str] = field(default_factory=list)
    url: str = ""
    body: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def edges(self) -> list[tuple[str, str]]:
        """``(label, target step id)`` of every way out of this step, in a stable order: what
        graphs draw and reachability checks follow. The label is empty for plain ``next``."""
        if self.kind == "wait_for":
            return [(self.wait_event, self.on_event), ("timeout", self.on_timeout)]
        if self.kind == "branch":
            return [(c.when, c.goto) for c in self.cases] + [("else", self.else_goto)]
        if self.kind == "split":
            return [(f"{v.name} {v.percent}%", v.goto) for v in self.variants]
        if self.kind == "goto":
            out = [(f"up to {self.max_times}x", self.goto)]
            return out + ([(f"after {self.max_times}x", self.next)] if self.next else [])
        return [("", self.next)] if self.next else []


@dataclass(frozen=True)
class Plan:
    """A compiled campaign. Campaign-level rules (audience, goal, exits, window, cap) are kept
    as condition text and plain values; the engine interprets them."""

    campaign_id: str
    name: str
    version: str
    entry: str
    steps: dict[str, PlanStep]
    trigger_kind: str = ""
    trigger_value: str = ""
    trigger_where: str = ""
    audience: str = ""
    reentry: str = "never"
    reentry_seconds: float = 0.0
    goal_event: str = ""
    goal_where: str = ""
    goal_when: str = ""
    exit_when: list[str] = field(default_factory=list)
    window_days: list[str] = field(default_factory=list)
    window_start: str = ""
    window_end: str = ""
    cap_max: int = 0
    cap_seconds: float = 0.0
    #: UTM parameters for its links (source, medium, campaign, content, term, domains); empty:
    #: none. ``content`` empty means the sending step's id.
    utm: dict[str, Any] = field(default_factory=dict)
    #: the files each of its email templates is built from, as deployed: template name ->
    #: {path under emails/: SHA-256 of the text} (``campaigns.templates``). Hashes, not texts,
    #: so a journey's history stays small; the texts are in the deploy's database. Empty in a
    #: plan deployed before templates were recorded: its emails render from the workspace files.
    templates: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``kind: marketing`` (the default; also every plan compiled before the field existed):
    #: its emails go only to contacts with marketing consent, unless ``consent_required`` is
    #: False (``without_consent: allowed``); ``kind: transactional`` is False
    marketing: bool = True
    consent_required: bool = True

    def step(self, step_id: str) -> PlanStep:
        return self.steps[step_id]

    def utm_for(self, step_id: str) -> dict[str, Any]:
        """The UTM parameters of a send step's links (``content`` defaults to the step id);
        empty when the campaign asks for none."""
        if not self.utm:
            return {}
        return {**self.utm, "content": self.utm.get("content") or step_id}

    @property
    def trigger_form(self) -> str:
        return self.trigger_value if self.trigger_kind == "form" else ""

    @property
    def trigger_event(self) -> str:
        return self.trigger_value if self.trigger_kind == "event" else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_hash(content: dict[str, Any]) -> str:
    """A content hash over canonical JSON: the same campaign always gets the same version."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "v" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """A plan from its stored JSON. Keys this code does not know (a field since removed) are
    ignored, as Temporal's converter ignores them in a workflow input, so an old deployment row
    still loads; fields it lacks take their defaults."""
    steps = {}
    for key, raw in data["steps"].items():
        step = _known(PlanStep, raw)
        step["cases"] = [PlanCase(**_known(PlanCase, c)) for c in raw.get("cases", [])]
        step["variants"] = [PlanVariant(**_known(PlanVariant, v)) for v in raw.get("variants", [])]
        steps[key] = PlanStep(**step)
    return Plan(**{**_known(Plan, data), "steps": steps})


def _known(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
