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
    {"send_email", "wait", "wait_for", "branch", "split", "goto", "update_contact", "exit"}
)
_SUPPORTED_TRIGGERS = frozenset({"form", "event"})


def unsupported(plan: Plan) -> list[str]:
    """Every feature ``plan`` uses that the journey workflow cannot run yet; empty if none."""
    found: list[str] = []
    if plan.trigger_kind and plan.trigger_kind not in _SUPPORTED_TRIGGERS:
        found.append(f"trigger {plan.trigger_kind}")
    if plan.trigger_where:
        found.append("trigger filter (where)")
    for name, used in (
        ("audience", bool(plan.audience)),
        (f"reentry {plan.reentry}", plan.reentry != "never"),
        ("goal", bool(plan.goal_event or plan.goal_when)),
        ("exit_when", bool(plan.exit_when)),
        ("send_window", bool(plan.window_days)),
        ("frequency_cap", bool(plan.cap_max)),
    ):
        if used:
            found.append(name)
    for step in plan.steps.values():
        if step.kind not in SUPPORTED_STEP_KINDS:
            found.append(f"step {step.id}: {step.kind}")
        elif step.kind == "wait" and not step.seconds:
            found.append(f"step {step.id}: wait until a time, date or field")
        elif step.kind == "wait_for" and step.where:
            found.append(f"step {step.id}: wait_for filter (where)")
        elif step.kind == "split" and step.winner_metric:
            found.append(f"step {step.id}: split auto_winner")
        elif step.kind == "send_email" and (step.from_addr or step.reply_to):
            found.append(f"step {step.id}: per-step from/reply_to")
    return found
