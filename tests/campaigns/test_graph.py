"""Campaign pictures: Mermaid text and the pure-Python SVG.

Both are checked by reading them back: the Mermaid edges are parsed out and compared with
``PlanStep.edges()``, and the SVG is parsed as XML and its geometry checked (no box overlaps
another, no edge runs through a box it does not start or end at, labels do not cover boxes or each
other, everything is inside the picture). Hand-built plans cover what the demo does not: a wide
fan-out, loops, hostile text, awkward step ids and a long chain.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from campaigns.compile import compile_campaign
from campaigns.graph import step_summary, to_mermaid, to_svg
from campaigns.loader import load_model, load_yaml
from campaigns.plan import Plan, PlanCase, PlanStep, PlanVariant, plan_from_dict
from campaigns.schema import Campaign
from campaigns.workspace import load_workspace
from tests.support import EXAMPLES

SVG = "{http://www.w3.org/2000/svg}"
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
EdgeKey = tuple[str, str, str]  # from, to, label ("" from: the trigger)


@pytest.fixture(scope="module")
def welcome(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    """The demo's welcome campaign through load_workspace. The demo workspace is copied with only
    welcome.yaml among its campaigns, so a sibling demo campaign that is mid-edit (say, waiting
    for its templates) cannot break these tests."""
    root = tmp_path_factory.mktemp("ws") / "acme"
    shutil.copytree(EXAMPLES, root)
    for path in (root / "campaigns").glob("*.yaml"):
        if path.name != "welcome.yaml":
            path.unlink()
    return load_workspace(root).plans["welcome"]


def plan_of(*steps: PlanStep, name: str = "Test plan", **extra: str) -> Plan:
    return Plan(
        campaign_id="test",
        name=name,
        version="v0",
        entry=steps[0].id,
        steps={s.id: s for s in steps},
        trigger_kind="form",
        trigger_value="newsletter",
        **extra,
    )


def send(sid: str, nxt: str | None, subject: str = "Hello") -> PlanStep:
    return PlanStep(id=sid, kind="send_email", next=nxt, template="t", subject=subject)


def wait_for(sid: str, on_event: str, on_timeout: str) -> PlanStep:
    return PlanStep(
        id=sid,
        kind="wait_for",
        seconds=86400,
        wait_event="open",
        wait_ref="x",
        on_event=on_event,
        on_timeout=on_timeout,
    )


def exit_(sid: str = "done") -> PlanStep:
    return PlanStep(id=sid, kind="exit")


def expected_edges(plan: Plan) -> Counter[EdgeKey]:
    found: Counter[EdgeKey] = Counter({("", plan.entry, ""): 1})
    for sid, step in plan.steps.items():
        found.update((sid, target, label) for label, target in step.edges())
    return found


# ----------------------------------------------------------------------------------- Mermaid

MERMAID_NODE = re.compile(
    r'^    (\w+)(\(\["|\{\{"|\{"|\[\["|\[/"|>"|\[")([^"]*)("\]\)|"\}\}|"\}|"\]\]|"/\]|"\])$'
)
MERMAID_EDGE = re.compile(r'^    (\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$')


def unescape_mermaid(text: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), text)


def parse_mermaid(text: str) -> tuple[dict[str, list[str]], Counter[EdgeKey], list[str]]:
    """Node id -> label lines, the edges as (from step, to step, label), and the back edges'
    (dotted) sources. Every line must be a header, comment, node, edge or style line."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, list[str]] = {}
    raw_edges: list[tuple[str, str, str, str]] = []
    for line in lines[1:]:
        if node := MERMAID_NODE.match(line):
            assert node[1] not in nodes, f"duplicate node id {node[1]}"
            nodes[node[1]] = [unescape_mermaid(part) for part in node[3].split("<br/>")]
        elif edge := MERMAID_EDGE.match(line):
            raw_edges.append((edge[1], edge[4], unescape_mermaid(edge[3] or ""), edge[2]))
        else:
            assert re.match(r"^    (%% .*|classDef k_\w+ [^;]*|class [\w,]+ k_\w+)$", line), line
    step_of = {nid: ("" if nid == "trigger" else label[0]) for nid, label in nodes.items()}
    edges = Counter((step_of[a], step_of[b], label) for a, b, label, _ in raw_edges)
    dotted = [step_of[a] for a, _, _, arrow in raw_edges if arrow == "-.->"]
    return nodes, edges, dotted


