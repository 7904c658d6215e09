"""What this engine can run: a guard against version skew.

Today the journey workflow runs the whole campaign language. A plan stored by a newer drip (a
step kind or trigger this worker does not know, during a rolling upgrade) is refused at
enrolment with the reason logged, and shown by ``drip campaigns validate``, rather than started
and then run wrongly.
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
#: ``segment_entered`` is entered by the segment sweep (``workflows.segments``)
_SUPPORTED_TRIGGERS = frozenset(
    {"form", "event", "tag_added", "field_changed", "segment_entered", "manual"}
)


def unsupported(plan: Plan) -> list[str]:
    """Every feature ``plan`` uses that the journey workflow cannot run yet; empty if none."""
    found: list[str] = []
    if plan.trigger_kind and plan.trigger_kind not in _SUPPORTED_TRIGGERS:
        found.append(f"trigger {plan.trigger_kind}")
    for step in plan.steps.values():
        if step.kind not in SUPPORTED_STEP_KINDS:
            found.append(f"step {step.id}: {step.kind}")
    return found
