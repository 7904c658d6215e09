"""The pure score fold (points, filters, caps, decay, manual points, old events) and the
working-hours arithmetic that lead alerts wait by."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.sales import Scoring
from campaigns.schedule import add_working_hours
from campaigns.scoring import Award, ScoreEvent, ScoreState, fold

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HALF_LIFE = 30 * 86400.0

SCORING = Scoring.model_validate(
    {
        "half_life": "30d",
        "behaviour": [
            {"id": "opened", "on": "open", "points": 2},
            {"id": "clicked", "on": "click", "points": 5},
            {
                "id": "pricing",
                "on": "page",
                "where": 'properties.path == "/pricing"',
                "points": 10,
            },
            {"id": "catalogue", "on": "form", "name": "catalogue", "points": 15},
            {
                "id": "big-order",
                "on": "event",
                "name": "purchase",
                "where": "properties.amount >= 500",
                "points": 20,
            },
            {"id": "unsubscribed", "on": "unsubscribe", "points": -25},
        ],
        "caps": {"open": 10},
    }
)


def _event(id: int, type: str, at: datetime = T0, name: str = "", **properties: Any) -> ScoreEvent:
    return ScoreEvent(id=id, type=type, name=name, occurred_at=at, properties=properties)


def _fold_all(
    state: ScoreState, events: list[ScoreEvent], scoring: Scoring = SCORING
) -> list[Award]:
    return [award for event in events for award in fold(state, event, scoring)]


def test_rules_give_their_points_with_a_reason() -> None:
    state = ScoreState()
    awards = _fold_all(
        state,
        [
            _event(1, "open"),
            _event(2, "click", url="https://acme.example/x"),
            _event(3, "page", path="/pricing"),
            _event(4, "form", name="catalogue"),
        ],
    )
    assert [(a.event_id, a.rule, a.points) for a in awards] == [
        (1, "opened", 2.0),
        (2, "clicked", 5.0),
        (3, "pricing", 10.0),
        (4, "catalogue", 15.0),
    ]
    assert awards[2].reason == "pricing: page /pricing"
    assert state.total(T0, HALF_LIFE, fit=0) == 32
    assert state.total(T0, HALF_LIFE, fit=15) == 47
    assert state.last_event_id == 4


def test_where_and_name_filters_choose_the_events() -> None:
    state = ScoreState()
    awards = _fold_all(
        state,
        [
            _event(1, "page", path="/about"),
            _event(2, "form", name="newsletter"),
            _event(3, "event", name="purchase", amount=499),
            _event(4, "event", name="refund", amount=900),
            _event(5, "event", name="purchase", amount=500),
            _event(6, "tag_added", name="vip"),  # no rule for this type
        ],
    )
    assert [(a.event_id, a.rule) for a in awards] == [(5, "big-order")]
    assert state.last_event_id == 6  # every event is counted once, scored or not


def test_forty_opens_earn_at_most_the_cap_and_earn_again_as_old_ones_fade() -> None:
    no_decay = SCORING.model_copy(update={"half_life": None})
    state = ScoreState()
    opens = [_event(i, "open", T0 + timedelta(minutes=i)) for i in range(1, 41)]
    awards = _fold_all(state, opens, no_decay)
    assert [(a.event_id, a.points) for a in awards] == [(i, 2.0) for i in range(1, 6)]
    assert state.total(T0 + DAY, None, fit=0) == 10  # the first ones count, not the last

    state = ScoreState()  # with decay, the value never passes the cap either
    for event in opens:
        fold(state, event, SCORING)
        assert state.behaviour["open"][0] <= 10
    assert state.total(T0 + timedelta(minutes=40), HALF_LIFE, fit=0) == 10
    later = T0 + timedelta(minutes=40) + 30 * DAY  # one half-life: worth 5 now
    assert round(state.behaviour_at(later, HALF_LIFE), 9) == 5.0
    [again] = fold(state, _event(41, "open", later), SCORING)
    assert again.points == 2.0
    assert round(state.behaviour_at(later, HALF_LIFE), 9) == 7.0


def test_behaviour_halves_after_one_half_life_and_manual_points_do_not() -> None:
    state = ScoreState()
    _fold_all(state, [_event(1, "form", name="catalogue"), _event(2, "score", points=7)])
    assert state.total(T0, HALF_LIFE, fit=3) == 15 + 7 + 3
    assert state.behaviour_at(T0 + 30 * DAY, HALF_LIFE) == 7.5
    assert state.behaviour_at(T0 + 60 * DAY, HALF_LIFE) == 3.75
    assert state.total(T0 + 365 * DAY, HALF_LIFE, fit=0) == 7  # behaviour ~0, manual stays
    assert state.total(T0 + 365 * DAY, None, fit=0) == 22  # no half-life: no decay


def test_negative_points_and_rounding_half_away_from_zero() -> None:
    state = ScoreState()
    awards = _fold_all(state, [_event(1, "open"), _event(2, "unsubscribe")])
    assert [a.points for a in awards] == [2.0, -25.0]
    assert state.total(T0, HALF_LIFE, fit=0) == -23
    half = ScoreState(behaviour={"open": [2.5, 0.0]})
    assert half.total(datetime(1970, 1, 1, tzinfo=UTC), None, fit=0) == 3
    assert ScoreState(behaviour={"x": [-2.5, 0.0]}).total(T0, None, fit=0) == -3


def test_manual_score_events_count_only_whole_points() -> None:
    state = ScoreState()
    awards = _fold_all(
        state,
        [
            _event(1, "score", name="welcome", points=5),
            _event(2, "score", points=True),
            _event(3, "score", points="7"),
            _event(4, "score", points=-2),
        ],
    )
    assert [(a.rule, a.points) for a in awards] == [("campaign", 5.0), ("campaign", -2.0)]
    assert state.manual == 3 and state.behaviour == {}


def test_an_old_event_arriving_late_earns_its_decayed_points() -> None:
    state = ScoreState()
    fold(state, _event(1, "click", T0), SCORING)
    [late] = fold(state, _event(2, "click", T0 - 30 * DAY), SCORING)  # an import
    assert late.points == 2.5
    assert state.behaviour["click"] == [
        7.5,
        (T0 - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds(),
    ]


def test_events_at_or_below_the_last_id_are_ignored() -> None:
    state = ScoreState()
    fold(state, _event(5, "click"), SCORING)
    before = state.to_json()
    assert fold(state, _event(5, "click"), SCORING) == []
    assert fold(state, _event(3, "form", name="catalogue"), SCORING) == []
    assert state.to_json() == before


def test_the_json_round_trip_is_exact() -> None:
    state = ScoreState()
    _fold_all(
        state,
        [
            _event(i, "click" if i % 3 else "open", T0 + i * timedelta(hours=7.3))
            for i in range(1, 30)
        ]
        + [_event(30, "score", points=4)],
    )
    back = ScoreState.from_json(json.loads(json.dumps(state.to_json())))
    assert back == state
    assert back.to_json() == state.to_json()
    at = T0 + 100 * DAY
    assert back.behaviour_at(at, HALF_LIFE) == state.behaviour_at(at, HALF_LIFE)
    assert ScoreState.from_json(None) == ScoreState() == ScoreState.from_json({})


_TYPES = ("open", "click", "page", "form", "event", "unsubscribe", "score", "tag_added")


@st.composite
def _histories(draw: st.DrawFn) -> list[ScoreEvent]:
    n = draw(st.integers(min_value=0, max_value=60))
    events = []
    for i in range(1, n + 1):
        type_ = draw(st.sampled_from(_TYPES))
        at = T0 + timedelta(seconds=draw(st.integers(min_value=-90 * 86400, max_value=90 * 86400)))
        properties: dict[str, Any] = {}
        name = ""
        if type_ == "page":
            properties["path"] = draw(st.sampled_from(["/pricing", "/about", "/careers/x"]))
        elif type_ == "form":
            name = draw(st.sampled_from(["catalogue", "newsletter"]))
        elif type_ == "event":
            name = "purchase"
            properties["amount"] = draw(st.integers(min_value=0, max_value=2000))
        elif type_ == "score":
            properties["points"] = draw(st.integers(min_value=-20, max_value=20))
        events.append(ScoreEvent(i, type_, name, at, properties))
    return events


@settings(max_examples=200, deadline=None)
@given(events=_histories(), cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_folding_in_chunks_with_json_in_between_equals_folding_at_once(
    events: list[ScoreEvent], cuts: list[int]
) -> None:
    """What the live path does (catch up a few events at a time, state stored as JSON) gives
    the rebuild's result to the last bit."""
    whole = ScoreState()
    all_awards = _fold_all(whole, events)

    stored: dict[str, Any] = ScoreState().to_json()
    chunk_awards: list[Award] = []
    bounds = sorted({0, len(events), *(c for c in cuts if c <= len(events))})
    for start, end in itertools.pairwise(bounds):
        state = ScoreState.from_json(json.loads(json.dumps(stored)))
        # the live path re-reads from last_event_id; an overlap must change nothing
        chunk_awards += _fold_all(state, events[max(0, start - 2) : end])
        stored = state.to_json()
    assert stored == whole.to_json()
    assert chunk_awards == all_awards
    at = T0 + 200 * DAY
    assert ScoreState.from_json(stored).total(at, HALF_LIFE, 5) == whole.total(at, HALF_LIFE, 5)


