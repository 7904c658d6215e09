"""What the pictures of a campaign draw (private: import from ``campaigns.graph``): a step's
one-line summary, its colours and shape, and the graph of a plan as nodes and edges with its back
edges (``goto`` loops) marked, shared by the Mermaid text and the SVG."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from campaigns.durations import format_duration
from campaigns.plan import Plan, PlanStep

# (fill, stroke) per kind; the trigger and a missing target are drawn like kinds of their own.
_COLOURS = {
    "trigger": ("#ede9fe", "#7c3aed"),
    "send_email": ("#dbeafe", "#2563eb"),
    "wait": ("#fef3c7", "#d97706"),
    "wait_for": ("#fef3c7", "#d97706"),
    "branch": ("#fce7f3", "#db2777"),
    "split": ("#fce7f3", "#db2777"),
    "goto": ("#e0e7ff", "#4f46e5"),
    "update_contact": ("#dcfce7", "#16a34a"),
    "notify_sales": ("#ccfbf1", "#0d9488"),
    "webhook": ("#ccfbf1", "#0d9488"),
    "exit": ("#e5e7eb", "#4b5563"),
    "missing": ("#fee2e2", "#dc2626"),
}
_DEFAULT_COLOUR = ("#f1f5f9", "#64748b")
_SHAPES = {
    "trigger": "round",
    "exit": "round",
    "wait": "hexagon",
    "wait_for": "hexagon",
    "branch": "octagon",
    "split": "octagon",
}
_DETAIL_CHARS = 40  # longer subjects and messages are clipped in pictures (full text in <title>)
_EDGE_LABEL_CHARS = 30
_NOTE_CHARS = 48  # a step's figures (``to_svg(notes=...)``)


# --------------------------------------------------------------------------------- summaries


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _duration(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _wait_summary(step: PlanStep) -> str:
    parts = [_duration(step.seconds)] if step.seconds else []
    target = step.until_time or step.until_date or step.until_field
    if target:
        offset = step.offset_seconds
        sign = "+" if offset > 0 else "-"
        parts.append(f"until {target}" + (f" {sign} {_duration(abs(offset))}" if offset else ""))
    return " ".join(["wait", *parts])


def _update_summary(step: PlanStep) -> str:
    parts = [f"+{t}" for t in step.add_tags] + [f"-{t}" for t in step.remove_tags]
    if step.set_fields:
        parts.append("set " + ", ".join(sorted(step.set_fields)))
    if step.unset_fields:
        parts.append("unset " + ", ".join(step.unset_fields))
    if step.add_score:
        parts.append(f"score {step.add_score:+d}")
    return "update_contact: " + ", ".join(parts) if parts else "update_contact"


def step_summary(step: PlanStep) -> list[str]:
    """What a step does, as a short line plus optional detail lines: enough to recognise the step
    in a picture without opening the YAML. Unknown kinds fall back to the kind's name."""
    kind = step.kind
    if kind == "send_email":
        return [f"send_email: {step.template}"] + ([f"“{step.subject}”"] if step.subject else [])
    if kind == "wait":
        return [_wait_summary(step)]
    if kind == "wait_for":
        what = (
            f"{step.wait_event} of {step.wait_ref}"
            if step.wait_event in ("open", "click")
            else (f"{step.wait_event} {step.wait_ref}")
        )
        line = f"wait_for {what}" + (f", up to {_duration(step.seconds)}" if step.seconds else "")
        return [line] + ([f"where {step.where}"] if step.where else [])
    if kind == "branch":
        return [f"branch: {len(step.cases)} case{'s' if len(step.cases) != 1 else ''} + else"]
    if kind == "split":
        line = "split: " + " / ".join(f"{v.name} {v.percent}%" for v in step.variants)
        if not step.winner_metric:
            return [line]
        winner = f"winner by {step.winner_metric}"
        if step.winner_after_seconds:
            winner += f" after {_duration(step.winner_after_seconds)}"
        return [line, winner]
    if kind == "goto":
        return [f"goto {step.goto}, up to {step.max_times}x"]
    if kind == "update_contact":
        return [_update_summary(step)]
    if kind == "notify_sales":
        line = "notify_sales" + (" via " + ", ".join(step.via) if step.via else "")
        return [line] + ([step.message] if step.message else [])
    if kind == "webhook":
        parts = urlsplit(step.url)
        return [f"webhook: {parts.netloc}{parts.path}" if parts.netloc else "webhook"]
    if kind == "exit":
        return [f"exit: {step.reason}" if step.reason else "exit"]
    return [kind]