def test_mermaid_of_welcome_has_every_step_and_every_edge(welcome: Plan) -> None:
    text = to_mermaid(welcome)
    nodes, edges, dotted = parse_mermaid(text)
    assert sorted(label[0] for nid, label in nodes.items() if nid != "trigger") == sorted(
        welcome.steps
    )
    assert edges == expected_edges(welcome)
    assert dotted == []  # no loops in the welcome series
    assert text == to_mermaid(welcome)


def test_mermaid_labels_shapes_and_summaries(welcome: Plan) -> None:
    text = to_mermaid(welcome)
    assert '    trigger(["form newsletter"])' in text
    assert '    s_welcome["welcome<br/>send_email: welcome<br/>' in text
    assert '    s_wait_for_open{{"wait_for_open<br/>wait_for open of welcome, up to 2d"}}' in text
    assert '    s_done(["done<br/>exit"])' in text
    assert '    s_wait_for_open -->|"open"| s_tips' in text
    assert '    s_wait_for_open -->|"timeout"| s_reminder' in text
    assert "    class s_welcome,s_tips,s_reminder k_send_email" in text


def test_mermaid_node_ids_are_safe_and_distinct() -> None:
    plan = plan_of(send("a-b", "a_b"), send("a_b", "end"), send("end", "x.y"), exit_("x.y"))
    nodes, edges, _ = parse_mermaid(to_mermaid(plan))
    assert all(re.fullmatch(r"\w+", nid) for nid in nodes)
    assert "end" not in nodes  # a Mermaid keyword
    assert edges == expected_edges(plan)


# ---------------------------------------------------------------------------------------- SVG


def box_of(group: ET.Element) -> Box:
    shape = next(child for child in group if child.tag in (SVG + "rect", SVG + "polygon"))
    if shape.tag == SVG + "rect":
        x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
        return x, y, x + float(shape.get("width", 0)), y + float(shape.get("height", 0))
    points = [tuple(map(float, p.split(","))) for p in shape.get("points", "").split()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def overlap(a: Box, b: Box, margin: float = 0.0) -> bool:
    return (
        a[0] < b[2] - margin
        and b[0] < a[2] - margin
        and a[1] < b[3] - margin
        and b[1] < a[3] - margin
    )


def inside(point: tuple[float, float], box: Box, margin: float = 1.0) -> bool:
    x, y = point
    return box[0] + margin < x < box[2] - margin and box[1] + margin < y < box[3] - margin


def sample_path(d: str) -> list[tuple[float, float]]:
    """Points along path data of absolute M, L, C and Q commands (all that the drawing uses)."""
    points: list[tuple[float, float]] = []
    for command, args in re.findall(r"([MLCQ])([^MLCQ]*)", d):
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", args)]
        pts = list(zip(nums[::2], nums[1::2], strict=True))
        if command == "M":
            points.append(pts[0])
            continue
        start = points[-1]
        for i in range(1, 21):
            t = i / 20
            ctrl = [start, pts[0]] if command == "L" else [start, *pts]
            while len(ctrl) > 1:  # de Casteljau
                ctrl = [
                    (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t) for a, b in pairwise(ctrl)
                ]
            points.append(ctrl[0])
    return points


def check_svg(plan: Plan) -> ET.Element:
    """Everything every picture must satisfy; returns the parsed SVG for further checks."""
    text = to_svg(plan)
    assert text == to_svg(plan) == to_svg(plan_from_dict(plan.to_dict()))
    root = ET.fromstring(text)
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    assert root.find(SVG + "title") is not None

    groups = {
        g.get("data-step"): g
        for g in root.iter(SVG + "g")
        if g.get("class", "").startswith("node ")
    }
    assert sorted(k for k in groups if k in plan.steps) == sorted(plan.steps)
    boxes: dict[str, Box] = {}
    for sid, group in groups.items():
        assert sid is not None
        assert group.find(SVG + "title") is not None
        assert group.findtext(SVG + "text") == sid
        boxes[sid] = box_of(group)
    trigger = [g for g in root.iter(SVG + "g") if g.get("class") == "trigger"]
    assert len(trigger) == 1
    boxes[""] = box_of(trigger[0])
    every = list(boxes.items())
    for i, (a, box_a) in enumerate(every):
        assert box_a[0] >= 0 and box_a[1] >= 0 and box_a[2] <= width and box_a[3] <= height
        for b, box_b in every[i + 1 :]:
            assert not overlap(box_a, box_b), f"{a!r} and {b!r} overlap"

    drawn: Counter[EdgeKey] = Counter()
    for group in root.iter(SVG + "g"):
        if group.get("class", "").split()[0] not in ("edge", "entry-edge"):
            continue
        paths = group.findall(SVG + "path")
        assert len(paths) == 1
        src, dst = group.get("data-from", ""), group.get("data-to", "")
        drawn[(src, dst, group.get("data-label", ""))] += 1
        for point in sample_path(paths[0].get("d", "")):
            assert -0.5 <= point[0] <= width + 0.5 and -0.5 <= point[1] <= height + 0.5
            for sid, box in boxes.items():
                if sid not in (src, dst):
                    assert not inside(point, box), f"edge {src}->{dst} runs through {sid!r}"
    assert drawn == expected_edges(plan)

    labels = [box_of(g) for g in root.iter(SVG + "g") if g.get("class") == "edge-label"]
    for i, label in enumerate(labels):
        assert label[2] <= width
        assert not any(overlap(label, box) for box in boxes.values())
        assert not any(overlap(label, other) for other in labels[i + 1 :])
    return root


def node_boxes(root: ET.Element) -> dict[str, Box]:
    return {
        str(g.get("data-step")): box_of(g)
        for g in root.iter(SVG + "g")
        if g.get("class", "").startswith("node ")
    }


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(SVG + "text")] + [
        t.text or "" for t in root.iter(SVG + "title")
    ]


