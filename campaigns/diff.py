"""What a deploy would change, step by step, for ``drip campaigns diff`` and ``deploy``.

Compares two compiled plans field by field, so the output speaks the campaign's language
(``step tips: subject: 'A' -> 'B'``) rather than showing a YAML text diff that also lists moved
comments and reformatting that change nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Literal

from campaigns.durations import format_duration
from campaigns.plan import Plan, PlanStep

__all__ = ["Change", "diff_plans"]

_IGNORED = frozenset({"version", "steps", "templates"})


@dataclass(frozen=True)
class Change:
    kind: Literal["added", "removed", "changed"]
    where: str  # "campaign", or "step <id>"
    detail: str

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}[self.kind]
        return f"{sign} {self.where}: {self.detail}" if self.detail else f"{sign} {self.where}"


def _short(key: str, value: Any) -> str:
    if key.endswith("seconds") and isinstance(value, int | float) and value > 0:
        return format_duration(timedelta(seconds=value))
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fields(old: dict[str, Any], new: dict[str, Any], where: str) -> list[Change]:
    return [
        Change(
            "changed", where, f"{key}: {_short(key, old.get(key))} -> {_short(key, new.get(key))}"
        )
        for key in sorted(set(old) | set(new))
        if key not in _IGNORED and old.get(key) != new.get(key)
    ]


def _summary(step: PlanStep) -> str:
    if step.kind == "send_email":
        return f"send_email {step.template}"
    return step.kind


def diff_plans(old: Plan | None, new: Plan | None) -> list[Change]:
    """Changes from ``old`` (deployed) to ``new`` (in the workspace), in a stable order: the
    campaign's own settings first, then steps in the new plan's order, then removed steps."""
    if old is None and new is None:
        return []
    if old is None:
        assert new is not None
        return [Change("added", "campaign", f"{new.campaign_id} ({len(new.steps)} steps)")]
    if new is None:
        return [Change("removed", "campaign", old.campaign_id)]
    changes = _fields(asdict(old), asdict(new), "campaign")
    for step_id, step in new.steps.items():
        before = old.steps.get(step_id)
        if before is None:
            changes.append(Change("added", f"step {step_id}", _summary(step)))
        elif before != step:
            changes += _fields(asdict(before), asdict(step), f"step {step_id}")
    changes += [
        Change("removed", f"step {step_id}", _summary(step))
        for step_id, step in old.steps.items()
        if step_id not in new.steps
    ]
    return changes + _template_changes(old.templates, new.templates)


def _template_changes(
    old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]
) -> list[Change]:
    """Which template files differ, by name: a changed partial shows in every campaign whose
    emails include it, since their journeys will render it."""
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before is None:
            assert after is not None
            changes.append(Change("added", f"template {name}", ", ".join(sorted(after))))
        elif after is None:
            changes.append(Change("removed", f"template {name}", ""))
        elif before != after:
            files = sorted(f for f in set(before) | set(after) if before.get(f) != after.get(f))
            changes.append(Change("changed", f"template {name}", ", ".join(files)))
    return changes
