"""Drawing the laid-out graph as SVG text (private: import ``to_svg`` from ``campaigns.graph``):
shapes, edges with rounded corners, labels spread so they do not overlap, loop lanes. The same
plan gives the same bytes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from campaigns._graph_layout import (
    _FONT,
    _LABEL_FONT,
    _LABEL_H,
    _LABEL_SPOTS,
    _LINE,
    _MARGIN,
    _PAD_Y,
    _ROW_GAP,
    _inset,
    _Layout,
    _layout,
    _text_width,
)
from campaigns._graph_model import (
    _COLOURS,
    _DEFAULT_COLOUR,
    _EDGE_LABEL_CHARS,
    _SHAPES,
    _clip,
    _Edge,
    _Node,
    _safe_name,
)
from campaigns.plan import Plan

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
