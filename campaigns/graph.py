"""Pictures of a compiled campaign: Mermaid text for docs and pull requests, and an SVG that needs
nothing but Python, for the README and ``drip campaigns graph NAME``.

Both read a step only through ``kind``, ``id`` and ``edges()`` (plus a one-line summary), so a new
step kind is drawn the day it is compiled; :func:`step_summary` may learn a nicer line for it.

The SVG layout is a small layered (Sugiyama-style) drawing, because CI and users' machines have no
Graphviz or Node: back edges (a ``goto`` loop) are found by depth-first search and drawn as lanes on
the right; the rest is a DAG, layered by longest path from the trigger, with dummy points where an
edge skips layers so it runs between boxes rather than through them; a few barycenter sweeps order
each layer to cut crossings. Output is deterministic: the same plan gives the same bytes, so a
committed picture only changes when the campaign does.

The module is longer than our usual ~400 lines because the layout, the drawing and the summaries
belong together and nothing else needs them separately.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from heapq import heappop, heappush
from urllib.parse import urlsplit

from campaigns.durations import format_duration
from campaigns.plan import Plan, PlanStep

__all__ = ["step_summary", "to_mermaid", "to_svg"]

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


# ----------------------------------------------------------------------------------- Mermaid

_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '"#&<>|`'}
_MERMAID_SHAPES = {
    "round": ('(["', '"])'),
    "hexagon": ('{{"', '"}}'),
    "octagon": ('{"', '"}'),
    "goto": ('[["', '"]]'),
    "update_contact": ('[/"', '"/]'),
    "notify_sales": ('>"', '"]'),
    "webhook": ('>"', '"]'),
}


def _mermaid_text(text: str) -> str:
    """Mermaid entity codes (``#34;``) for every character that could end a quoted label or be
    read as HTML; '#' itself too, so user text can never spell an entity."""
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in " ".join(text.split()))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def to_mermaid(plan: Plan) -> str:
    """The plan as a Mermaid ``flowchart TD``: GitHub renders it inline in Markdown, and its text
    diffs well in review. Node ids are ``s_`` plus a sanitised, de-duplicated step id, so ids with
    '-' or Mermaid keywords (``end``) stay valid; all label text is entity-escaped."""
    nodes, edges, _ = _graph(plan)
    ids: list[str] = []
    used: set[str] = set()
    for i, node in enumerate(nodes):
        base = "trigger" if i == 0 else "s_" + _safe_name(node.key)
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        ids.append(name)

    lines = [
        "flowchart TD",
        f"    %% {_mermaid_text(f'{plan.name} ({plan.campaign_id} {plan.version})')}",
    ]
    for i, node in enumerate(nodes):
        shape = _SHAPES.get(node.kind, node.kind)
        left, right = _MERMAID_SHAPES.get(shape, ('["', '"]'))
        label = "<br/>".join(_mermaid_text(line) for line in node.lines)
        lines.append(f"    {ids[i]}{left}{label}{right}")
    for edge in edges:
        arrow = "-.->" if edge.back else "-->"
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"    {ids[edge.src]} {arrow}{label} {ids[edge.dst]}")
    by_kind: dict[str, list[str]] = {}
    for i, node in enumerate(nodes):
        by_kind.setdefault(node.kind, []).append(ids[i])
    for kind, members in by_kind.items():
        fill, stroke = _COLOURS.get(kind, _DEFAULT_COLOUR)
        dash = ",stroke-dasharray:4 3" if kind == "missing" else ""
        lines.append(
            f"    classDef k_{_safe_name(kind)} fill:{fill},stroke:{stroke},color:#111827{dash}"
        )
        lines.append(f"    class {','.join(members)} k_{_safe_name(kind)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- SVG layout

_FONT = 13.0
_LINE = 18.0
_PAD_X = 14.0
_PAD_Y = 8.0
_NODE_GAP = 32.0  # between boxes in a layer
_DUMMY_W = 14.0  # the room an edge passing through a layer takes
_ROW_GAP = 64.0  # between layers: room for edge labels and loop runs
_MARGIN = 24.0
_TITLE_H = 56.0
_LABEL_FONT = 11.0
_LABEL_H = 16.0
# Where an edge label may sit: points of the gap-crossing cubic (both controls halfway down) at
# t = 0.4 and, if that spot is taken, t = 0.75, as fractions of the way across and down the gap.
_LABEL_SPOTS = [(3 * t**2 - 2 * t**3, 1.5 * t * (1 - t) + t**3) for t in (0.4, 0.75)]


def _text_width(text: str, size: float) -> float:
    """An estimate (no font metrics in pure Python): ~0.54 em per character, 1 em for wide CJK."""
    wide = sum(1 for c in text if unicodedata.east_asian_width(c) in "WF")
    return (len(text) - wide) * size * 0.54 + wide * size


def _inset(node: _Node) -> float:
    """How far in from the sides a shape's flat top and bottom start (where edges attach)."""
    shape = _SHAPES.get(node.kind)
    return {"round": node.h / 2, "hexagon": 14.0, "octagon": 10.0}.get(shape or "", 6.0)


def _measure(node: _Node) -> None:
    sizes = [_FONT] + [12.0] * (len(node.lines) - 1)
    text = max(_text_width(line, size) for line, size in zip(node.lines, sizes, strict=True))
    node.h = 2 * _PAD_Y + _LINE * len(node.lines)
    shape = _SHAPES.get(node.kind)
    extra = {"round": node.h / 2, "hexagon": 16.0, "octagon": 6.0}.get(shape or "", 0.0)
    node.w = round(max(text + 2 * _PAD_X + 2 * extra, 96.0))


def _layers(nodes: list[_Node], edges: list[_Edge], rank: list[int]) -> None:
    """Longest path over the forward edges, in a topological order that breaks ties by DFS
    discovery, so a chain of steps reads top to bottom in the order it runs."""
    indegree = [0] * len(nodes)
    out: list[list[int]] = [[] for _ in nodes]
    for e in edges:
        if not e.back:
            indegree[e.dst] += 1
            out[e.src].append(e.dst)
    for i, node in enumerate(nodes):
        node.layer = 0 if i == 0 else 1
    heap = [(rank[i], i) for i in range(len(nodes)) if indegree[i] == 0]
    while heap:
        _, n = heappop(heap)
        for m in out[n]:
            nodes[m].layer = max(nodes[m].layer, nodes[n].layer + 1)
            indegree[m] -= 1
            if indegree[m] == 0:
                heappush(heap, (rank[m], m))


def _neighbours(count: int, links: list[tuple[int, int]]) -> tuple[list[list[int]], ...]:
    preds: list[list[int]] = [[] for _ in range(count)]
    succs: list[list[int]] = [[] for _ in range(count)]
    for a, b in links:
        preds[b].append(a)
        succs[a].append(b)
    return preds, succs


def _crossings(nodes: list[_Node], links: list[tuple[int, int]], pos: list[int]) -> int:
    """Pairs of links between the same two layers whose ends are in opposite orders."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for a, b in links:
        by_layer.setdefault(nodes[a].layer, []).append((pos[a], pos[b]))
    return sum(
        1
        for segs in by_layer.values()
        for i, (a1, b1) in enumerate(segs)
        for a2, b2 in segs[i + 1 :]
        if (a1 - a2) * (b1 - b2) < 0
    )


def _order(nodes: list[_Node], links: list[tuple[int, int]], rank: list[int]) -> list[list[int]]:
    """Start from depth-first discovery order (so the first way out of a step is on the left),
    then barycenter sweeps down, up, down, up, keeping the order with the fewest crossings."""
    rows: list[list[int]] = [[] for _ in range(max(n.layer for n in nodes) + 1)]
    for i in sorted(range(len(nodes)), key=lambda i: rank[i]):
        rows[nodes[i].layer].append(i)
    preds, succs = _neighbours(len(nodes), links)
    pos = [0] * len(nodes)
    for row in rows:
        for p, n in enumerate(row):
            pos[n] = p
    best = ([list(r) for r in rows], _crossings(nodes, links, pos))
    down, up = range(1, len(rows)), range(len(rows) - 2, -1, -1)
    for layer_ids, neighbours in [(down, preds), (up, succs)] * 2:
        for layer in layer_ids:
            row = rows[layer]
            key = {
                n: (sum(pos[m] for m in neighbours[n]) / len(neighbours[n]) if neighbours[n]
                    else float(pos[n]), pos[n])
                for n in row
            }  # fmt: skip
            row.sort(key=lambda n: key[n])
            for p, n in enumerate(row):
                pos[n] = p
        count = _crossings(nodes, links, pos)
        if count < best[1]:
            best = ([list(r) for r in rows], count)
    return best[0]


def _place_x(nodes: list[_Node], rows: list[list[int]], links: list[tuple[int, int]]) -> None:
    """Centre each node over its neighbours, then push apart in order (never reordering) and
    shift the layer back by its mean displacement, so chains stay straight and boxes never meet."""
    preds, succs = _neighbours(len(nodes), links)

    def pack(row: list[int], want: dict[int, float]) -> None:
        placed: list[float] = []
        for k, n in enumerate(row):
            x = want[n]
            if k:
                prev = nodes[row[k - 1]]
                x = max(x, placed[-1] + (prev.w + nodes[n].w) / 2 + _NODE_GAP)
            placed.append(x)
        shift = sum(want[n] - x for n, x in zip(row, placed, strict=True)) / len(row)
        for n, x in zip(row, placed, strict=True):
            nodes[n].x = x + shift

    for row in rows:
        pack(row, {n: 0.0 for n in row})
    passes = [(range(1, len(rows)), preds), (range(len(rows) - 2, -1, -1), succs)] * 2
    for layer_ids, neighbours in [*passes, passes[0]]:
        for layer in layer_ids:
            row = rows[layer]
            pack(
                row,
                {
                    n: sum(nodes[m].x for m in neighbours[n]) / len(neighbours[n])
                    if neighbours[n]
                    else nodes[n].x
                    for n in row
                },
            )


@dataclass
class _Layout:
    nodes: list[_Node]
    edges: list[_Edge]
    rows: list[list[int]]
    row_top: list[float]
    row_bottom: list[float]


def _layout(plan: Plan, notes: Mapping[str, str] | None = None) -> _Layout:
    nodes, edges, order = _graph(plan)
    for node in nodes:
        note = (notes or {}).get(node.key) if node.kind != "trigger" else None
        if note:
            node.lines.append(_clip(note, _NOTE_CHARS))
            node.note = True
        _measure(node)
    rank = [0] * len(nodes)
    for r, n in enumerate(order):
        rank[n] = r
    _layers(nodes, edges, rank)
    links: list[tuple[int, int]] = []
    for edge in edges:
        if edge.back:
            continue
        edge.chain = [edge.src]
        for layer in range(nodes[edge.src].layer + 1, nodes[edge.dst].layer):
            rank.append(rank[edge.src])
            edge.chain.append(len(nodes))
            nodes.append(_Node("", "", [], "", dummy=True, w=_DUMMY_W, layer=layer))
        edge.chain.append(edge.dst)
        links += zip(edge.chain, edge.chain[1:], strict=False)
    rows = _order(nodes, links, rank)
    _place_x(nodes, rows, links)
    left = min(nodes[n].x - nodes[n].w / 2 for n in range(len(nodes)))
    for node in nodes:
        node.x += _MARGIN - left
    row_top, row_bottom = [], []
    y = _MARGIN + _TITLE_H
    for row in rows:
        height = max((nodes[n].h for n in row if not nodes[n].dummy), default=0.0)
        for n in row:
            nodes[n].y = y + (height - nodes[n].h) / 2
        row_top.append(y)
        row_bottom.append(y + height)
        y += height + _ROW_GAP
    return _Layout(nodes, edges, rows, row_top, row_bottom)


# ------------------------------------------------------------------------------ SVG drawing

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    """Escape for text and attribute values; drop characters XML 1.0 cannot carry at all."""
    text = _INVALID_XML.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _pts(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{_num(x)},{_num(y)}" for x, y in points)


def _shape(node: _Node, stroke: str, fill: str) -> str:
    x0, y0, w, h = node.x - node.w / 2, node.y, node.w, node.h
    x1, y1, cy = x0 + w, y0 + h, y0 + h / 2
    paint = f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"'
    if node.kind == "missing":
        paint += ' stroke-dasharray="5 3"'
    shape = _SHAPES.get(node.kind)
    if shape == "hexagon":
        d = 14.0
        pts = [(x0 + d, y0), (x1 - d, y0), (x1, cy), (x1 - d, y1), (x0 + d, y1), (x0, cy)]
        return f'<polygon points="{_pts(pts)}" {paint}/>'
    if shape == "octagon":
        d = 10.0
        pts = [
            (x0 + d, y0), (x1 - d, y0), (x1, y0 + d), (x1, y1 - d),
            (x1 - d, y1), (x0 + d, y1), (x0, y1 - d), (x0, y0 + d),
        ]  # fmt: skip
        return f'<polygon points="{_pts(pts)}" {paint}/>'
    radius = h / 2 if shape == "round" else 6.0
    return (
        f'<rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(w)}" height="{_num(h)}" '
        f'rx="{_num(radius)}" {paint}/>'
    )


def _node_svg(node: _Node) -> str:
    fill, stroke = _COLOURS.get(node.kind, _DEFAULT_COLOUR)
    cls = "trigger" if node.kind == "trigger" else f"node kind-{_safe_name(node.kind)}"
    step = f' data-step="{_xml(node.key)}"' if node.kind != "trigger" else ""
    parts = [
        f'<g class="{cls}"{step}>',
        f"<title>{_xml(node.title)}</title>",
        _shape(node, stroke, fill),
    ]
    for i, line in enumerate(node.lines):
        y = node.y + _PAD_Y + _LINE * (i + 0.75)
        style = (
            ' font-weight="600"'
            if i == 0
            else ' font-size="12"' + (' fill="#4b5563"' if i > 1 else "")
        )
        if node.note and i == len(node.lines) - 1:
            style = ' font-size="12" font-weight="600" fill="#1d4ed8" class="note"'
        parts.append(f'<text x="{_num(node.x)}" y="{_num(y)}"{style}>{_xml(line)}</text>')
    parts.append("</g>")
    return "".join(parts)


def _rounded(points: list[tuple[float, float]], radius: float = 8.0) -> str:
    """An orthogonal polyline with rounded corners, as path data."""
    d = [f"M{_num(points[0][0])},{_num(points[0][1])}"]
    for (ax, ay), (bx, by), (cx, cy) in zip(points, points[1:], points[2:], strict=False):
        r = min(radius, (abs(bx - ax) + abs(by - ay)) / 2, (abs(cx - bx) + abs(cy - by)) / 2)
        ux, uy = (
            (bx - ax) / max(abs(bx - ax) + abs(by - ay), 1e-9),
            (by - ay) / max(abs(bx - ax) + abs(by - ay), 1e-9),
        )
        vx, vy = (
            (cx - bx) / max(abs(cx - bx) + abs(cy - by), 1e-9),
            (cy - by) / max(abs(cx - bx) + abs(cy - by), 1e-9),
        )
        d.append(f"L{_num(bx - ux * r)},{_num(by - uy * r)}")
        d.append(f"Q{_num(bx)},{_num(by)} {_num(bx + vx * r)},{_num(by + vy * r)}")
    d.append(f"L{_num(points[-1][0])},{_num(points[-1][1])}")
    return " ".join(d)


@dataclass
class _Label:
    text: str
    x: float  # centre
    y: float  # centre
    w: float
    spots: list[tuple[float, float]] = field(default_factory=list)  # where it may go, best first


def _forward_paths(lay: _Layout) -> tuple[dict[int, str], list[_Label]]:
    """Path data for every forward edge and its label, placed mid-gap below the source; each
    node's outgoing and incoming edges get their own ports, ordered left to right by the node at
    the other end, so parallel edges (both ways out of a wait_for to one step) stay apart."""
    nodes = lay.nodes
    out_ports: dict[int, float] = {}
    in_ports: dict[int, float] = {}
    leaving: dict[int, list[int]] = {}
    arriving: dict[int, list[int]] = {}
    for ei, edge in enumerate(lay.edges):
        if not edge.back:
            leaving.setdefault(edge.src, []).append(ei)
            arriving.setdefault(edge.dst, []).append(ei)
    for ports, groups, other in ((out_ports, leaving, 1), (in_ports, arriving, -2)):
        for n, group in groups.items():
            node = nodes[n]
            group.sort(key=lambda ei: (nodes[lay.edges[ei].chain[other]].x, ei))
            inset = _inset(node)
            span = node.w - 2 * inset
            for k, ei in enumerate(group):
                ports[ei] = node.x - node.w / 2 + inset + span * (k + 1) / (len(group) + 1)
    paths: dict[int, str] = {}
    labels: list[_Label] = []
    for ei, edge in enumerate(lay.edges):
        if edge.back:
            continue
        src, dst = nodes[edge.src], nodes[edge.dst]
        xs = [out_ports[ei]] + [nodes[d].x for d in edge.chain[1:-1]] + [in_ports[ei]]
        layer = src.layer
        y = src.y + src.h
        d = [f"M{_num(xs[0])},{_num(y)}"]
        for k in range(len(xs) - 1):
            top, bottom = lay.row_bottom[layer + k], lay.row_top[layer + k + 1]
            a, b, bend = _num(xs[k]), _num(xs[k + 1]), _num((top + bottom) / 2)
            d += [f"L{a},{_num(top)}"] if top > y else []
            d.append(f"C{a},{bend} {b},{bend} {b},{_num(bottom)}")
            y = bottom
        d += [f"L{_num(xs[-1])},{_num(dst.y)}"] if dst.y > y else []
        paths[ei] = " ".join(d)
        if edge.label:
            # on the curve, 40% of the way down the gap: nearer the source than the middle, where
            # the two edges of a crossing pair would meet
            text = _clip(edge.label, _EDGE_LABEL_CHARS)
            top, bottom = lay.row_bottom[layer], lay.row_top[layer + 1]
            width = _text_width(text, _LABEL_FONT) + 10
            spots = [
                (xs[0] + (xs[1] - xs[0]) * fx, top + (bottom - top) * fy) for fx, fy in _LABEL_SPOTS
            ]
            labels.append(_Label(text, *spots[0], width, spots))
    _spread(labels)
    return paths, labels


def _spread(labels: list[_Label]) -> None:
    """Put each label on its first free spot on its edge; if none is free (a wide fan-out of long
    conditions), slide it right along its first spot until it is clear of the others."""

    def clear(label: _Label, placed: list[_Label]) -> bool:
        return all(
            abs(label.x - o.x) >= (label.w + o.w) / 2 + 4 or abs(label.y - o.y) >= _LABEL_H + 1
            for o in placed
        )

    placed: list[_Label] = []
    for label in sorted(labels, key=lambda lb: (lb.y, lb.x)):
        free = [spot for spot in label.spots if clear(replace(label, x=spot[0], y=spot[1]), placed)]
        label.x, label.y = free[0] if free else label.spots[0]
        while not clear(label, placed):
            label.x += 8
        placed.append(label)


def _back_path(lay: _Layout, edge: _Edge, lane: float) -> str:
    """A loop runs out of the source's lower right, up a lane right of everything and into the
    target's upper right; when another box sits to the right it detours through the row gaps."""
    src, dst = lay.nodes[edge.src], lay.nodes[edge.dst]

    def rightmost(node: _Node) -> bool:
        row = [lay.nodes[n] for n in lay.rows[node.layer] if not lay.nodes[n].dummy]
        return max(row, key=lambda n: n.x) is node

    sx, sy = src.x + src.w / 2, src.y + src.h * 0.75
    tx, ty = dst.x + dst.w / 2, dst.y + dst.h * 0.25
    points = [(sx, sy)]
    if not rightmost(src):
        gap = lay.row_bottom[src.layer] + _ROW_GAP * 0.12
        points += [(sx + 10, sy), (sx + 10, gap), (lane, gap)]
    else:
        points.append((lane, sy))
    if not rightmost(dst):
        gap = lay.row_top[dst.layer] - _ROW_GAP * 0.12
        points += [(lane, gap), (tx + 10, gap), (tx + 10, ty)]
    else:
        points.append((lane, ty))
    points.append((tx, ty))
    return _rounded(points)


def to_svg(plan: Plan, notes: Mapping[str, str] | None = None) -> str:
    """A standalone SVG picture of the plan (no external tools, fonts or network).

    ``notes`` adds one line to the box of each step named (step id -> text): the dashboard
    writes a step's live figures there, so the picture itself answers "where are people now"."""
    lay = _layout(plan, notes)
    nodes, edges = lay.nodes, lay.edges
    paths, labels = _forward_paths(lay)
    right = max([n.x + n.w / 2 for n in nodes] + [lb.x + lb.w / 2 for lb in labels])
    lane = right + 28
    for ei, edge in enumerate(edges):
        if edge.back:
            paths[ei] = _back_path(lay, edge, lane)
            text = _clip(edge.label, _EDGE_LABEL_CHARS)
            src, dst = nodes[edge.src], nodes[edge.dst]
            width = _text_width(text, _LABEL_FONT) + 10
            mid = (src.y + src.h * 0.75 + dst.y + dst.h * 0.25) / 2
            if text:
                labels.append(_Label(text, lane + 4 + width / 2, mid, width))
            lane += (width if text else 0) + 20
    title = _clip(plan.name or plan.campaign_id, 80)
    subtitle = _clip(f"{plan.campaign_id} · {plan.version}", 80)
    width = (
        max(lane if any(e.back for e in edges) else right, _MARGIN + _text_width(title, 16))
        + _MARGIN
    )
    height = max(n.y + n.h for n in nodes) + _MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" role="img" aria-labelledby="graph-title" '
        f"font-family=\"system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\" "
        f'font-size="{_num(_FONT)}" text-anchor="middle">',
        f'<title id="graph-title">{_xml(f"Campaign {title} ({subtitle})")}</title>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#6b7280"/></marker></defs>',
        f'<rect width="{_num(width)}" height="{_num(height)}" fill="#ffffff"/>',
        f'<text x="{_num(_MARGIN)}" y="{_num(_MARGIN + 16)}" text-anchor="start" font-size="16" '
        f'font-weight="700" fill="#111827">{_xml(title)}</text>',
        f'<text x="{_num(_MARGIN)}" y="{_num(_MARGIN + 36)}" text-anchor="start" font-size="11" '
        f'fill="#6b7280">{_xml(subtitle)}</text>',
    ]
    for ei, edge in enumerate(edges):
        cls = "edge back" if edge.back else "edge"
        cls = "entry-edge" if ei == 0 else cls
        src, dst = nodes[edge.src], nodes[edge.dst]
        name = f"{src.key or 'trigger'} → {dst.key}" + (f" on {edge.label}" if edge.label else "")
        dash = ' stroke-dasharray="6 4"' if edge.back else ""
        out.append(
            f'<g class="{cls}" data-from="{_xml(src.key)}" data-to="{_xml(dst.key)}" '
            f'data-label="{_xml(edge.label)}"><title>{_xml(name)}</title>'
            f'<path d="{paths[ei]}" fill="none" stroke="#6b7280" stroke-width="1.5"{dash} '
            f'marker-end="url(#arrow)"/></g>'
        )
    for label in labels:
        out.append(
            f'<g class="edge-label"><rect x="{_num(label.x - label.w / 2)}" '
            f'y="{_num(label.y - _LABEL_H / 2)}" width="{_num(label.w)}" height="{_num(_LABEL_H)}" '
            f'rx="3" fill="#ffffff" fill-opacity="0.92"/><text x="{_num(label.x)}" '
            f'y="{_num(label.y + 4)}" font-size="{_num(_LABEL_FONT)}" fill="#374151">'
            f"{_xml(label.text)}</text></g>"
        )
    out += [_node_svg(n) for n in nodes if not n.dummy]
    out.append("</svg>")
    return "\n".join(out) + "\n"
