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

This module is the public surface and the Mermaid text; the parts a reader looks for separately
live beside it: what is drawn (``_graph_model``: summaries, colours, the graph with its loops
marked), where (``_graph_layout``) and how (``_graph_svg``).
"""

from __future__ import annotations

from campaigns._graph_model import (
    _COLOURS,
    _DEFAULT_COLOUR,
    _SHAPES,
    _graph,
    _safe_name,
    step_summary,
)
from campaigns._graph_svg import to_svg
from campaigns.plan import Plan

__all__ = ["step_summary", "to_mermaid", "to_svg"]

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