def test_svg_of_welcome(welcome: Plan) -> None:
    root = check_svg(welcome)
    assert "Welcome series" in texts(root)
    assert "wait_for open of welcome, up to 2d" in texts(root)
    boxes = node_boxes(root)
    # layered top to bottom in the order the journey runs; both ways out of a wait side by side
    assert boxes["welcome"][3] < boxes["wait_for_open"][1] < boxes["wait_for_open"][3]
    assert boxes["wait_for_open"][3] < boxes["tips"][1] == boxes["reminder"][1]
    assert boxes["tips"][2] < boxes["reminder"][0]  # "open" is drawn left of "timeout"
    assert max(b[3] for k, b in boxes.items() if k != "done") < boxes["done"][1]
    labels = [
        g.findtext(SVG + "text") for g in root.iter(SVG + "g") if g.get("class") == "edge-label"
    ]
    assert Counter(labels) == Counter({"open": 1, "timeout": 2, "click": 1})


def test_wide_fan_out() -> None:
    cases = [
        PlanCase(when=f'contact.interest == "topic number {i}"', goto=f"s{i}") for i in range(4)
    ]
    plan = plan_of(
        PlanStep(id="pick", kind="branch", cases=cases, else_goto="s4"),
        *(send(f"s{i}", "done") for i in range(5)),
        exit_(),
    )
    root = check_svg(plan)
    boxes = node_boxes(root)
    tops = {boxes[f"s{i}"][1] for i in range(5)}
    assert len(tops) == 1  # one layer
    assert [boxes[f"s{i}"][0] for i in range(5)] == sorted(boxes[f"s{i}"][0] for i in range(5))
    _, edges, _ = parse_mermaid(to_mermaid(plan))
    assert edges == expected_edges(plan)


def test_fan_out_of_waits_and_a_split() -> None:
    """Chains of wait_for steps (two ways out each) under a five-way split, every way out of
    every wait_for meeting again at one exit: many long, converging edges."""
    variants = [PlanVariant(name=chr(97 + i), percent=20, goto=f"w{i}") for i in range(5)]
    steps = [PlanStep(id="ab", kind="split", variants=variants, winner_metric="click_rate")]
    for i in range(5):
        steps += [wait_for(f"w{i}", f"m{i}", "done"), send(f"m{i}", "done")]
    plan = plan_of(*steps, exit_())
    check_svg(plan)
    assert parse_mermaid(to_mermaid(plan))[1] == expected_edges(plan)


