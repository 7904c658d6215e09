"""What this engine can run of the campaign language, which the [campaigns] issue grew first.

The language (``campaigns``) describes branches, splits, goals, send windows and more; the journey
workflow learns them step by step. Until it knows a feature, a campaign that uses it is refused at
enrolment with the reason logged, and shown by ``drip campaigns validate``, rather than started
and then run wrongly (a send window ignored, a branch taken as an exit).
"""

from __future__ import annotations

from campaigns.plan import Plan

__all__ = ["SUPPORTED_STEP_KINDS", "unsupported"]

SUPPORTED_STEP_KINDS = frozenset(
    {
        "send_email",
        "wait",
        "wait_for",
        "branch",
        "split",
        "goto",
        "update_contact",
        "notify_sales",
        "webhook",
        "exit",
    }
)
_SUPPORTED_TRIGGERS = frozenset({"form", "event", "tag_added", "field_changed", "manual"})


def unsupported(plan: Plan) -> list[str]:
    """Every feature ``plan`` uses that the journey workflow cannot run yet; empty if none."""
    found: list[str] = []
    if plan.trigger_kind and plan.trigger_kind not in _SUPPORTED_TRIGGERS:
        found.append(f"trigger {plan.trigger_kind}")
    for step in plan.steps.values():
        if step.kind not in SUPPORTED_STEP_KINDS:
            found.append(f"step {step.id}: {step.kind}")
    return found
