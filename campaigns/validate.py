"""Cross-checks a schema cannot express: step ids, targets, reachability, loops, templates,
forms, split percentages and webhook hosts. Every problem is reported, in file order."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from campaigns.compile import compile_campaign
from campaigns.conditions import (
    ConditionError,
    is_contact_only,
    parse_condition,
    parse_event_filter,
    step_references,
)
from campaigns.errors import Problem, hint
from campaigns.hosts import host_allowed
from campaigns.loader import Loc, Located, problem_at
from campaigns.schema import Campaign, Step

__all__ = ["check_campaign"]

#: Steps that let time pass: a loop through one of these cannot spin.
_WAITING_KINDS = frozenset({"wait", "wait_for"})


@dataclass
class _Check:
    doc: Located
    campaign: Campaign
    problems: list[Problem] = field(default_factory=list)
    index_of: dict[str, int] = field(default_factory=dict)

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(problem_at(self.doc, loc, message))

    def target(self, loc: Loc, step_id: str) -> None:
        if step_id not in self.index_of:
            self.add(loc, f"step '{step_id}' does not exist{hint(step_id, self.index_of)}")


def check_campaign(
    doc: Located,
    campaign: Campaign,
    *,
    templates: Collection[str],
    forms: Collection[str],
    webhook_hosts: Collection[str] = (),
) -> list[Problem]:
    """Every problem with references inside one campaign, in file order."""
    check = _Check(doc, campaign)
    for i, step in enumerate(campaign.steps):
        if step.id in check.index_of:
            check.add(("steps", i, "id"), f"step id '{step.id}' is already used by an earlier step")
        else:
            check.index_of[step.id] = i

    form = campaign.trigger.form
    if form is not None and form not in forms:
        check.add(("trigger", "form"), f"form '{form}' does not exist{hint(form, forms)}")

    if campaign.kind == "transactional" and campaign.without_consent is not None:
        check.add(
            ("without_consent",),
            "a transactional campaign needs no consent anyway: remove without_consent "
            "(it lets a marketing campaign email contacts without consent)",
        )

    send_steps = {s.id for s in campaign.steps if s.send_email is not None}
    for i, step in enumerate(campaign.steps):
        _check_step(check, i, step, send_steps, templates, webhook_hosts)
    for loc, text, kind in _conditions(campaign):
        _check_condition(check, loc, text, kind, send_steps)

    if not check.problems:  # the graph checks need every target to exist
        _check_graph(check)
    return sorted(check.problems, key=lambda p: (p.line, p.column))


ConditionKind = Literal["condition", "contact", "event"]


def _conditions(campaign: Campaign) -> list[tuple[Loc, str, ConditionKind]]:
    """Every condition in a campaign, with where it is and what it may test: anything
    (``condition``), only the contact row (``contact``: it selects contacts in SQL), or only the
    event at hand (``event``: a ``where:`` filter)."""
    found: list[tuple[Loc, str, ConditionKind]] = []
    t = campaign.trigger
    if t.where is not None:
        found.append((("trigger", "where"), t.where, "event"))
    if t.segment_entered is not None:
        found.append((("trigger", "segment_entered"), t.segment_entered, "contact"))
    if campaign.audience is not None:
        found.append((("audience",), campaign.audience, "contact"))
    if (g := campaign.goal) is not None:
        if g.when is not None:
            found.append((("goal", "when"), g.when, "condition"))
        if g.where is not None:
            found.append((("goal", "where"), g.where, "event"))
    found += [(("exit_when", n), text, "condition") for n, text in enumerate(campaign.exit_when)]
    for i, step in enumerate(campaign.steps):
        if step.wait_for is not None and step.wait_for.where is not None:
            found.append((("steps", i, "wait_for", "where"), step.wait_for.where, "event"))
        if step.branch is not None:
            found += [
                (("steps", i, "branch", "cases", n, "when"), case.when, "condition")
                for n, case in enumerate(step.branch.cases)
            ]
    return found


def _check_condition(
    check: _Check, loc: Loc, text: str, kind: ConditionKind, send_steps: set[str]
) -> None:
    def add(column: int, message: str) -> None:
        line, col = check.doc.inside(loc, column)
        check.problems.append(
            Problem(check.doc.file, line, col, check.doc.pretty_path(loc), message)
        )

    try:
        cond = parse_event_filter(text) if kind == "event" else parse_condition(text)
    except ConditionError as exc:
        add(exc.column, exc.message)
        return
    if kind == "contact" and not is_contact_only(cond):
        add(1, "can only test the contact here (fields, tags, score, status), not events")
    for step_id, column in step_references(cond):
        if step_id not in send_steps:
            add(
                column,
                f"'{step_id}' is not a send_email step of this campaign{hint(step_id, send_steps)}",
            )


def _check_step(
    check: _Check,
    i: int,
    step: Step,
    send_steps: set[str],
    templates: Collection[str],
    webhook_hosts: Collection[str],
) -> None:
    at: Loc = ("steps", i)
    if step.next is not None:
        check.target((*at, "next"), step.next)
    if step.send_email is not None and step.send_email.template not in templates:
        name = step.send_email.template
        check.add(
            (*at, "send_email", "template"),
            f"template '{name}' does not exist{hint(name, templates)}",
        )
    if (w := step.wait_for) is not None:
        check.target((*at, "wait_for", "on_event"), w.on_event)
        check.target((*at, "wait_for", "on_timeout"), w.on_timeout)
        for kind in ("open", "click"):
            ref = getattr(w, kind)
            if ref is not None and ref not in send_steps:
                check.add(
                    (*at, "wait_for", kind), f"'{ref}' is not a send_email step of this campaign"
                )
    if (b := step.branch) is not None:
        for n, case in enumerate(b.cases):
            check.target((*at, "branch", "cases", n, "goto"), case.goto)
        check.target((*at, "branch", "else"), b.else_)
    if (sp := step.split) is not None:
        for n, variant in enumerate(sp.variants):
            check.target((*at, "split", "variants", n, "goto"), variant.goto)
        names = [v.name for v in sp.variants]
        for n, name in enumerate(names):
            if name in names[:n]:
                check.add((*at, "split", "variants", n, "name"), f"variant '{name}' is used twice")
        total = sum(v.percent for v in sp.variants)
        if total != 100:
            check.add((*at, "split", "variants"), f"percentages add up to {total}, not 100")
    if (g := step.goto) is not None:
        check.target((*at, "goto", "step"), g.step)
    if (h := step.webhook) is not None:
        host = (urlsplit(h.url).hostname or "").lower()
        if not host_allowed(host, webhook_hosts):
            allowed = ", ".join(sorted(webhook_hosts)) or "none yet"
            check.add(
                (*at, "webhook", "url"),
                f"host '{host}' is not in workspace.yaml webhook_hosts (allowed: {allowed})",
            )


def _check_graph(check: _Check) -> None:
    """Unreachable steps, and loops in which no step waits (they would spin, or spam)."""
    plan = compile_campaign(check.campaign)
    seen: set[str] = set()
    todo = [plan.entry]
    while todo:
        sid = todo.pop()
        if sid not in seen:
            seen.add(sid)
            todo += [target for _, target in plan.step(sid).edges()]
    for step in check.campaign.steps:
        if step.id not in seen:
            check.add(
                ("steps", check.index_of[step.id], "id"), f"step '{step.id}' can never be reached"
            )

    # A loop is a cycle of steps; it is only safe if some step on it waits. Drop the waiting
    # steps and look for any cycle left among the reachable ones.
    graph = {
        sid: [t for _, t in plan.step(sid).edges() if plan.step(t).kind not in _WAITING_KINDS]
        for sid in seen
        if plan.step(sid).kind not in _WAITING_KINDS
    }
    for cycle in _cycles(graph):
        first = min(cycle, key=lambda s: check.index_of[s])
        path = " -> ".join([*cycle, cycle[0]])
        check.add(
            ("steps", check.index_of[first], "id"),
            f"loop without a wait: {path}; add a wait or wait_for step to it",
        )


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (iterative Tarjan), each listed
    in the order its steps follow each other, starting from its first step."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [t for t in graph[node] if t in graph]
            if child < len(targets):
                work.append((node, child + 1))
                t = targets[child]
                if t not in index:
                    work.append((t, 0))
                elif t in on_stack:
                    low[node] = min(low[node], index[t])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [_order(c, graph) for c in components]


def _order(component: list[str], graph: dict[str, list[str]]) -> list[str]:
    """Walk the component from its smallest id along edges that stay inside it."""
    members = set(component)
    start = min(component)
    path = [start]
    while True:
        nxt = next((t for t in graph[path[-1]] if t in members and t not in path), None)
        if nxt is None:
            return path
        path.append(nxt)
