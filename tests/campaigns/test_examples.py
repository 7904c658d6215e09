"""The demo workspace is also the example library: every campaign in it loads, matches the JSON
Schema editors use, compiles to a plan that shows the feature it exists to show, and every
template and form page it needs renders."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy.engine import Engine

from campaigns.conditions import ConditionFacts, evaluate, parse_condition
from campaigns.jsonschema import broadcast_json_schema, campaign_json_schema
from campaigns.loader import load_yaml
from campaigns.plan import Plan, PlanCase, PlanVariant
from campaigns.workspace import Workspace, load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.hits import TRAP_URL
from contacts.models import Contact
from drip.settings import Settings
from emails import Renderer
from emails.data_check import needs_of
from tests.support import EXAMPLES, api_client

CAMPAIGNS = {
    "welcome",
    "abandoned-cart",
    "post-purchase-cross-sell",
    "lead-nurture",
    "re-engagement",
    "webinar-reminders",
    "newsletter-onboarding",
}
SCHEMA_LINE = "# yaml-language-server: $schema=../../../schema/campaign.schema.json"
SHOP = "https://acme.example/"


@pytest.fixture(scope="module")
def demo() -> Workspace:
    return load_workspace(EXAMPLES)


def _kinds(plan: Plan, kind: str) -> list[str]:
    return [s.id for s in plan.steps.values() if s.kind == kind]


def test_the_demo_workspace_has_exactly_the_example_campaigns(demo: Workspace) -> None:
    assert set(demo.campaigns) == CAMPAIGNS
    assert set(demo.plans) == CAMPAIGNS
    assert {"newsletter", "webinar", "preferences"} <= set(demo.forms)


@pytest.mark.parametrize("campaign_id", sorted(CAMPAIGNS))
def test_each_file_is_named_after_its_campaign_and_matches_the_json_schema(
    campaign_id: str,
) -> None:
    path = EXAMPLES / "campaigns" / f"{campaign_id}.yaml"
    assert path.read_text().splitlines()[0] == SCHEMA_LINE
    data = load_yaml(path).data
    assert data["id"] == campaign_id
    validator = Draft202012Validator(campaign_json_schema())
    assert [e.message for e in validator.iter_errors(data)] == []


def test_every_example_uses_its_own_templates(demo: Workspace) -> None:
    used = {s.template for p in demo.plans.values() for s in p.steps.values() if s.template}
    used |= {name for p in demo.broadcast_plans.values() for name in p.templates}
    # the transactional API's (the README's receipt): they read the call's ``data``
    used |= {name for name in demo.templates if needs_of(demo, name, None).needed}
    assert used == set(demo.templates)  # no template missing, none left over


BROADCAST_SCHEMA_LINE = "# yaml-language-server: $schema=../../../schema/broadcast.schema.json"


@pytest.mark.parametrize("broadcast_id", ["black-friday", "newsletter-december"])
def test_each_broadcast_file_is_named_after_it_and_matches_the_json_schema(
    demo: Workspace, broadcast_id: str
) -> None:
    path = EXAMPLES / "broadcasts" / f"{broadcast_id}.yaml"
    assert path.read_text().splitlines()[0] == BROADCAST_SCHEMA_LINE
    data = load_yaml(path).data
    assert data["id"] == broadcast_id and broadcast_id in demo.broadcast_plans
    validator = Draft202012Validator(broadcast_json_schema())
    assert [e.message for e in validator.iter_errors(data)] == []


def test_black_friday_tests_two_subjects_on_a_topic_and_a_segment(demo: Workspace) -> None:
    plan = demo.broadcast_plans["black-friday"]
    assert (plan.topic, plan.audience) == ("deals", 'not has_tag("dormant")')
    assert [v["id"] for v in plan.variants] == ["plain", "personal"]
    assert {v["template"] for v in plan.variants} == {"black-friday"}
    assert len({v["subject"] for v in plan.variants}) == 2
    assert (plan.ab_sample_percent, plan.ab_metric, plan.ab_wait_seconds) == (10, "opens", 14400)
    assert plan.utm_for("personal")["campaign"] == "black-friday-2026"
    assert plan.topic in {t.id for t in demo.config.topics}


def test_the_december_newsletter_goes_out_at_nine_in_each_zone(demo: Workspace) -> None:
    plan = demo.broadcast_plans["newsletter-december"]
    assert (plan.send_at, plan.local_time) == ("2026-12-10T09:00:00", True)
    assert (plan.topic, plan.audience, plan.variants) == ("trails", "", [])


def test_abandoned_cart_ends_at_the_purchase(demo: Workspace) -> None:
    plan = demo.plans["abandoned-cart"]
    assert (plan.trigger_kind, plan.trigger_value) == ("event", "cart_abandoned")
    assert plan.goal_event == "purchase" and plan.goal_where == ""
    steps = plan.steps
    assert plan.entry == "wait_an_hour" and steps["wait_an_hour"].seconds == 3600
    assert steps["wait_an_hour"].next == "reminder"
    wait = steps["wait_for_purchase"]
    assert (wait.wait_event, wait.wait_ref, wait.seconds) == ("event", "purchase", 86400)
    assert wait.edges() == [("event", "done"), ("timeout", "last_chance")]
    assert steps["last_chance"].template == "cart-last-chance"
    assert steps["last_chance"].next == "done" and steps["done"].kind == "exit"


def test_cross_sell_filters_the_trigger_and_the_goal(demo: Workspace) -> None:
    plan = demo.plans["post-purchase-cross-sell"]
    assert (plan.trigger_event, plan.trigger_where) == (
        "purchase",
        'properties.category == "tents"',
    )
    assert (plan.reentry, plan.reentry_seconds) == ("after", 90 * 86400)
    assert plan.goal_event == "purchase"
    assert plan.goal_where == 'properties.category == "sleeping-bags"'
    steps = plan.steps
    assert steps["let_it_arrive"].seconds == 3 * 86400
    click = steps["wait_for_click"]
    assert (click.wait_event, click.wait_ref, click.seconds) == (
        "click",
        "sleeping_bag_offer",
        7 * 86400,
    )
    assert steps[click.on_event].add_tags == ["interested-sleeping-bags"]
    assert steps[click.on_timeout].kind == "exit"


def test_lead_nurture_scores_loops_and_tells_sales(demo: Workspace) -> None:
    plan = demo.plans["lead-nurture"]
    assert (plan.trigger_kind, plan.trigger_value) == ("tag_added", "b2b-lead")
    assert plan.audience == 'not has_tag("customer")'
    assert plan.exit_when == ['has_tag("customer")']
    steps = plan.steps
    click = steps["wait_for_guide_click"]
    assert steps[click.on_event].add_score == 20
    assert steps[click.on_event].next == click.on_timeout == "check_score"
    branch = steps["check_score"]
    assert branch.cases == [PlanCase("contact.score >= 50", "tell_sales")]
    assert branch.else_goto == "case_study"
    assert _kinds(plan, "notify_sales") == ["tell_sales"]
    assert "{{ contact.email }}" in steps["tell_sales"].message
    assert steps[steps["tell_sales"].next or ""].kind == "exit"
    assert _kinds(plan, "goto") == ["check_again"]
    loop = steps["check_again"]
    assert (loop.goto, loop.max_times) == ("check_score", 2)
    # the wait sits inside the loop: case_study -> wait -> goto -> branch
    assert steps["case_study"].next == "wait_a_few_days"
    assert steps["wait_a_few_days"].next == "check_again"
    assert steps[loop.next or ""].kind == "exit"  # after the second loop


def test_re_engagement_tests_two_subjects_politely(demo: Workspace) -> None:
    plan = demo.plans["re-engagement"]
    assert (plan.trigger_kind, plan.trigger_value) == ("manual", "")
    assert plan.audience == 'not has_tag("engaged")'
    assert (plan.window_days, plan.window_start, plan.window_end) == (
        ["mon", "tue", "wed", "thu", "fri"],
        "09:00",
        "17:00",
    )
    assert (plan.cap_max, plan.cap_seconds) == (2, 7 * 86400)
    split = plan.steps[plan.entry]
    assert split.kind == "split"
    assert split.variants == [
        PlanVariant("a", 50, "miss_you_a"),
        PlanVariant("b", 50, "miss_you_b"),
    ]
    assert (split.winner_metric, split.winner_after_seconds) == ("open_rate", 2 * 86400)
    sends = [plan.steps[v.goto] for v in split.variants]
    assert {s.template for s in sends} == {"we-miss-you"}
    assert len({s.subject for s in sends}) == 2
    for send in sends:
        wait = plan.steps[send.next or ""]
        assert (wait.wait_event, wait.wait_ref) == ("click", send.id)
        assert plan.steps[wait.on_event].add_tags == ["re-engaged"]
        assert plan.steps[wait.on_event].remove_tags == ["dormant"]
        assert plan.steps[wait.on_timeout].add_tags == ["dormant"]
        assert plan.steps[plan.steps[wait.on_timeout].next or ""].kind == "exit"


def test_webinar_reminders_wait_around_the_webinar_time(demo: Workspace) -> None:
    plan = demo.plans["webinar-reminders"]
    assert (plan.trigger_kind, plan.trigger_value) == ("field_changed", "webinar_at")
    waits = [plan.steps[s] for s in _kinds(plan, "wait")]
    assert [(w.until_field, w.offset_seconds) for w in waits] == [
        ("webinar_at", -86400),
        ("webinar_at", -3600),
        ("webinar_at", 7200),
    ]
    # each wait is followed by its own email
    assert [plan.steps[w.next or ""].template for w in waits] == [
        "webinar-reminder",
        "webinar-starting-soon",
        "webinar-recording",
    ]


def test_newsletter_onboarding_branches_on_the_form_answer(demo: Workspace) -> None:
    plan = demo.plans["newsletter-onboarding"]
    assert plan.trigger_form == "preferences"
    branch = plan.steps[plan.entry]
    assert branch.kind == "branch"
    assert branch.cases == [
        PlanCase('contact.interest == "hiking"', "welcome_hiking"),
        PlanCase('contact.interest == "climbing"', "welcome_climbing"),
    ]
    assert branch.else_goto == "welcome_all_rounder"
    exits = set()
    for start, tag in (
        ("welcome_hiking", "hiking"),
        ("welcome_climbing", "climbing"),
        ("welcome_all_rounder", "all-rounder"),
    ):
        send = plan.steps[start]
        tagging = plan.steps[send.next or ""]
        assert send.kind == "send_email" and tagging.add_tags == [tag]
        exits.add(tagging.next)
    assert exits == {"done"} and plan.steps["done"].kind == "exit"


def _sends() -> list[str]:
    """``campaign/step`` of every send_email step in the demo."""
    plans = load_workspace(EXAMPLES).plans
    return sorted(f"{c}/{s.id}" for c, p in plans.items() for s in p.steps.values() if s.template)


@pytest.mark.parametrize("send", _sends())
@pytest.mark.parametrize("first_name", ["Ann", None], ids=["named", "nameless"])
def test_every_email_renders_and_links_only_to_the_shop(
    settings: Settings, workspace: Workspace, send: str, first_name: str | None
) -> None:
    campaign_id, step_id = send.split("/")
    step = workspace.plans[campaign_id].steps[step_id]
    fields = {"first_name": first_name} if first_name else {}
    contact = Contact(id=7, email="ann@example.com", fields=fields)
    rendered = Renderer(workspace, settings).render(
        template=step.template,
        subject=step.subject,
        preheader=step.preheader,
        contact=contact,
        message_id="3f0c1a52-8f47-4d39-9d0e-5d3a4b2d9c11",
        campaign_id=campaign_id,
        step_id=step_id,
        track=True,
    )
    assert rendered.subject and "{{" not in rendered.subject
    assert "{{" not in rendered.html and "{%" not in rendered.html
    if first_name:
        assert first_name in rendered.html
    assert workspace.config.postal_address in unescape(rendered.html)
    urls = [url for _, _, url in rendered.links]
    assert urls.pop() == TRAP_URL  # the layout's hidden trap link, last
    assert urls, "an email with nothing to click"
    assert all(url.startswith(SHOP) for url in urls), urls
    others = re.findall(r'href="((?:https?|mailto):[^"]*)"', rendered.html)
    tracked = settings.public_base_url + "/"
    assert all(h.startswith((tracked, "mailto:")) for h in others), others


@pytest.mark.parametrize("broadcast_id", ["black-friday", "newsletter-december"])
def test_every_broadcast_email_renders_and_links_only_to_the_shop(
    settings: Settings, workspace: Workspace, broadcast_id: str
) -> None:
    plan = workspace.broadcast_plans[broadcast_id]
    sends = plan.variants or [
        {"id": "", "template": plan.template, "subject": plan.subject, "preheader": plan.preheader}
    ]
    for send in sends:
        rendered = Renderer(workspace, settings).render(
            template=send["template"],
            subject=send["subject"],
            preheader=send["preheader"],
            contact=Contact(id=7, email="ann@example.com", fields={"first_name": "Ann"}),
            message_id="3f0c1a52-8f47-4d39-9d0e-5d3a4b2d9c11",
            campaign_id=f"broadcast:{broadcast_id}",
            step_id=send["id"] or "email",
            track=True,
            utm=plan.utm_for(send["id"]) or None,
        )
        assert rendered.subject and "{{" not in rendered.subject + rendered.html
        assert workspace.config.postal_address in unescape(rendered.html)
        urls = [url for _, _, url in rendered.links][:-1]  # the trap link last
        assert urls and all(url.startswith(SHOP) for url in urls), urls
        if plan.utm:
            assert all("utm_campaign=black-friday-2026" in url for url in urls), urls


@pytest.mark.parametrize("form_id", ["newsletter", "webinar", "preferences"])
async def test_every_form_page_renders(
    settings: Settings, workspace: Workspace, engine: Engine, form_id: str
) -> None:
    form = workspace.forms[form_id]
    async with api_client(settings, workspace, engine) as http:
        r = await http.get(f"/forms/{form_id}")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    page = unescape(r.text)
    assert form.title in page
    for field in form.fields:
        assert f'name="{field.name}"' in r.text
        assert field.label in page


async def test_the_preferences_answer_picks_the_welcome(
    settings: Settings, workspace: Workspace, engine: Engine
) -> None:
    """The form stores the answer where the onboarding branch reads it."""
    async with api_client(settings, workspace, engine) as http:
        r = await http.post(
            "/forms/preferences",
            json={
                "email": "cleo@example.com",
                "first_name": "Cleo",
                "interest": "climbing",
                "consent": True,
            },
        )
    assert r.status_code == 202
    with session_scope(engine) as session:
        contact = repository.get_contact_by_email(session, "cleo@example.com")
    assert contact is not None
    facts = ConditionFacts(now=datetime.now(UTC), fields=contact.fields)
    branch = workspace.plans["newsletter-onboarding"].steps["choose_welcome"]
    taken = next(c.goto for c in branch.cases if evaluate(parse_condition(c.when), facts))
    assert taken == "welcome_climbing"
