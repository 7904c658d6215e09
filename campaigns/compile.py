"""Campaign model -> Plan: resolve implicit ``next`` pointers and stamp a content-hash version."""

from __future__ import annotations

from dataclasses import asdict, replace

from campaigns.plan import Plan, PlanStep, plan_hash
from campaigns.schema import Campaign, Step

__all__ = ["compile_campaign"]


def _step(step: Step, following: str | None) -> PlanStep:
    nxt = step.next if step.next is not None else following
    if step.send_email is not None:
        s = step.send_email
        return PlanStep(
            id=step.id,
            kind="send_email",
            next=nxt,
            template=s.template,
            subject=s.subject,
            preheader=s.preheader,
            track=s.track,
        )
    if step.wait is not None:
        return PlanStep(
            id=step.id, kind="wait", next=nxt, seconds=step.wait.duration.total_seconds()
        )
    if step.wait_for is not None:
        w = step.wait_for
        event, ref = next(
            (k, getattr(w, k)) for k in ("open", "click", "event") if getattr(w, k) is not None
        )
        return PlanStep(
            id=step.id,
            kind="wait_for",
            seconds=w.timeout.total_seconds(),
            wait_event=event,
            wait_ref=ref,
            on_event=w.on_event,
            on_timeout=w.on_timeout,
        )
    if step.update_contact is not None:
        u = step.update_contact
        return PlanStep(
            id=step.id,
            kind="update_contact",
            next=nxt,
            add_tags=list(u.add_tags),
            remove_tags=list(u.remove_tags),
            set_fields=dict(u.set_fields),
            unset_fields=list(u.unset_fields),
        )
    return PlanStep(id=step.id, kind="exit")


def compile_campaign(campaign: Campaign) -> Plan:
    """Compile a validated campaign; deterministic, so the same YAML gives the same version."""
    ids = [s.id for s in campaign.steps]
    steps = {
        s.id: _step(s, ids[i + 1] if i + 1 < len(ids) else None)
        for i, s in enumerate(campaign.steps)
    }
    plan = Plan(
        campaign_id=campaign.id,
        name=campaign.name,
        version="",
        entry=ids[0],
        steps=steps,
        trigger_form=campaign.trigger.form or "",
        trigger_event=campaign.trigger.event or "",
    )
    content = asdict(plan)
    content.pop("version")
    return replace(plan, version=plan_hash(content))
