"""Lead scores from events: one pure fold, used by the live path and by ``drip scores rebuild``.

A score is three parts:

- **behaviour**: points per event from ``scoring.behaviour`` rules, kept per event type as a
  value that halves every ``half_life``. Each type's value is clamped at its cap when points are
  added, so the 40th open earns nothing while the first ten still count, and as old opens fade
  new ones earn again;
- **manual**: points campaigns give (``update_contact: {score: 5}``, a ``score`` event), never
  decayed: a marketer's explicit decision stands;
- **fit**: ``scoring.fit`` rules that hold for the contact's fields now.

Why one fold over events in id order rather than a sum over the history: caps make the result
depend on order, and floating point makes it depend on the order of additions. The live path
catches up on a contact's unscored events in id order under a row lock, and the rebuild replays
the same events in the same order through this same function, so both give the same number to
the last bit, not just roughly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from campaigns.conditions import (
    Condition,
    ConditionFacts,
    evaluate,
    parse_condition,
    parse_event_filter,
)
from campaigns.sales import Scoring
from campaigns.schedule import add_working_hours

__all__ = [
    "Award",
    "ScoreEvent",
    "ScoreState",
    "add_working_hours",
    "fit_points",
    "fold",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ScoreEvent:
    """What scoring reads of an event."""

    id: int
    type: str
    name: str
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Award:
    """Points one rule gave for one event (after the cap): a line of "why this score"."""

    event_id: int
    rule: str
    points: float
    reason: str


@dataclass
class ScoreState:
    """A contact's running score; JSON-able through ``to_json``/``from_json``.

    ``behaviour`` maps an event type to ``[value, as_of]``: the decayed value at ``as_of``
    (seconds since 1970, the latest event time it has seen)."""

    last_event_id: int = 0
    #: how many events were folded: the live path compares it with the history to notice an
    #: event that committed after a later one was folded (and then replays from the start)
    folded: int = 0
    manual: int = 0
    behaviour: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "last_event_id": self.last_event_id,
            "folded": self.folded,
            "manual": self.manual,
            "behaviour": {k: list(v) for k, v in sorted(self.behaviour.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ScoreState:
        if not data:
            return cls()
        return cls(
            last_event_id=int(data.get("last_event_id", 0)),
            folded=int(data.get("folded", 0)),
            manual=int(data.get("manual", 0)),
            behaviour={k: [float(v[0]), float(v[1])] for k, v in data["behaviour"].items()},
        )

    def behaviour_at(self, at: datetime, half_life: float | None) -> float:
        """The behaviour points at ``at``, each type decayed from its ``as_of``."""
        when = _seconds(at)
        return sum(
            _decay(value, when - as_of, half_life) for value, as_of in self.behaviour.values()
        )

    def total(self, at: datetime, half_life: float | None, fit: int) -> int:
        """The score shown to people: rounded half away from zero (``round`` would send 2.5
        and 3.5 different ways)."""
        value = self.behaviour_at(at, half_life) + self.manual + fit
        return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def _seconds(at: datetime) -> float:
    return (at - _EPOCH).total_seconds()


def _decay(value: float, elapsed: float, half_life: float | None) -> float:
    if half_life is None or elapsed <= 0 or value == 0:
        return value
    return float(value * 0.5 ** (elapsed / half_life))


_conditions: dict[str, Condition] = {}


def _filter(text: str) -> Condition:
    cond = _conditions.get(text)
    if cond is None:
        cond = _conditions[text] = parse_event_filter(text)
    return cond


def fold(state: ScoreState, event: ScoreEvent, scoring: Scoring) -> list[Award]:
    """Add one event to ``state`` (in place); the awards it earned. Events must come in id
    order; one at or below ``state.last_event_id`` is ignored (already counted)."""
    if event.id <= state.last_event_id:
        return []
    state.last_event_id = event.id
    state.folded += 1
    if event.type == "score":
        points = event.properties.get("points")
        if isinstance(points, int) and not isinstance(points, bool) and points:
            state.manual += points
            return [Award(event.id, "campaign", float(points), f"{event.name or 'campaign'}")]
        return []
    rules = [r for r in scoring.behaviour if r.on == event.type]
    if not rules:
        return []
    facts = ConditionFacts(now=event.occurred_at, properties=event.properties)
    half_life = scoring.half_life_seconds
    when = _seconds(event.occurred_at)
    cap = scoring.caps.get(event.type)  # type: ignore[call-overload]
    awards = []
    for rule in rules:
        if rule.name is not None and rule.name != event.name:
            continue
        if rule.where is not None and not evaluate(_filter(rule.where), facts):
            continue
        value, as_of = state.behaviour.get(event.type, [0.0, when])
        if when >= as_of:
            value, as_of = _decay(value, when - as_of, half_life), when
            added = float(rule.points)
        else:  # an event older than what we have seen (an import): its points, decayed
            added = _decay(float(rule.points), as_of - when, half_life)
        new = value + added
        if cap is not None and new > cap:
            new = max(value, float(cap))
        state.behaviour[event.type] = [new, as_of]
        if new != value:
            awards.append(Award(event.id, rule.id, new - value, _reason(rule.id, event)))
    return awards


def _reason(rule: str, event: ScoreEvent) -> str:
    detail = event.name
    if event.type == "page":
        detail = str(event.properties.get("path") or event.properties.get("url") or event.name)
    return f"{rule}: {event.type} {detail}".strip()


def fit_points(scoring: Scoring, facts: ConditionFacts) -> list[tuple[str, int]]:
    """The fit rules that hold for this contact, with their points."""
    return [(rule.id, rule.points) for rule in scoring.fit if evaluate(_parse(rule.when), facts)]


def _parse(text: str) -> Condition:
    cond = _conditions.get("\0" + text)
    if cond is None:
        cond = _conditions["\0" + text] = parse_condition(text)
    return cond