@pytest.mark.parametrize(
    "loop",
    [
        pytest.param(
            PlanStep(id="again", kind="goto", goto="first", max_times=3, next="done"), id="goto"
        ),
        pytest.param(send("again", "first"), id="next-back"),
        pytest.param(
            PlanStep(id="again", kind="goto", goto="again", max_times=2, next="done"), id="self"
        ),
    ],
)
def test_loops_are_drawn_back_on_the_right(loop: PlanStep) -> None:
    plan = plan_of(
        send("intro", "first"),
        wait_for("first", "second", "again"),
        send("second", "done"),
        loop,
        exit_(),
    )
    root = check_svg(plan)
    back = [g for g in root.iter(SVG + "g") if g.get("class") == "edge back"]
    assert [(g.get("data-from"), g.get("data-to")) for g in back] == [("again", loop.edges()[0][1])]
    right = max(b[2] for b in node_boxes(root).values())
    path = back[0].find(SVG + "path")
    assert path is not None and path.get("stroke-dasharray")
    assert max(x for x, _ in sample_path(path.get("d", ""))) > right + 10
    _, edges, dotted = parse_mermaid(to_mermaid(plan))
    assert edges == expected_edges(plan)
    assert dotted == ["again"]


def test_a_loop_between_neighbours_detours_through_the_gaps() -> None:
    """The loop's source and target both have a box to their right, which the loop must not
    cross on its way to the lane (check_svg samples every path against every box)."""
    plan = plan_of(
        wait_for("top", "a", "b"),
        wait_for("a", "loop", "done"),
        send("b", "b2"),
        PlanStep(id="loop", kind="goto", goto="a", max_times=2, next="done"),
        send("b2", "done"),
        exit_(),
    )
    boxes = node_boxes(check_svg(plan))
    assert boxes["loop"][2] < boxes["b2"][0] and boxes["a"][2] < boxes["b"][0]


def test_two_loops_get_their_own_lanes() -> None:
    plan = plan_of(
        wait_for("a", "b", "c"),
        PlanStep(id="b", kind="goto", goto="a", max_times=2, next="c"),
        PlanStep(id="c", kind="wait", seconds=3600, next="d"),
        PlanStep(id="d", kind="goto", goto="a", max_times=5, next="done"),
        exit_(),
    )
    root = check_svg(plan)
    lanes = []
    for g in root.iter(SVG + "g"):
        if g.get("class") == "edge back":
            path = g.find(SVG + "path")
            assert path is not None
            lanes.append(max(x for x, _ in sample_path(path.get("d", ""))))
    assert len(lanes) == 2 and lanes[0] != lanes[1]


HOSTILE = "<script>alert(\"x\")</script> & ]] [[ {{ }} |pipe| `tick` #quot; 'q'"


def test_hostile_text_is_escaped_in_both_outputs() -> None:
    plan = plan_of(
        send("step-one", "check", subject=HOSTILE[:38]),
        PlanStep(
            id="check",
            kind="branch",
            cases=[PlanCase(when=HOSTILE, goto="my-exit")],
            else_goto="x-y",
        ),
        PlanStep(id="my-exit", kind="exit", reason="done & dusted <b>"),
        PlanStep(id="x-y", kind="exit", reason="bell\x07 and \x00 nul"),
        name='Evil "name" <svg onload=alert(1)> & co',
        trigger_where='properties.x == "<img>"',
    )
    text = to_mermaid(plan)
    assert "<script" not in text and "<svg" not in text and "<img" not in text
    nodes, edges, _ = parse_mermaid(text)  # every line still parses: quotes never leak
    assert edges == expected_edges(plan)
    assert any(f"“{HOSTILE[:38]}”" == line for label in nodes.values() for line in label)

    svg = to_svg(plan)
    assert "<script" not in svg and "<svg onload" not in svg
    root = check_svg(plan)
    assert not [e for e in root.iter() if e.tag in (SVG + "script", "script")]
    shown = texts(root)
    assert any(HOSTILE[:20] in t for t in shown)  # the detail line (clipped) shows the subject
    assert 'Evil "name" <svg onload=alert(1)> & co' in shown
    edge = next(g for g in root.iter(SVG + "g") if g.get("data-to") == "my-exit")
    assert edge.get("data-label") == HOSTILE


def test_steps_that_are_not_there_are_drawn_as_missing() -> None:
    """A plan mid-edit (a target that is not a step) still draws, showing what is missing."""
    plan = plan_of(send("a", "ghost"), exit_())
    root = ET.fromstring(to_svg(plan))
    missing = [g for g in root.iter(SVG + "g") if "kind-missing" in g.get("class", "")]
    assert [g.get("data-step") for g in missing] == ["ghost"]
    assert 's_ghost["ghost<br/>(missing step)"]' in to_mermaid(plan)


def test_a_new_kind_draws_without_changes() -> None:
    plan = plan_of(PlanStep(id="fax", kind="send_fax", next="done"), exit_())
    root = check_svg(plan)
    assert "send_fax" in texts(root)
    assert 's_fax["fax<br/>send_fax"]' in to_mermaid(plan)


