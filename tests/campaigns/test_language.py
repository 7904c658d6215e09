"""The whole campaign language in one valid file: it loads, compiles to a plan that round-trips,
and the engine says plainly which of its features it cannot run yet."""

from __future__ import annotations

from pathlib import Path

from campaigns import load_workspace
from campaigns.plan import PlanCase, PlanVariant, plan_from_dict
from tests.support import copy_workspace
from workflows.capabilities import unsupported

KITCHEN_SINK = """\
id: lead-nurture
name: Lead nurture
tags: [b2b, nurture]
trigger:
  event: demo_requested
  where: properties.company_size > 10
audience: contact.country == "DE"
reentry: {after: 90d}
goal: {event: purchase}
exit_when: ['has_tag("customer")']
send_window: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}
frequency_cap: {max: 3, per: 7d}
steps:
  - id: intro
    send_email:
      template: welcome
      subject: "Hello {{ contact.first_name | default('there') }}"
      from: Sales <sales@acme.example>
  - id: ab
    split:
      variants:
        - {name: short, percent: 50, goto: short_wait}
        - {name: long, percent: 50, goto: long_wait}
      auto_winner: {metric: click_rate, after: 3d}
  - id: short_wait
    wait: {duration: 1d}
    next: route
  - id: long_wait
    wait: {until_field: webinar_at, before: 1h}
    next: route
  - id: route
    branch:
      cases:
        - {when: 'opened("intro")', goto: score}
      else: nudge
  - id: nudge
    wait_for:
      event: pricing_viewed
      where: properties.plan == "team"
      timeout: 5d
      on_event: score
      on_timeout: again
  - id: again
    goto: {step: nudge, max_times: 2}
  - id: score
    update_contact: {add_score: 20, add_tags: [warm]}
  - id: tell
    notify_sales: {message: "{{ contact.email }} is warm", via: [email, chat]}
  - id: hook
    webhook: {url: "https://hooks.acme.example/crm", body: {stage: warm}}
  - id: done
    exit: {reason: nurtured}
"""


def _load(tmp_path: Path) -> object:
    root = copy_workspace(tmp_path)
    config = root / "workspace.yaml"
    config.write_text(config.read_text() + "webhook_hosts: [hooks.acme.example]\n")
    (root / "campaigns" / "lead-nurture.yaml").write_text(KITCHEN_SINK)
    return load_workspace(root)


def test_every_feature_loads_and_compiles(tmp_path: Path) -> None:
    ws = _load(tmp_path)
    plan = ws.plans["lead-nurture"]  # type: ignore[attr-defined]
    assert plan.trigger_kind == "event" and plan.trigger_value == "demo_requested"
    assert plan.trigger_where == "properties.company_size > 10"
    assert (plan.reentry, plan.reentry_seconds) == ("after", 90 * 86400)
    assert plan.goal_event == "purchase" and plan.exit_when == ['has_tag("customer")']
    assert (plan.window_start, plan.window_end, plan.cap_max) == ("09:00", "17:00", 3)
    steps = plan.steps
    assert steps["intro"].from_addr == "Sales <sales@acme.example>"
    assert steps["ab"].variants == [
        PlanVariant("short", 50, "short_wait"),
        PlanVariant("long", 50, "long_wait"),
    ]
    assert steps["ab"].winner_metric == "click_rate"
    assert steps["long_wait"].until_field == "webinar_at"
    assert steps["long_wait"].offset_seconds == -3600
    assert steps["route"].cases == [PlanCase('opened("intro")', "score")]
    assert steps["route"].edges() == [('opened("intro")', "score"), ("else", "nudge")]
    assert steps["again"].edges() == [("up to 2x", "nudge"), ("after 2x", "score")]
    assert steps["score"].next == "tell" and steps["score"].add_score == 20
    assert steps["tell"].via == ["email", "chat"]
    assert steps["hook"].body == {"stage": "warm"}
    assert steps["done"].edges() == [] and steps["done"].reason == "nurtured"


def test_the_plan_round_trips_and_its_version_is_its_content(tmp_path: Path) -> None:
    plan = _load(tmp_path).plans["lead-nurture"]  # type: ignore[attr-defined]
    assert plan_from_dict(plan.to_dict()) == plan
    again = _load(tmp_path / "again").plans["lead-nurture"]  # type: ignore[attr-defined]
    assert again.version == plan.version
    changed = KITCHEN_SINK.replace("max_times: 2", "max_times: 3")
    root = tmp_path / "changed"
    root.mkdir()
    ws_root = copy_workspace(root)
    config = ws_root / "workspace.yaml"
    config.write_text(config.read_text() + "webhook_hosts: [hooks.acme.example]\n")
    (ws_root / "campaigns" / "lead-nurture.yaml").write_text(changed)
    assert load_workspace(ws_root).plans["lead-nurture"].version != plan.version


def test_the_engine_runs_every_feature_of_the_kitchen_sink(tmp_path: Path) -> None:
    ws = _load(tmp_path)
    assert unsupported(ws.plans["lead-nurture"]) == []  # type: ignore[attr-defined]
