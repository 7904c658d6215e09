"""A plan names the exact files its emails are built from, so its version follows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns import CampaignError, load_workspace
from campaigns.diff import diff_plans
from campaigns.templates import MISSING, content_hash
from tests.support import copy_workspace


def test_a_plan_records_the_hash_of_each_file_its_emails_use(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    ws = load_workspace(root)
    welcome = ws.plans["welcome"]
    assert sorted(welcome.templates) == ["tips", "welcome", "welcome-reminder"]
    text = (root / "emails" / "welcome.mjml").read_text()
    assert welcome.templates["welcome"] == {"welcome.mjml": content_hash(text)}
    assert ws.template_texts[content_hash(text)] == text
    onboarding = ws.plans["newsletter-onboarding"]
    partial = (root / "emails" / "partials" / "shop-note.mjml").read_text()
    assert onboarding.templates["welcome-hiking"]["partials/shop-note.mjml"] == content_hash(
        partial
    )


def test_editing_a_template_changes_the_version_of_the_campaigns_that_send_it(
    tmp_path: Path,
) -> None:
    root = copy_workspace(tmp_path)
    before = load_workspace(root).plans
    path = root / "emails" / "tips.mjml"
    path.write_text(path.read_text().replace("<mj-text", "<mj-text color='#111111'", 1))
    after = load_workspace(root).plans
    assert after["welcome"].version != before["welcome"].version
    assert after["abandoned-cart"].version == before["abandoned-cart"].version
    changes = [str(c) for c in diff_plans(before["welcome"], after["welcome"])]
    assert changes == ["~ template tips: tips.mjml"]


def test_a_partial_a_layout_and_a_text_part_are_part_of_the_template(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    before = load_workspace(root).plans
    partial = root / "emails" / "partials" / "shop-note.mjml"
    partial.write_text(partial.read_text().replace("Bristol", "Bath"))
    (root / "emails" / "tips.txt").write_text("Tips for {{ contact.email }}\n")
    layouts = root / "emails" / "layouts"
    layouts.mkdir()
    (layouts / "plain.mjml").write_text("<mjml><mj-body><!-- drip:content --></mj-body></mjml>")
    reminder = root / "emails" / "welcome-reminder.mjml"
    reminder.write_text("{# layout: plain #}\n" + reminder.read_text())
    after = load_workspace(root).plans
    assert after["newsletter-onboarding"].version != before["newsletter-onboarding"].version
    assert [str(c) for c in diff_plans(before["welcome"], after["welcome"])] == [
        "~ template tips: tips.txt",
        "~ template welcome-reminder: layouts/plain.mjml, welcome-reminder.mjml",
    ]
    # a layout named but absent is recorded as missing, so rendering says "unknown layout"
    (layouts / "plain.mjml").unlink()
    missing = load_workspace(root).plans["welcome"].templates["welcome-reminder"]
    assert missing["layouts/plain.mjml"] == MISSING


def test_a_campaign_without_email_keeps_its_version_without_templates(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    (root / "campaigns" / "tagger.yaml").write_text(
        "id: tagger\nname: Tagger\ntrigger: {event: signed_up}\n"
        "steps:\n  - id: tag\n    update_contact: {add_tags: [new]}\n"
    )
    plan = load_workspace(root).plans["tagger"]
    assert plan.templates == {}
    assert plan.version == load_workspace(root).plans["tagger"].version


def test_a_template_that_cannot_be_read_is_a_problem_of_the_workspace(tmp_path: Path) -> None:
    root = copy_workspace(tmp_path)
    (root / "emails" / "tips.mjml").write_bytes(b"<mj-section>\xff\xfe</mj-section>")
    with pytest.raises(CampaignError, match="cannot read template tips"):
        load_workspace(root)