def test_a_sixty_step_chain() -> None:
    """Each wait_for goes on to the next step when the event comes, and skips one on timeout:
    59 long edges through dummy points, none through a box."""
    n = 60
    steps = [wait_for(f"w-{i}", f"w-{i + 1}", f"w-{min(i + 2, n - 1)}") for i in range(n - 1)]
    plan = plan_of(*steps, exit_(f"w-{n - 1}"))
    root = check_svg(plan)
    boxes = node_boxes(root)
    tops = [boxes[f"w-{i}"][1] for i in range(n)]
    assert tops == sorted(tops) and len(set(tops)) == n  # one step per layer, in order
    assert parse_mermaid(to_mermaid(plan))[1] == expected_edges(plan)


def test_step_summaries() -> None:
    assert step_summary(PlanStep(id="w", kind="wait", seconds=129600)) == ["wait 1d12h"]
    assert step_summary(
        PlanStep(id="w", kind="wait", until_field="webinar_at", offset_seconds=-3600)
    ) == ["wait until webinar_at - 1h"]
    assert step_summary(PlanStep(id="w", kind="wait", until_time="09:00")) == ["wait until 09:00"]
    event = PlanStep(
        id="f",
        kind="wait_for",
        seconds=86400,
        wait_event="event",
        wait_ref="purchase",
        where="x > 1",
    )
    assert step_summary(event) == ["wait_for event purchase, up to 1d", "where x > 1"]
    assert step_summary(
        PlanStep(id="u", kind="update_contact", add_tags=["a"], remove_tags=["b"], add_score=5)
    ) == ["update_contact: +a, -b, score +5"]
    assert step_summary(PlanStep(id="h", kind="webhook", url="https://crm.example/hook?x=1")) == [
        "webhook: crm.example/hook"
    ]
    assert step_summary(PlanStep(id="n", kind="notify_sales", via=["slack"], message="Hi")) == [
        "notify_sales via slack",
        "Hi",
    ]
    assert step_summary(PlanStep(id="e", kind="exit", reason="bought")) == ["exit: bought"]
    assert step_summary(PlanStep(id="g", kind="goto", goto="a", max_times=2)) == [
        "goto a, up to 2x"
    ]


def test_event_trigger_is_shown() -> None:
    plan = plan_of(exit_())
    plan = Plan(**{**plan.__dict__, "trigger_kind": "event", "trigger_value": "purchase",
                   "trigger_where": "properties.total > 50"})  # fmt: skip
    assert '    trigger(["event purchase<br/>where properties.total #62; 50"])' in to_mermaid(plan)


@pytest.mark.parametrize(
    "path", sorted((EXAMPLES / "campaigns").glob("*.yaml")), ids=lambda p: Path(p).stem
)
def test_every_demo_campaign(path: Path) -> None:
    """Branches, splits, goto loops and waits as the demo really writes them (compiled on their
    own: these tests are about drawing, not about the workspace's templates)."""
    plan = compile_campaign(load_model(load_yaml(path, display=path.name), Campaign))
    check_svg(plan)
    assert parse_mermaid(to_mermaid(plan))[1] == expected_edges(plan)


def test_notes_add_a_figure_line_to_the_boxes_they_name(welcome: Plan) -> None:
    """The dashboard writes live figures into the picture: each named step's box gets one more
    line and grows to hold it; other boxes and the trigger are as without notes."""
    first = next(iter(welcome.steps))
    plain = ET.fromstring(to_svg(welcome))
    noted = ET.fromstring(to_svg(welcome, notes={first: "12 here now · 340 sent", "nope": "x"}))

    def groups(root: ET.Element) -> dict[str | None, ET.Element]:
        return {g.get("data-step"): g for g in root.iter(SVG + "g") if g.get("data-step")}

    before, after = groups(plain), groups(noted)
    lines = [t.text for t in after[first].iter(SVG + "text")]
    assert lines[-1] == "12 here now · 340 sent"
    assert [t.get("class") for t in after[first].iter(SVG + "text")][-1] == "note"
    assert len(lines) == len(list(before[first].iter(SVG + "text"))) + 1
    assert box_of(after[first])[3] - box_of(after[first])[1] > (
        box_of(before[first])[3] - box_of(before[first])[1]
    )
    for step in welcome.steps:
        if step != first:
            texts = [t.text for t in after[step].iter(SVG + "text")]
            assert texts == [t.text for t in before[step].iter(SVG + "text")]
