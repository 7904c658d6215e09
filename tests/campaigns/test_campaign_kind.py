"""``kind: marketing | transactional`` and ``without_consent: allowed``: what the plan carries to
the send, and that the plans of every campaign written before them keep their versions."""

from __future__ import annotations

from pathlib import Path

import yaml

from campaigns.compile import compile_campaign
from campaigns.plan import plan_from_dict
from campaigns.schema import Campaign
from tests.engine_support import workspace_with

BASE = """\
id: offer
name: Offer
trigger: {event: purchase}
steps:
  - id: offer
    send_email: {template: welcome, subject: An offer}
"""


def _plan(tmp_path: Path, extra: str = "") -> tuple[bool, bool, str]:
    text = BASE.replace("trigger:", f"{extra}trigger:") if extra else BASE
    plan = workspace_with(tmp_path, text).plans["offer"]
    return plan.marketing, plan.consent_required, plan.version


def test_the_kind_reaches_the_plan_and_the_default_keeps_old_versions(tmp_path: Path) -> None:
    default = _plan(tmp_path / "a")
    assert default[:2] == (True, True)
    assert _plan(tmp_path / "b", "kind: marketing\n") == default  # same version as before
    marketing_allowed = _plan(tmp_path / "c", "without_consent: allowed\n")
    assert marketing_allowed[:2] == (True, False) and marketing_allowed[2] != default[2]
    transactional = _plan(tmp_path / "d", "kind: transactional\n")
    assert transactional[:2] == (False, False) and transactional[2] != default[2]


def test_a_plan_stored_before_the_kind_existed_is_marketing_that_asks_for_consent() -> None:
    campaign = Campaign.model_validate(yaml.safe_load(BASE))
    stored = compile_campaign(campaign).to_dict()
    for key in ("marketing", "consent_required"):
        stored.pop(key)
    plan = plan_from_dict(stored)
    assert (plan.marketing, plan.consent_required) == (True, True)
