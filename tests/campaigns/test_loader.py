"""The campaign language as the foundation needs it: the demo loads, broken files say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns import CampaignError, compile_campaign, load_workspace
from campaigns.durations import parse_duration
from campaigns.loader import load_model, load_yaml
from campaigns.schema import Campaign
from campaigns.templates import template_files
from tests.support import EXAMPLES, copy_workspace


def test_demo_workspace_loads_and_compiles() -> None:
    ws = load_workspace(EXAMPLES)
    plan = ws.plans["welcome"]
    assert plan.entry == "welcome"
    assert plan.trigger_form == "newsletter"
    wait = plan.steps["wait_for_open"]
    assert (wait.kind, wait.wait_event, wait.wait_ref, wait.seconds) == (
        "wait_for",
        "open",
        "welcome",
        172800,
    )
    assert (wait.on_event, wait.on_timeout) == ("tips", "reminder")
    assert plan.steps["tips"].next == "wait_for_click"  # implicit: the step below
    assert plan.steps["reminder"].next == "done"


def test_compiling_is_deterministic() -> None:
    a = load_workspace(EXAMPLES).plans["welcome"]
    ws = load_workspace(EXAMPLES)
    files, _ = template_files(EXAMPLES / "emails", ws.templates, ws.config.layout)
    b = compile_campaign(ws.campaigns["welcome"], files)
    assert a == b and a.version == b.version and a.version.startswith("v")


def test_a_changed_campaign_gets_a_new_version(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path, {"timeout: 2d": "timeout: 3d"})
    assert (
        load_workspace(root).plans["welcome"].version
        != load_workspace(EXAMPLES).plans["welcome"].version
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2d", 172800),
        ("36h", 129600),
        ("1d12h", 129600),
        ("P2D", 172800),
        ("PT90M", 5400),
        ("45s", 45),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


# (replacement in welcome.yaml, expected "line:col: path: message")
BROKEN = [
    (
        "timeout: 2d",
        "timeout: 2 dayz",
        "19:16: steps.wait_for_open.wait_for.timeout: '2 dayz' is not a duration "
        "(examples: 2d, 36h, P2D)",
    ),
    (
        "on_timeout: reminder",
        "on_timeout: remindr",
        "21:19: steps.wait_for_open.wait_for.on_timeout: step 'remindr' does not exist "
        "(did you mean 'reminder'?)",
    ),
    (
        "      template: tips\n",
        "      tempalte: tips\n",
        "25:7: steps.tips.send_email.tempalte: unknown key 'tempalte' (did you mean 'template'?)",
    ),
    (
        "template: welcome-reminder",
        "template: goodbye",
        "43:17: steps.reminder.send_email.template: template 'goodbye' does not exist "
        "(known: black-friday, cart-last-chance, cart-reminder, group-case-study, "
        "group-trip-guide, newsletter-december, receipt, sleeping-bag-offer, and 11 more)",
    ),
    (
        "  form: newsletter",
        "  form: signup",
        "8:9: trigger.form: form 'signup' does not exist "
        "(known: catalogue, newsletter, preferences, webinar)",
    ),
    (
        "  - id: tips\n",
        "  - id: welcome\n",
        "23:9: steps.welcome.id: step id 'welcome' is already used by an earlier step",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN, ids=[b[1].strip() for b in BROKEN])
def test_broken_campaigns_name_file_line_column_and_field(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    root = copy_workspace(tmp_path, {old: new})
    with pytest.raises(CampaignError) as info:
        load_workspace(root)
    messages = [str(p) for p in info.value.problems]
    assert any(m.startswith("acme/campaigns/welcome.yaml:") for m in messages), messages
    assert any(m.endswith(expected) for m in messages), messages


def test_unreachable_step_is_an_error(tmp_path: Path) -> None:
    root = copy_workspace(
        tmp_path,
        {
            "    next: done\n\n  - id: reminder": "    next: done\n\n  - id: orphan\n    exit:\n\n"
            "  - id: reminder"
        },
    )
    with pytest.raises(CampaignError, match="step 'orphan' can never be reached"):
        load_workspace(root)


def test_yaml_syntax_error_points_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("id: x\nname: [unclosed\n")
    with pytest.raises(CampaignError) as info:
        load_model(load_yaml(path, display="c.yaml"), Campaign)
    assert str(info.value).startswith("c.yaml:3:1: YAML:")


@pytest.mark.parametrize(
    "text", ["a: !!python/object:os.system x\n", "a: &x [1]\nb: *x\n", "a: 1\na: 2\n"]
)
def test_unsafe_yaml_is_refused_cleanly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(CampaignError):
        load_yaml(path)
