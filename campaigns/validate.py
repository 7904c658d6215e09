"""Cross-checks a schema cannot express: step ids, targets, reachability, templates and forms."""

from __future__ import annotations

from collections.abc import Collection

from campaigns.errors import Problem, hint
from campaigns.loader import Located, problem_at
from campaigns.schema import Campaign

__all__ = ["check_campaign"]


def check_campaign(
    doc: Located, campaign: Campaign, *, templates: Collection[str], forms: Collection[str]
) -> list[Problem]:
    """Every problem with references inside one campaign, in file order."""
    problems: list[Problem] = []
    index_of: dict[str, int] = {}
    for i, step in enumerate(campaign.steps):
        if step.id in index_of:
            problems.append(
                problem_at(
                    doc,
                    ("steps", i, "id"),
                    f"step id '{step.id}' is already used by an earlier step",
                )
            )
        else:
            index_of[step.id] = i

    form = campaign.trigger.form
    if form is not None and form not in forms:
        problems.append(
            problem_at(doc, ("trigger", "form"), f"form '{form}' does not exist{hint(form, forms)}")
        )

    send_steps = {s.id for s in campaign.steps if s.send_email is not None}
    for i, step in enumerate(campaign.steps):
        targets: list[tuple[tuple[int | str, ...], str]] = []
        if step.next is not None:
            targets.append((("steps", i, "next"), step.next))
        if step.send_email is not None and step.send_email.template not in templates:
            name = step.send_email.template
            problems.append(
                problem_at(
                    doc,
                    ("steps", i, "send_email", "template"),
                    f"template '{name}' does not exist{hint(name, templates)}",
                )
            )
        if step.wait_for is not None:
            w = step.wait_for
            targets += [
                (("steps", i, "wait_for", "on_event"), w.on_event),
                (("steps", i, "wait_for", "on_timeout"), w.on_timeout),
            ]
            for kind in ("open", "click"):
                ref = getattr(w, kind)
                if ref is not None and ref not in send_steps:
                    problems.append(
                        problem_at(
                            doc,
                            ("steps", i, "wait_for", kind),
                            f"'{ref}' is not a send_email step of this campaign",
                        )
                    )
        for loc, target in targets:
            if target not in index_of:
                problems.append(
                    problem_at(doc, loc, f"step '{target}' does not exist{hint(target, index_of)}")
                )

    if not problems:
        problems += _unreachable(doc, campaign, index_of)
    return sorted(problems, key=lambda p: (p.line, p.column))


def _unreachable(doc: Located, campaign: Campaign, index_of: dict[str, int]) -> list[Problem]:
    steps = campaign.steps
    seen: set[str] = set()
    todo = [steps[0].id]
    while todo:
        sid = todo.pop()
        if sid in seen:
            continue
        seen.add(sid)
        i = index_of[sid]
        step = steps[i]
        if step.wait_for is not None:
            todo += [step.wait_for.on_event, step.wait_for.on_timeout]
        elif step.exit is None:
            if step.next is not None:
                todo.append(step.next)
            elif i + 1 < len(steps):
                todo.append(steps[i + 1].id)
    return [
        problem_at(doc, ("steps", index_of[s.id], "id"), f"step '{s.id}' can never be reached")
        for s in steps
        if s.id not in seen
    ]
