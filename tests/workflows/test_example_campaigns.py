"""Every example campaign (examples/acme/campaigns) driven through its paths with real events.

The engine issue's acceptance: a journey test for every example campaign and every step kind,
asserting what the SMTP server received and what the contact became. Events are recorded and
routed as the API records and routes them (forms, shop events, tags, manual enrolments, opens
and clicks of the emails really sent); the journeys run on a real worker against Temporal's
time-skipping server and send to an aiosmtpd server. Emails are counted from what that server
received, exactly: one per step, none twice, none early.

Between them the campaigns use every step kind (send_email, wait with a duration and until a
contact field, wait_for an open, a click and an event, branch, split, goto, update_contact,
notify_sales, exit) but ``webhook``, which no example uses (tests/workflows/test_outbound.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.schedule import next_send_time
from campaigns.workspace import Workspace, load_workspace
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, MessageState, SplitDecision, utcnow
from drip.settings import Settings
from tests.engine_support import Journeys, journeys, shown
from tests.support import SmtpServer, copy_workspace
from workflows.journey import _variant

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


@pytest.fixture
async def j(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    workspace: Workspace,
    smtp: SmtpServer,
) -> AsyncIterator[Journeys]:
    async with journeys(time_env, settings, engine, workspace, smtp.mailbox) as stack:
        yield stack


# --- welcome ---------------------------------------------------------------------------------


async def test_welcome_open_then_click_sends_tips_and_tags_engaged(j: Journeys) -> None:
    wil = await j.form("newsletter", "wil@example.com", first_name="Wil")
    await j.advance(MINUTE)
    assert j.subjects_to("wil@example.com") == ["Welcome to Acme Outdoor, Wil"]
    await j.track("open", wil, "welcome")
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == [
        "Welcome to Acme Outdoor, Wil",
        "Three trail tips our guides swear by",
    ]
    await j.advance(3 * DAY)
    await j.track("click", wil, "tips")
    await j.advance(MINUTE)

    enrolment = j.enrolment(wil, "welcome")
    result = await j.result(enrolment.workflow_id)
    assert result["visited"] == [
        "welcome", "wait_for_open", "tips", "wait_for_click", "tag_engaged", "done"
    ]  # fmt: skip
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.completed, None)
    assert j.get(wil).tags == ["engaged"]
    await j.advance(30 * DAY)  # nothing is left to send: no reminder, no second tips
    assert len(j.mailbox.messages) == 2
    assert all(m.recipients == ["wil@example.com"] for m in j.mailbox.messages)


# --- abandoned-cart ----------------------------------------------------------------------------

CART_REMINDER = "Cy, your basket is still packed"
CART_LAST_CHANCE = "10% off your basket, until midnight"


async def test_abandoned_cart_without_a_purchase_sends_the_reminder_then_the_offer(
    j: Journeys,
) -> None:
    cy = j.contact("cy@example.com", first_name="Cy")
    start = await j.now()
    await j.event(cy, "cart_abandoned", total=120)
    await j.advance_to(start + timedelta(minutes=59))
    assert j.mailbox.messages == []  # an hour first
    await j.advance_to(start + timedelta(minutes=61))
    assert j.mailbox.subjects() == [CART_REMINDER]
    await j.advance_to(start + timedelta(hours=1) + DAY - MINUTE)
    assert j.mailbox.subjects() == [CART_REMINDER]  # a day to buy
    await j.advance_to(start + timedelta(hours=1) + DAY + MINUTE)
    assert j.mailbox.subjects() == [CART_REMINDER, CART_LAST_CHANCE]
    assert all(m.recipients == ["cy@example.com"] for m in j.mailbox.messages)
    assert "TRAIL10" in j.mailbox.messages[1].text()

    enrolment = j.enrolment(cy, "abandoned-cart")
    result = await j.result(enrolment.workflow_id)
    assert result["outcome"] == "completed"
    assert result["visited"] == [
        "wait_an_hour", "reminder", "wait_for_purchase", "last_chance", "done"
    ]  # fmt: skip
    assert enrolment.state == EnrolmentState.completed and enrolment.end_reason is None
    assert j.events(cy, "conversion") == []
    await j.advance(10 * DAY)
    assert len(j.mailbox.messages) == 2


@pytest.mark.parametrize("buys_after", ["reminder", "nothing"])
async def test_abandoned_cart_purchase_is_the_goal_and_ends_the_journey(
    j: Journeys, buys_after: str
) -> None:
    cy = j.contact("cy@example.com", first_name="Cy")
    await j.event(cy, "cart_abandoned", total=120)
    if buys_after == "reminder":  # during the wait_for a purchase
        await j.advance(timedelta(hours=2))
        assert j.mailbox.subjects() == [CART_REMINDER]
    else:  # during the first hour's wait
        await j.advance(timedelta(minutes=20))
    await j.event(cy, "purchase", total=120, category="boots")
    await j.advance(MINUTE)

    enrolment = j.enrolment(cy, "abandoned-cart")
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.converted, "goal")
    result = await j.result(enrolment.workflow_id)
    assert result["outcome"] == "converted"
    assert [(e.name, e.properties["workflow_id"]) for e in j.events(cy, "conversion")] == [
        ("abandoned-cart", enrolment.workflow_id)
    ]
    await j.advance(5 * DAY)  # no last chance, nor a reminder after the goal
    expected = [CART_REMINDER] if buys_after == "reminder" else []
    assert j.mailbox.subjects() == expected
    assert [m.step_id for m in j.messages(cy)] == (["reminder"] if expected else [])

    # reentry is `never`: another abandoned cart starts nothing
    await j.event(cy, "cart_abandoned", total=80)
    await j.advance(2 * DAY)
    assert len(j.enrolments(cy, "abandoned-cart")) == 1
    assert j.mailbox.subjects() == expected


async def test_a_tent_bought_from_an_abandoned_cart_converts_it_and_starts_the_cross_sell(
    j: Journeys,
) -> None:
    cy = j.contact("cy@example.com", first_name="Cy")
    await j.event(cy, "cart_abandoned", total=300)
    await j.advance(timedelta(hours=3))
    start = await j.now()
    await j.event(cy, "purchase", category="tents", total=300)
    await j.advance(MINUTE)
    assert j.enrolment(cy, "abandoned-cart").state == EnrolmentState.converted
    assert j.enrolment(cy, "post-purchase-cross-sell").state == EnrolmentState.running
    await j.advance_to(start + 3 * DAY + MINUTE)
    assert j.mailbox.subjects() == [CART_REMINDER, "A warm night in your new tent, Cy"]
    assert [e.name for e in j.events(cy, "conversion")] == ["abandoned-cart"]


# --- post-purchase-cross-sell ----------------------------------------------------------------

OFFER = "A warm night in your new tent, Tom"


async def test_cross_sell_starts_only_for_tents_and_tags_a_clicker(j: Journeys) -> None:
    tom = j.contact("tom@example.com", first_name="Tom")
    await j.event(tom, "purchase", category="stoves", total=40)
    await j.advance(5 * DAY)
    assert j.enrolments(tom) == [] and j.mailbox.messages == []  # the trigger's `where`

    start = await j.now()
    await j.event(tom, "purchase", category="tents", total=300)
    assert len(j.enrolments(tom, "post-purchase-cross-sell")) == 1
    await j.advance(DAY)
    await j.event(tom, "purchase", category="tents", total=120)  # a second tent: same journey
    assert len(j.enrolments(tom, "post-purchase-cross-sell")) == 1
    await j.advance_to(start + 3 * DAY - MINUTE)
    assert j.mailbox.messages == []  # three days for the tent to arrive
    await j.advance_to(start + 3 * DAY + MINUTE)
    assert j.mailbox.subjects() == [OFFER]
    await j.advance(DAY)
    await j.track("click", tom, "sleeping_bag_offer")
    await j.advance(MINUTE)

    enrolment = j.enrolment(tom, "post-purchase-cross-sell")
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.completed, None)
    assert j.get(tom).tags == ["interested-sleeping-bags"]
    assert j.events(tom, "conversion") == []
    await j.advance(10 * DAY)
    assert j.mailbox.subjects() == [OFFER]


async def test_cross_sell_goal_is_a_sleeping_bag_purchase_only(j: Journeys) -> None:
    tom = j.contact("tom@example.com", first_name="Tom")
    await j.event(tom, "purchase", category="tents", total=300)
    await j.advance(DAY)
    await j.event(tom, "purchase", category="stoves", total=40)  # not the goal's `where`
    await j.advance(MINUTE)
    enrolment = j.enrolment(tom, "post-purchase-cross-sell")
    assert enrolment.state == EnrolmentState.running
    assert (await j.state(enrolment.workflow_id)).current_step == "let_it_arrive"

    await j.event(tom, "purchase", category="sleeping-bags", total=90)
    await j.advance(MINUTE)
    enrolment = j.enrolment(tom, "post-purchase-cross-sell")
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.converted, "goal")
    assert [e.name for e in j.events(tom, "conversion")] == ["post-purchase-cross-sell"]
    await j.advance(10 * DAY)
    assert j.mailbox.messages == []  # converted before the offer was due
    assert j.get(tom).tags == []


async def test_cross_sell_reentry_90_days_after_the_last_tent(j: Journeys) -> None:
    tom = j.contact("tom@example.com", first_name="Tom")
    await j.event(tom, "purchase", category="tents", total=300)
    await j.advance(11 * DAY)  # 3 days, the offer, 7 days without a click
    [first] = j.enrolments(tom, "post-purchase-cross-sell")
    assert first.state == EnrolmentState.completed
    assert j.mailbox.subjects() == [OFFER]

    # Re-entry compares the database's clock (started_at) with the wall clock, which Temporal's
    # time skipping does not move: move the first enrolment back instead.
    async def tent_after(days: int) -> list[Enrolment]:
        with session_scope(j.engine) as s:
            row = s.get(Enrolment, first.id)
            assert row is not None
            row.started_at = utcnow() - timedelta(days=days)
            s.add(row)
        await j.event(tom, "purchase", category="tents", total=250)
        await j.advance(MINUTE)
        return j.enrolments(tom, "post-purchase-cross-sell")

    assert len(await tent_after(0)) == 1
    assert len(await tent_after(89)) == 1
    enrolments = await tent_after(91)
    assert [(e.number, e.state) for e in enrolments] == [
        (1, EnrolmentState.completed),
        (2, EnrolmentState.running),
    ]
    assert enrolments[1].workflow_id == "journey/post-purchase-cross-sell/1/2"
    await j.advance(4 * DAY)
    assert j.mailbox.subjects() == [OFFER, OFFER]
    assert [m.workflow_id for m in j.messages(tom)] == [
        first.workflow_id,
        enrolments[1].workflow_id,
    ]


# --- lead-nurture -------------------------------------------------------------------------------

GUIDE = "Planning a team day in the hills? Our group-trip guide"
CASE_STUDY = "How a Bristol design studio spent a day on the Brecon Beacons"


@pytest.fixture
def with_sales(tmp_path: Path) -> Workspace:
    """The demo workspace with a sales inbox, so notify_sales has somewhere to write."""
    root = copy_workspace(tmp_path)
    config = root / "workspace.yaml"
    if "sales:" not in config.read_text():
        config.write_text(config.read_text() + "sales:\n  email: sales@acme.example\n")
    return load_workspace(root)


@pytest.fixture
async def nurture(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    with_sales: Workspace,
    smtp: SmtpServer,
) -> AsyncIterator[Journeys]:
    async with journeys(time_env, settings, engine, with_sales, smtp.mailbox) as stack:
        yield stack


async def test_lead_nurture_loops_twice_more_then_gives_up_below_50(nurture: Journeys) -> None:
    j = nurture
    lee = j.contact("lee@corp.example", first_name="Lee")
    start = await j.now()
    await j.change(lee, add_tags=["b2b-lead"])
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == [GUIDE]
    # no click: after 5 days the score (0) is checked, a case study goes out, and again 4 and 8
    # days later (goto max_times 2), then the journey ends below 50 points
    expected = [GUIDE]
    for due in (5 * DAY, 9 * DAY, 13 * DAY):
        await j.advance_to(start + due - MINUTE)
        assert j.mailbox.subjects() == expected
        await j.advance_to(start + due + MINUTE)
        expected.append(CASE_STUDY)
        assert j.mailbox.subjects() == expected
    await j.advance_to(start + 20 * DAY)
    assert j.mailbox.subjects() == [GUIDE, CASE_STUDY, CASE_STUDY, CASE_STUDY]
    assert all(m.recipients == ["lee@corp.example"] for m in j.mailbox.messages)

    enrolment = j.enrolment(lee, "lead-nurture")
    result = await j.result(enrolment.workflow_id)
    loop = ["check_score", "case_study", "wait_a_few_days", "check_again"]
    assert result["visited"] == ["group_trip_guide", "wait_for_guide_click", *loop * 3, "not_ready"]
    assert (enrolment.state, enrolment.end_reason) == (
        EnrolmentState.completed,
        "nurture finished below 50 points",
    )
    assert j.get(lee).score == 0 and j.get(lee).tags == ["b2b-lead"]
    assert j.events(lee, "sales_alert") == []
    # three sends of one step, one outbox row per visit
    assert [m.key.rsplit("/", 1)[1] for m in j.messages(lee, "case_study")] == ["1", "2", "3"]


async def test_lead_nurture_click_and_points_reach_50_and_tell_sales(
    nurture: Journeys, with_sales: Workspace
) -> None:
    j = nurture
    sales = with_sales.config.sales.email
    assert sales is not None
    lee = j.contact("lee@corp.example", first_name="Lee")
    start = await j.now()
    await j.change(lee, add_tags=["b2b-lead"])
    await j.advance(MINUTE)
    await j.track("click", lee, "group_trip_guide")  # 20 points, below 50: a case study
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == [GUIDE, CASE_STUDY]
    assert j.get(lee).score == 20
    await j.advance(DAY)
    await j.change(lee, add_score=30)  # other activity (a webinar, a visit) scores too
    await j.advance_to(start + 4 * DAY - MINUTE)
    assert j.mailbox.subjects() == [GUIDE, CASE_STUDY]
    await j.advance_to(start + 4 * DAY + 5 * MINUTE)  # the check after the 4-day wait: 50

    # the step raises a lead alert; its follow-up workflow delivers it to the team inbox
    # (the demo without sales.yaml has no teams, so nobody owns the lead)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 3)
    assert j.mailbox.subjects()[:2] == [GUIDE, CASE_STUDY]
    alert = j.mailbox.messages[-1]
    assert alert.subject == "New lead: Lee, score 50"
    assert alert.recipients == [parseaddr(sales)[1]]
    body = " ".join(alert.text().split())
    assert "Lee (lee@corp.example) reached 50 points in the group-trips nurture." in body
    assert "lead-nurture/tell_sales" in body
    enrolment = j.enrolment(lee, "lead-nurture")
    result = await j.result(enrolment.workflow_id)
    assert result["visited"] == [
        "group_trip_guide", "wait_for_guide_click", "score_guide_click",
        "check_score", "case_study", "wait_a_few_days", "check_again",
        "check_score", "tell_sales", "handed_over",
    ]  # fmt: skip
    assert (enrolment.state, enrolment.end_reason) == ("completed", "handed over to sales")
    assert [(e.name, e.properties["kind"]) for e in j.events(lee, "sales_alert")] == [
        ("email", "alert")
    ]
    assert j.get(lee).score == 50
    # nobody acknowledged: the inbox is reminded, then (no team lead) told once more
    await j.advance(20 * DAY)
    await j.mailbox.wait_for(lambda m: len(m.messages) == 5)
    assert [m.subject.split(":")[0] for m in j.mailbox.messages[3:]] == ["Reminder", "Escalation"]
    assert [(e.name, e.properties["kind"]) for e in j.events(lee, "sales_alert")] == [
        ("email", "alert"),
        ("email", "reminder"),
        ("email", "escalation"),
    ]


async def test_lead_nurture_refuses_a_customer(nurture: Journeys) -> None:
    j = nurture
    ida = j.contact("ida@corp.example", tags=["customer"])
    await j.change(ida, add_tags=["b2b-lead"])
    await j.advance(6 * DAY)
    assert j.enrolments(ida) == []
    assert j.mailbox.messages == []


async def test_lead_nurture_ends_when_the_lead_becomes_a_customer(nurture: Journeys) -> None:
    j = nurture
    lee = j.contact("lee@corp.example", first_name="Lee")
    await j.change(lee, add_tags=["b2b-lead"])
    await j.advance(2 * DAY)
    assert j.mailbox.subjects() == [GUIDE]
    await j.change(lee, add_tags=["customer"])
    await j.advance(MINUTE)

    enrolment = j.enrolment(lee, "lead-nurture")
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.exited, 'has_tag("customer")')
    result = await j.result(enrolment.workflow_id)
    assert result["outcome"] == "exited"
    assert result["visited"] == ["group_trip_guide", "wait_for_guide_click"]
    await j.advance(20 * DAY)
    assert j.mailbox.subjects() == [GUIDE]
    assert j.events(lee, "conversion") == []


# --- re-engagement -----------------------------------------------------------------------------

MISS_YOU_A = "We miss you, {}"
MISS_YOU_B = "The trails have changed since you last looked"

#: Zones around the world: at any moment some of them are outside office hours.
ZONES = [
    "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver",
    "America/Chicago", "America/New_York", "America/Sao_Paulo", "Atlantic/Azores",
    "Europe/London", "Europe/Berlin", "Europe/Athens", "Europe/Moscow", "Asia/Dubai",
    "Asia/Karachi", "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai", "Asia/Tokyo",
    "Australia/Sydney", "Pacific/Noumea", "Pacific/Auckland",
]  # fmt: skip


def _variant_of(workspace: Workspace, contact_id: int) -> str:
    """The send step the split sends this contact to: a hash of (campaign, step, contact)."""
    step = workspace.plans["re-engagement"].steps["subject_test"]
    return _variant(step, contact_id, "re-engagement")


def _subject(workspace: Workspace, contact_id: int, first_name: str) -> str:
    chosen = _variant_of(workspace, contact_id)
    return MISS_YOU_A.format(first_name) if chosen == "miss_you_a" else MISS_YOU_B


def _opens(workspace: Workspace, moment: datetime, tz: str) -> datetime:
    plan = workspace.plans["re-engagement"]
    return next_send_time(
        moment, plan.window_days, plan.window_start, plan.window_end, ZoneInfo(tz)
    )


def _all_sent(workspace: Workspace, now: datetime, tz: str) -> datetime:
    """A moment by which emails due from ``now`` have gone out, even if enrolling them took
    long enough for the window to close meanwhile (then they wait for the next one)."""
    return _opens(workspace, now + timedelta(hours=1), tz) + 5 * MINUTE


async def test_re_engagement_waits_for_the_send_window_in_the_contacts_zone(
    j: Journeys, workspace: Workspace
) -> None:
    now = await j.now()
    # a zone where it is now outside office hours, the window opening at least 3 hours away
    tz = next(z for z in ZONES if _opens(workspace, now, z) - now >= timedelta(hours=3))
    opens = _opens(workspace, now, tz)
    # dormant since an earlier win-back attempt (tags set by an import)
    rae = j.contact("rae@example.com", first_name="Rae", timezone=tz, tags=["dormant"])
    await j.enrol("re-engagement", rae)
    await j.advance(MINUTE)
    enrolment = j.enrolment(rae, "re-engagement")
    state = await j.state(enrolment.workflow_id)
    assert state.current_step == _variant_of(workspace, rae)
    assert state.waiting_for == f"the send window, opening {shown(opens)}", tz
    await j.advance_to(opens - 5 * MINUTE)
    assert j.mailbox.messages == [] and j.messages(rae) == []
    await j.advance_to(opens + 5 * MINUTE)
    assert j.mailbox.subjects() == [_subject(workspace, rae, "Rae")]

    sent = j.message(rae, _variant_of(workspace, rae))
    assert sent.state == MessageState.sent
    assert opens <= sent.created_at < opens + MINUTE  # the journey's clock when it sent
    local = sent.created_at.astimezone(ZoneInfo(tz))
    assert local.weekday() < 5 and (local.hour, local.minute) == (9, 0), (tz, local)

    await j.advance(DAY)  # a click: re-engaged (no longer dormant), and the journey is done
    await j.track("click", rae, _variant_of(workspace, rae))
    await j.advance(MINUTE)
    enrolment = j.enrolment(rae, "re-engagement")
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.completed, None)
    assert j.get(rae).tags == ["re-engaged"]
    await j.enrol("re-engagement", rae)  # reentry: never
    await j.advance(7 * DAY)
    assert len(j.enrolments(rae)) == 1
    assert len(j.mailbox.messages) == 1


async def test_re_engagement_splits_subjects_by_contact_and_tags_both_outcomes(
    j: Journeys, workspace: Workspace
) -> None:
    now = await j.now()
    people = {j.contact(f"p{n}@example.com", first_name=f"P{n}"): n for n in range(20)}
    engaged = j.contact("eve@example.com", first_name="Eve", tags=["engaged"])
    for contact_id in [*people, engaged]:
        await j.enrol("re-engagement", contact_id)
    assert j.enrolments(engaged) == []  # the audience: not has_tag("engaged")
    await j.advance_to(_all_sent(workspace, now, workspace.config.timezone))

    expected = {
        f"p{n}@example.com": _subject(workspace, contact_id, f"P{n}")
        for contact_id, n in people.items()
    }
    received = {m.recipients[0]: m.subject for m in j.mailbox.messages}
    assert len(j.mailbox.messages) == 20  # one each
    assert received == expected
    assert {s.split(",")[0] for s in received.values()} == {"We miss you", MISS_YOU_B}

    # one clicker per variant is re-engaged; everyone else goes dormant after 7 days
    by_variant = {_variant_of(workspace, c): c for c in people}
    assert sorted(by_variant) == ["miss_you_a", "miss_you_b"]
    for step_id, contact_id in by_variant.items():
        await j.track("click", contact_id, step_id)
    await j.advance(8 * DAY)

    for contact_id in people:
        enrolment = j.enrolment(contact_id, "re-engagement")
        assert enrolment.state == EnrolmentState.completed, contact_id
        clicked = contact_id in by_variant.values()
        assert j.get(contact_id).tags == (["re-engaged"] if clicked else ["dormant"])
        # the same variant for the contact whichever way it is asked
        result = await j.result(enrolment.workflow_id)
        assert result["visited"][:2] == ["subject_test", _variant_of(workspace, contact_id)]
    assert len(j.mailbox.messages) == 20
    # the auto winner needs 100 sends per variant (min_sample's default): none was decided
    with session_scope(j.engine) as s:
        assert s.exec(select(SplitDecision)).all() == []


async def test_re_engagement_auto_winner_after_two_days_and_100_sends_each(
    j: Journeys, workspace: Workspace
) -> None:
    """The split's auto winner, as the example sets it: open rate, after 2 days, and (the
    default) at least 100 sends per variant. Then everyone still to come gets the winner."""
    step = workspace.plans["re-engagement"].steps["subject_test"]
    count = 0  # the fewest contacts for 100 sends of each variant, by their hashed variant
    while (
        min(
            [_variant(step, c, "re-engagement") for c in range(1, count + 1)].count(v)
            for v in ("miss_you_a", "miss_you_b")
        )
        < 100
    ):
        count += 1
    now = await j.now()
    for n in range(count):
        await j.enrol("re-engagement", j.contact(f"r{n}@example.com"))
    # while the test runs (before two days have passed), a newcomer gets its hashed variant (A)
    late = [j.contact(f"late{n}@example.com") for n in range(6)]
    before = next(c for c in late if _variant(step, c, "re-engagement") == "miss_you_a")
    after = [c for c in late if c != before]
    assert "miss_you_a" in [_variant(step, c, "re-engagement") for c in after]
    await j.enrol("re-engagement", before)
    await j.advance_to(_all_sent(workspace, now, "UTC"))
    assert len(j.mailbox.messages) == count + 1
    first_sent = min(m.created_at for m in j.messages())
    # B is opened more (30 of its emails against 10 of A's)
    opened = {"miss_you_a": 10, "miss_you_b": 30}
    for contact_id in range(1, count + 1):
        variant = _variant(step, contact_id, "re-engagement")
        if opened[variant]:
            opened[variant] -= 1
            await j.track("open", contact_id, variant)
    await j.advance(MINUTE)

    # two days after the first send, everyone still to come gets the winner
    await j.advance_to(max(first_sent + 2 * DAY + MINUTE, await j.now() + MINUTE))
    for contact_id in after:
        await j.enrol("re-engagement", contact_id)
    await j.advance_to(_all_sent(workspace, await j.now(), "UTC"))

    with session_scope(j.engine) as s:
        [decision] = s.exec(select(SplitDecision)).all()
    assert (decision.step_id, decision.metric, decision.winner) == (
        "subject_test",
        "open_rate",
        "miss_you_b",
    )
    assert decision.figures["miss_you_a"]["opened"] == 10
    assert decision.figures["miss_you_b"]["opened"] == 30
    got = {c: [m.step_id for m in j.messages(c)] for c in late}
    assert got == {c: ["miss_you_a"] if c == before else ["miss_you_b"] for c in late}
    assert len(j.mailbox.messages) == count + len(late)


async def test_re_engagement_frequency_cap_defers_a_third_email_in_7_days(
    j: Journeys, workspace: Workspace
) -> None:
    tz = "America/New_York"
    now = await j.now()
    rae = j.contact(
        "rae@example.com",
        first_name="Rae",
        timezone=tz,
        interest="hiking",
    )
    # two marketing emails now, from two other campaigns
    await j.record(rae, "form", "preferences")
    await j.change(rae, set_fields={"webinar_at": (now + 30 * DAY).isoformat()})
    await j.advance(MINUTE)
    assert sorted(j.mailbox.subjects()) == [
        "Boots on, Rae: welcome, hiker",
        "You're booked in, Rae",
    ]
    oldest = j.messages(rae)[0].created_at

    await j.enrol("re-engagement", rae)
    await j.advance(4 * DAY)  # the window has opened since (weekends are at most 2.7 days)
    workflow_id = j.enrolment(rae, "re-engagement").workflow_id
    state = await j.state(workflow_id)
    assert state.waiting_for == f"the frequency cap, until {shown(oldest + 7 * DAY)}"
    assert len(j.mailbox.messages) == 2
    assert sorted(m.campaign_id for m in j.messages(rae)) == [
        "newsletter-onboarding",
        "webinar-reminders",
    ]

    due = _opens(workspace, oldest + 7 * DAY, tz)  # a slot frees, then the window opens
    await j.advance_to(due - MINUTE)
    assert len(j.mailbox.messages) == 2
    await j.advance_to(due + 5 * MINUTE)
    step_id = _variant_of(workspace, rae)
    assert j.mailbox.subjects()[2:] == [_subject(workspace, rae, "Rae")]  # deferred, not dropped
    sent = j.message(rae, step_id)
    assert sent.state == MessageState.sent
    assert oldest + 7 * DAY <= sent.created_at and due <= sent.created_at < due + 2 * MINUTE
    local = sent.created_at.astimezone(ZoneInfo(tz))
    assert local.weekday() < 5 and 9 <= local.hour < 17, local

    await j.advance(8 * DAY)  # no click: dormant
    enrolment = j.enrolment(rae, "re-engagement")
    assert enrolment.state == EnrolmentState.completed
    assert "dormant" in j.get(rae).tags
    assert len(j.mailbox.to("rae@example.com")) == 3


# --- webinar-reminders -------------------------------------------------------------------------

BOOKED = "You're booked in, Wen"
TOMORROW = "Tomorrow: your first multi-day hike"
SOON = "We start in one hour"
RECORDING = "The recording, the slides and the packing list"


async def test_webinar_reminders_follow_the_contacts_webinar_time(j: Journeys) -> None:
    now = await j.now()
    # a time zone other than UTC in the field: the waits are relative to the instant
    webinar = (now + 3 * DAY).replace(second=0, microsecond=0)
    field = webinar.astimezone(timezone(timedelta(hours=-5))).isoformat()
    # signing up on the form books nothing yet; the events team booking a session does
    wen = await j.form("webinar", "wen@example.com", first_name="Wen")
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == []
    await j.change(wen, set_fields={"webinar_at": field})
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == [BOOKED]
    expected = [BOOKED]
    for subject, due in (
        (TOMORROW, webinar - DAY),
        (SOON, webinar - timedelta(hours=1)),
        (RECORDING, webinar + timedelta(hours=2)),
    ):
        await j.advance_to(due - MINUTE)
        assert j.mailbox.subjects() == expected, subject
        await j.advance_to(due + MINUTE)
        expected.append(subject)
        assert j.mailbox.subjects() == expected

    enrolment = j.enrolment(wen, "webinar-reminders")
    result = await j.result(enrolment.workflow_id)
    assert result["outcome"] == "completed"
    assert enrolment.state == EnrolmentState.completed
    assert all(m.recipients == ["wen@example.com"] for m in j.mailbox.messages)
    await j.advance(5 * DAY)
    assert len(j.mailbox.messages) == 4


async def test_webinar_booked_without_a_usable_date_skips_the_waits(j: Journeys) -> None:
    """A date without a zone would be guessed; the engine does not guess, it goes on."""
    wen = await j.form("webinar", "wen@example.com", first_name="Wen")
    await j.change(wen, set_fields={"webinar_at": "2026-12-03 19:00"})
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == [BOOKED, TOMORROW, SOON, RECORDING]
    enrolment = j.enrolment(wen, "webinar-reminders")
    assert enrolment.state == EnrolmentState.completed
    await j.advance(5 * DAY)
    assert len(j.mailbox.messages) == 4


async def test_webinar_unsubscribe_ends_the_reminders(j: Journeys) -> None:
    now = await j.now()
    wen = await j.form("webinar", "wen@example.com", first_name="Wen")
    await j.change(wen, set_fields={"webinar_at": (now + 3 * DAY).isoformat()})
    await j.advance(DAY)
    await j.unsubscribe(wen)
    await j.advance(MINUTE)
    enrolment = j.enrolment(wen, "webinar-reminders")
    assert (enrolment.state, enrolment.end_reason) == (EnrolmentState.exited, "unsubscribe")
    await j.advance(5 * DAY)
    assert j.mailbox.subjects() == [BOOKED]
    assert [m.step_id for m in j.messages(wen)] == ["confirmation"]


# --- newsletter-onboarding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "subject", "tag", "path"),
    [
        ({"first_name": "Nia", "interest": "hiking"}, "Boots on, Nia: welcome, hiker",
         "hiking", ["welcome_hiking", "tag_hiking"]),
        ({"first_name": "Nia", "interest": "climbing"}, "Chalk up, Nia: welcome, climber",
         "climbing", ["welcome_climbing", "tag_climbing"]),
        # comparisons are case-sensitive: "Hiking" is not "hiking"
        ({"first_name": "Nia", "interest": "Hiking"}, "Welcome, Nia: a bit of everything",
         "all-rounder", ["welcome_all_rounder", "tag_all_rounder"]),
        ({}, "Welcome, there: a bit of everything",
         "all-rounder", ["welcome_all_rounder", "tag_all_rounder"]),
    ],
    ids=["hiking", "climbing", "Hiking", "no-answer"],
)  # fmt: skip
async def test_newsletter_onboarding_branches_on_the_interest(
    j: Journeys, fields: dict[str, str], subject: str, tag: str, path: list[str]
) -> None:
    nia = await j.form("preferences", "nia@example.com", **fields)
    await j.advance(MINUTE)
    assert j.mailbox.subjects() == [subject]
    assert j.mailbox.messages[0].recipients == ["nia@example.com"]
    enrolment = j.enrolment(nia, "newsletter-onboarding")
    result = await j.result(enrolment.workflow_id)
    assert result["visited"] == ["choose_welcome", *path, "done"]
    assert enrolment.state == EnrolmentState.completed
    assert j.get(nia).tags == [tag]
    assert j.get(nia).fields == fields
    assert j.enrolments(nia) == [enrolment]  # its tag_added event starts nothing else
    await j.advance(10 * DAY)
    assert len(j.mailbox.messages) == 1
