"""``sales.yaml``: the example loads, and every mistake names the file, line, column and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from campaigns import CampaignError
from campaigns.sales import STAGES, SalesPlan, load_sales_plan, stage_rank
from campaigns.workspace import load_workspace
from tests.support import EXAMPLES


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sales.yaml"
    path.write_text(text)
    with pytest.raises(CampaignError) as caught:
        load_sales_plan(path, display="sales.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_example_loads() -> None:
    plan = load_sales_plan(EXAMPLES / "sales.yaml")
    assert plan.enabled
    assert plan.scoring.half_life_seconds == 30 * 86400
    assert [r.id for r in plan.rules("page")] == ["pricing", "careers-page"]
    assert plan.scoring.caps == {"open": 10, "click": 25}
    assert [f.id for f in plan.scoring.fit] == ["decision-maker", "club-or-school", "big-group"]
    assert list(plan.stages) == ["lead", "mql", "sql", "customer"]
    assert [t.team for t in plan.territories] == ["uk", "europe", "uk"]
    assert plan.follow_up.working_hours.timezone == "Europe/London"
    assert load_workspace(EXAMPLES).sales == plan


def test_no_file_is_an_empty_plan(tmp_path: Path) -> None:
    plan = load_sales_plan(tmp_path / "sales.yaml")
    assert plan == SalesPlan() and not plan.enabled
    assert stage_rank("mql") == STAGES.index("mql") and stage_rank("renamed") == 0


def test_a_bad_condition_points_at_its_column(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        """\
scoring:
  behaviour:
    - {id: opened, on: open, points: 2}
    - {id: pricing, on: page, where: 'properties.path ==', points: 5}
""",
    )
    # line 4; the column is that of the end of the condition, inside the quoted text
    assert problem.startswith("sales.yaml:4:")
    assert "scoring.behaviour.pricing.where: expected a value after '=='" in problem
    column = int(problem.split(":")[2])
    line = "    - {id: pricing, on: page, where: 'properties.path ==', points: 5}"
    assert line.index("'properties") < column - 1 <= line.index("', points")


def test_a_fit_rule_cannot_test_events(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        """\
scoring:
  fit:
    - id: buyer
      when: 'event("purchase")'
      points: 5
""",
    )
    assert problem.startswith("sales.yaml:4:")
    assert "scoring.fit.buyer.when: can only test the contact here" in problem


def test_a_fit_rule_cannot_test_the_score_it_makes(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        """\
scoring:
  fit:
    - {id: keen, when: 'contact.country == "GB" and contact.score >= 10', points: 5}
""",
    )
    assert problem.startswith("sales.yaml:3:")
    assert "scoring.fit.keen.when: a fit rule cannot test contact.score" in problem


def test_a_territory_naming_an_unknown_team_gets_a_hint(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        """\
teams:
  - id: emea
  - id: americas
territories:
  - {team: emae, when: 'contact.country == "DE"'}
  - {team: americas}
""",
    )
    assert problem.startswith("sales.yaml:5:")
    assert "territories.0.team: team 'emae' is not in teams (did you mean 'emea'?)" in problem


def test_rule_ids_are_unique_across_behaviour_and_fit(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
scoring:
  behaviour:
    - {id: opened, on: open, points: 2}
    - {id: opened, on: click, points: 5}
  fit:
    - {id: opened, when: 'contact.vip == true', points: 5}
""",
    )
    assert [p.split(": ", 1)[0] for p in problems] == ["sales.yaml:4:12", "sales.yaml:6:12"]
    assert all("rule id 'opened' is used twice" in p for p in problems)


def test_escalation_must_come_after_the_reminder(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        """\
follow_up:
  remind_after: 8
  escalate_after: 4
""",
    )
    assert problem.startswith("sales.yaml:2:")
    assert "follow_up" in problem and "escalate_after must be later than remind_after" in problem


def test_an_unknown_time_zone_is_named(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        """\
follow_up:
  working_hours: {timezone: Europe/Lodnon, start: "09:00", end: "17:00"}
""",
    )
    assert problem.startswith("sales.yaml:2:")
    assert "follow_up.working_hours.timezone: unknown time zone 'Europe/Lodnon'" in problem


def test_schema_mistakes_name_the_field(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
scoring:
  behaviour:
    - {id: opened, on: opne, points: 2}
  caps: {open: 0}
""",
    )
    assert any(p.startswith("sales.yaml:3:") and "on" in p for p in problems), problems
    assert any(p.startswith("sales.yaml:4:") and "caps" in p for p in problems), problems


def test_a_broken_sales_file_is_a_workspace_problem(tmp_path: Path) -> None:
    root = tmp_path / "acme"
    shutil.copytree(EXAMPLES, root)
    text = (root / "sales.yaml").read_text().replace("team: europe,", "team: eu,")
    (root / "sales.yaml").write_text(text)
    with pytest.raises(CampaignError) as caught:
        load_workspace(root)
    assert "sales.yaml" in str(caught.value) and "team 'eu' is not in teams" in str(caught.value)
