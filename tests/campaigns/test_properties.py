"""Property tests over generated campaigns: valid ones load, compile and round-trip with a stable
version; anything else is refused with our errors and nothing else."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from campaigns import CampaignError, load_workspace
from campaigns.plan import plan_from_dict
from tests.support import EXAMPLES

TEMPLATES = ["welcome", "tips", "welcome-reminder"]
TEXT = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=40
).filter(str.strip)
IDS = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
DURATIONS = st.sampled_from(["1m", "90m", "2h", "1d", "2d12h", "P3D", "PT4H", "1w"])
CONDITIONS = st.sampled_from(
    [
        "contact.score >= 50",
        'has_tag("vip") and not contact.country == "DE"',
        'contact.plan in ["pro", "team"] or contact.company exists',
        'event("purchase", within=30d, where=properties.amount > 100)',
    ]
)


@st.composite
def campaigns(draw: st.DrawFn) -> dict[str, Any]:
    """A valid campaign: a chain of simple steps, with branches and waits pointing forward (so
    every step is reachable and no loop lacks a wait), ending in an exit."""
    n = draw(st.integers(min_value=1, max_value=12))
    ids = [f"s{i}_{draw(IDS)}" for i in range(n)] + ["end"]
    steps: list[dict[str, Any]] = []
    for i, sid in enumerate(ids[:-1]):
        forward = st.sampled_from(ids[i + 1 :])
        kind = draw(
            st.sampled_from(["send_email", "wait", "update_contact", "branch", "wait_for", "split"])
        )
        step: dict[str, Any] = {"id": sid}
        if kind == "send_email":
            step["send_email"] = {
                "template": draw(st.sampled_from(TEMPLATES)),
                "subject": draw(TEXT),
            }
        elif kind == "wait":
            step["wait"] = {"duration": draw(DURATIONS)}
        elif kind == "update_contact":
            step["update_contact"] = {"add_tags": [draw(IDS)], "add_score": draw(st.integers(1, 9))}
        elif kind == "branch":
            step["branch"] = {
                "cases": [{"when": draw(CONDITIONS), "goto": draw(forward)}],
                "else": ids[i + 1],
            }
        elif kind == "wait_for":
            step["wait_for"] = {
                "event": draw(st.sampled_from(["purchase", "demo_requested"])),
                "timeout": draw(DURATIONS),
                "on_event": draw(forward),
                "on_timeout": ids[i + 1],
            }
        else:
            a = draw(st.integers(1, 99))
            step["split"] = {
                "variants": [
                    {"name": "a", "percent": a, "goto": ids[i + 1]},
                    {"name": "b", "percent": 100 - a, "goto": draw(forward)},
                ]
            }
        steps.append(step)
    steps.append({"id": "end", "exit": {"reason": "done"}})
    return {
        "id": "generated",
        "name": draw(TEXT),
        "trigger": {"form": "newsletter"},
        "steps": steps,
    }


def _dump(data: dict[str, Any]) -> str:
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False  # ruamel writes some flow scalars it cannot read back ("?0")
    yaml.dump(data, out)
    return out.getvalue()


def _workspace(tmp: Path, text: str) -> Path:
    """The demo's settings, forms and templates, with the generated campaign as its only one."""
    root = tmp / "acme"
    if not root.exists():
        for part in ("forms", "emails"):
            shutil.copytree(EXAMPLES / part, root / part)
        shutil.copy(EXAMPLES / "workspace.yaml", root / "workspace.yaml")
        (root / "campaigns").mkdir()
    (root / "campaigns" / "generated.yaml").write_text(text)
    return root


FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(data=campaigns())
def test_valid_campaigns_load_compile_and_round_trip(tmp_path: Path, data: dict[str, Any]) -> None:
    text = _dump(data)
    plan = load_workspace(_workspace(tmp_path, text)).plans["generated"]
    assert list(plan.steps) == [s["id"] for s in data["steps"]]
    assert plan_from_dict(plan.to_dict()) == plan
    again = load_workspace(_workspace(tmp_path, text)).plans["generated"]
    assert again.version == plan.version  # same YAML, same version


@FAST
@given(data=campaigns(), cut=st.integers(0, 10_000), junk=st.text(max_size=20))
def test_mangled_campaigns_raise_only_our_errors(
    tmp_path: Path, data: dict[str, Any], cut: int, junk: str
) -> None:
    text = _dump(data)
    at = cut % (len(text) + 1)
    mangled = text[:at] + junk + text[at + len(junk) :]
    try:
        load_workspace(_workspace(tmp_path, mangled))
    except CampaignError as exc:
        assert exc.problems
        assert all(p.file.startswith("acme/") for p in exc.problems)