def _trigger_lines(plan: Plan) -> list[str]:
    first = f"{plan.trigger_kind} {plan.trigger_value}".strip() or "start"
    return [first] + ([f"where {plan.trigger_where}"] if plan.trigger_where else [])


# ------------------------------------------------------------------------------ shared graph


@dataclass
class _Node:
    key: str  # the step id ("" for the trigger)
    kind: str
    lines: list[str]  # first line is the title line (step id, or the trigger)
    title: str  # the full, unclipped description for <title> and screen readers
    dummy: bool = False
    note: bool = False  # the last line is a figure the caller gave (``to_svg(notes=...)``)
    w: float = 0.0
    h: float = 0.0
    layer: int = 0
    x: float = 0.0  # centre
    y: float = 0.0  # top


@dataclass
class _Edge:
    src: int
    dst: int
    label: str
    back: bool = False
    chain: list[int] = field(default_factory=list)  # src, dummies..., dst (forward edges)


def _safe_name(text: str) -> str:
    """A step id as an identifier (Mermaid node names, SVG class names)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _graph(plan: Plan) -> tuple[list[_Node], list[_Edge], list[int]]:
    """Node 0 is the trigger; then the plan's steps in their order; then any target that is not a
    step (a plan mid-edit), so a broken plan still draws and shows what is missing."""
    trigger = _trigger_lines(plan)
    nodes = [_Node("", "trigger", trigger, " ".join(trigger))]
    index: dict[str, int] = {}
    for sid, step in plan.steps.items():
        summary = step_summary(step)
        index[sid] = len(nodes)
        shown = [sid, summary[0], *(_clip(d, _DETAIL_CHARS) for d in summary[1:])]
        nodes.append(_Node(sid, step.kind, shown, f"{sid}: " + "; ".join(summary)))
    edges = [_Edge(0, 0, "")]
    for sid, step in plan.steps.items():
        for label, target in step.edges():
            if target not in index:
                index[target] = len(nodes)
                nodes.append(_Node(target, "missing", [target, "(missing step)"], "missing step"))
            edges.append(_Edge(index[sid], index[target], label))
    if plan.entry not in index:
        index[plan.entry] = len(nodes)
        nodes.append(_Node(plan.entry, "missing", [plan.entry, "(missing step)"], "missing step"))
    edges[0].dst = index[plan.entry]
    return nodes, edges, _mark_back_edges(nodes, edges)


def _mark_back_edges(nodes: list[_Node], edges: list[_Edge]) -> list[int]:
    """Depth-first from the trigger (then from anything unreached), following ``edges()`` order;
    an edge into a node still on the stack closes a loop. Returns the discovery order."""
    out: list[list[_Edge]] = [[] for _ in nodes]
    for edge in edges:
        out[edge.src].append(edge)
    state = [0] * len(nodes)  # 0 unseen, 1 on the stack, 2 done
    order: list[int] = []
    for root in range(len(nodes)):
        if state[root]:
            continue
        state[root] = 1
        order.append(root)
        stack = [(root, 0)]
        while stack:
            node, i = stack[-1]
            if i == len(out[node]):
                state[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, i + 1)
            edge = out[node][i]
            if state[edge.dst] == 1:
                edge.back = True
            elif state[edge.dst] == 0:
                state[edge.dst] = 1
                order.append(edge.dst)
                stack.append((edge.dst, 0))
    return order