MON_FRI = ("mon", "tue", "wed", "thu", "fri")
EVERY_DAY = (*MON_FRI, "sat", "sun")


def _due(
    start: datetime,
    hours: float,
    zone: str = "UTC",
    *,
    days: tuple[str, ...] = MON_FRI,
    begin: str = "09:00",
    end: str = "17:00",
) -> datetime:
    return add_working_hours(start, hours, days=days, begin=begin, end=end, timezone=zone)


def _london(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo("Europe/London")).astimezone(UTC)  # type: ignore[misc]


def test_friday_afternoon_plus_four_working_hours_is_monday_noon() -> None:
    friday = datetime(2026, 6, 5, 16, 0, tzinfo=UTC)
    assert friday.strftime("%a") == "Fri"
    assert _due(friday, 4) == datetime(2026, 6, 8, 12, 0, tzinfo=UTC)


def test_working_hours_start_at_the_next_opening() -> None:
    saturday = datetime(2026, 6, 6, 11, 30, tzinfo=UTC)
    assert _due(saturday, 2) == datetime(2026, 6, 8, 11, 0, tzinfo=UTC)
    early = datetime(2026, 6, 9, 6, 15, tzinfo=UTC)  # a Tuesday, before opening
    assert _due(early, 1.5) == datetime(2026, 6, 9, 10, 30, tzinfo=UTC)
    late = datetime(2026, 6, 9, 18, 0, tzinfo=UTC)  # after closing: from the next morning
    assert _due(late, 8) == datetime(2026, 6, 10, 17, 0, tzinfo=UTC)
    noon = datetime(2026, 6, 9, 12, 0, tzinfo=UTC)  # ending exactly at closing time
    assert _due(noon, 5) == datetime(2026, 6, 9, 17, 0, tzinfo=UTC)


