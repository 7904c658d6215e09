"""Campaign model -> Plan: resolve implicit ``next`` pointers and stamp a content-hash version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

from campaigns.plan import Plan, PlanCase, PlanStep, PlanVariant, plan_hash
from campaigns.schema import Campaign, Reentry, Step

__all__ = ["compile_campaign"]


def _seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


def _utm(campaign: Campaign) -> dict[str, Any]:
    return campaign.utm.plan_values(campaign.id) if campaign.utm is not None else {}


def _step(step: Step, following: str | None) -> PlanStep:
    nxt = step.next if step.next is not None else following
    if step.send_email is not None:
        e = step.send_email
        return PlanStep(
            id=step.id,
            kind="send_email",
            next=nxt,
            template=e.template,
            subject=e.subject,
            preheader=e.preheader,
            from_addr=e.from_ or "",
            reply_to=e.reply_to or "",
            track=e.track,
        )
    if step.wait is not None:
        w = step.wait
        offset = _seconds(w.after) - _seconds(w.before)
        return PlanStep(
            id=step.id,
            kind="wait",
            next=nxt,
            seconds=_seconds(w.duration),
            until_time=w.until_time or "",
            until_date=w.until_date.isoformat() if w.until_date else "",
            until_field=w.until_field or "",
            offset_seconds=offset,
        )
    if step.wait_for is not None:
        f = step.wait_for
        event, ref = next(
            (k, getattr(f, k)) for k in ("open", "click", "event") if getattr(f, k) is not None
        )
        return PlanStep(
            id=step.id,
            kind="wait_for",
            seconds=f.timeout.total_seconds(),
            wait_event=event,
            wait_ref=ref,
            where=f.where or "",
            on_event=f.on_event,
            on_timeout=f.on_timeout,
        )
    if step.branch is not None:
        b = step.branch
        return PlanStep(
            id=step.id,
            kind="branch",
            cases=[PlanCase(when=c.when, goto=c.goto) for c in b.cases],
            else_goto=b.else_,
        )
    if step.split is not None:
        sp = step.split
        winner = sp.auto_winner
        return PlanStep(
            id=step.id,
            kind="split",
            variants=[
                PlanVariant(name=v.name, percent=v.percent, goto=v.goto) for v in sp.variants
            ],
            winner_metric=winner.metric if winner else "",
            winner_after_seconds=_seconds(winner.after if winner else None),
            winner_min_sample=winner.min_sample if winner else 0,
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
            add_score=u.add_score or 0,
        )
    if step.notify_sales is not None:
        n = step.notify_sales
        return PlanStep(
            id=step.id, kind="notify_sales", next=nxt, message=n.message, via=list(n.via)
        )
    if step.webhook is not None:
        h = step.webhook
        return PlanStep(id=step.id, kind="webhook", next=nxt, url=h.url, body=dict(h.body))
    if step.goto is not None:
        # after max_times jumps the journey carries on below the goto (or ends, if it is last)
        return PlanStep(
            id=step.id,
            kind="goto",
            next=following,
            goto=step.goto.step,
            max_times=step.goto.max_times,
        )
    assert step.exit is not None
    return PlanStep(id=step.id, kind="exit", reason=step.exit.reason)


def compile_campaign(
    campaign: Campaign, templates: Mapping[str, Mapping[str, str]] | None = None
) -> Plan:
    """Compile a validated campaign; deterministic, so the same YAML (and the same template
    files) gives the same version.

    ``templates`` maps template names to the hashes of the files they are built from
    (``campaigns.templates``); the plan keeps those of its own emails, so changing a template,
    its layout or a partial it includes changes the version of every campaign that sends it."""
    ids = [s.id for s in campaign.steps]
    steps = {
        s.id: _step(s, ids[i + 1] if i + 1 < len(ids) else None)
        for i, s in enumerate(campaign.steps)
    }
    trigger = campaign.trigger
    kind = trigger.kind
    value = getattr(trigger, kind)
    reentry = campaign.reentry
    goal = campaign.goal
    window = campaign.send_window
    cap = campaign.frequency_cap
    plan = Plan(
        campaign_id=campaign.id,
        name=campaign.name,
        version="",
        entry=ids[0],
        steps=steps,
        trigger_kind=kind,
        trigger_value="" if value is True else str(value),
        trigger_where=trigger.where or "",
        audience=campaign.audience or "",
        reentry="after" if isinstance(reentry, Reentry) else reentry,
        reentry_seconds=_seconds(reentry.after) if isinstance(reentry, Reentry) else 0.0,
        goal_event=goal.event or "" if goal else "",
        goal_where=goal.where or "" if goal else "",
        goal_when=goal.when or "" if goal else "",
        exit_when=list(campaign.exit_when),
        window_days=list(window.days) if window else [],
        window_start=window.start if window else "",
        window_end=window.end if window else "",
        cap_max=cap.max if cap else 0,
        cap_seconds=_seconds(cap.per) if cap else 0.0,
        utm=_utm(campaign),
        templates={
            name: dict(templates[name])
            for name in sorted({s.template for s in steps.values() if s.kind == "send_email"})
            if templates is not None and name in templates
        },
        marketing=campaign.kind == "marketing",
        consent_required=campaign.kind == "marketing" and campaign.without_consent is None,
    )
    content = asdict(plan)
    content.pop("version")
    if not content["utm"]:
        content.pop("utm")  # plans without UTM keep the version they had before it existed
    if not content["templates"]:
        content.pop("templates")  # likewise plans that send no email, or compiled without files
    for flag in ("marketing", "consent_required"):
        if content[flag]:
            content.pop(flag)  # likewise marketing campaigns that ask for consent (the default)
    return replace(plan, version=plan_hash(content))
