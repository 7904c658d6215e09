"""Where the SVG puts each box (private: import from ``campaigns.graph``): a small layered
(Sugiyama-style) layout, because CI and users' machines have no Graphviz or Node. Back edges are
lanes on the right; the rest is a DAG layered by longest path from the trigger, with dummy points
where an edge skips layers; a few barycenter sweeps order each layer to cut crossings."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from heapq import heappop, heappush

from campaigns._graph_model import _NOTE_CHARS, _SHAPES, _clip, _Edge, _graph, _Node
from campaigns.plan import Plan

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