def test_working_hours_follow_the_local_clock_across_a_dst_change() -> None:
    """Europe/London: on 29 March 2026 01:00 GMT becomes 02:00 BST; on 25 October 02:00 BST
    becomes 01:00 GMT."""
    london = "Europe/London"
    # the window opens at 09:00 local on either side of the change: 09:00 UTC, then 08:00 UTC
    saturday = _london(2026, 3, 28, 16, 0)
    assert saturday == datetime(2026, 3, 28, 16, 0, tzinfo=UTC)
    due = _due(saturday, 2, london, days=EVERY_DAY)
    assert due == _london(2026, 3, 29, 10, 0) == datetime(2026, 3, 29, 9, 0, tzinfo=UTC)
    # a window over the missing hour is an hour shorter in real time: 3 hours, not 4
    midnight = _london(2026, 3, 29, 0, 0)
    due = _due(midnight, 3.5, london, days=EVERY_DAY, begin="00:00", end="04:00")
    assert due == _london(2026, 3, 30, 0, 30)
    # and in October an hour longer: 5 hours
    midnight = _london(2026, 10, 25, 0, 0)
    due = _due(midnight, 4.5, london, days=EVERY_DAY, begin="00:00", end="04:00")
    assert due == midnight + timedelta(hours=4.5) == datetime(2026, 10, 25, 3, 30, tzinfo=UTC)
    # a Monday-to-Friday office in London in summer: Friday 16:00 + 4h = Monday 12:00 BST
    assert _due(_london(2026, 6, 5, 16, 0), 4, london) == _london(2026, 6, 8, 12, 0)
