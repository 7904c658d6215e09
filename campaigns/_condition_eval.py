"""Evaluating a condition in Python: pure, no clock, no I/O, so Temporal workflows may call it
(private: import from ``campaigns.conditions``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from campaigns._condition_tree import (
    _ORDER_OPS,
    BUILTIN_FIELDS,
    And,
    Clicked,
    Compare,
    Condition,
    Exists,
    HadEvent,
    HasTag,
    Not,
    Op,
    Opened,
    Or,
    Scalar,
    Value,
    _kind,
)

# ---------------------------------------------------------------------------------------------
# Evaluation in Python: pure, no clock, no I/O.


@dataclass(frozen=True)
class EventFact:
    """One event of the contact, as evaluation needs it."""

    name: str
    occurred_at: datetime
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("EventFact.occurred_at must be timezone-aware")


@dataclass(frozen=True)
class ConditionFacts:
    """Everything a condition may look at; ``now`` is given so evaluation never reads a clock.

    ``opened``/``clicked`` hold the send_email step ids of this journey that a human opened or
    clicked (scanner hits excluded by whoever builds the facts); ``properties`` are those of the
    event at hand, for ``properties.*`` outside ``event(...)``.
    """

    now: datetime
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()
    score: int = 0
    status: str = "subscribed"
    email: str = ""
    opened: tuple[str, ...] = ()
    clicked: tuple[str, ...] = ()
    events: tuple[EventFact, ...] = ()
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("ConditionFacts.now must be timezone-aware")


_MISSING = object()


def evaluate(cond: Condition, facts: ConditionFacts) -> bool:
    """Whether the condition holds; missing fields and values of another kind are false."""
    return _eval(cond, facts, facts.properties)


def _eval(node: Condition, facts: ConditionFacts, properties: Mapping[str, Any]) -> bool:
    if isinstance(node, Compare):
        actual = _lookup(node.field, facts, properties)
        return actual is not _MISSING and _compare(actual, node.op, node.value)
    if isinstance(node, Exists):
        return _lookup(node.field, facts, properties) not in (_MISSING, None)
    if isinstance(node, HasTag):
        return node.tag in facts.tags
    if isinstance(node, Opened):
        return node.step in facts.opened
    if isinstance(node, Clicked):
        return node.step in facts.clicked
    if isinstance(node, HadEvent):
        since = (
            facts.now - timedelta(seconds=node.within_seconds)
            if node.within_seconds is not None
            else None
        )
        return any(
            e.name == node.name
            and e.occurred_at <= facts.now
            and (since is None or e.occurred_at >= since)
            and (node.where is None or _eval(node.where, facts, e.properties))
            for e in facts.events
        )
    if isinstance(node, And):
        return all(_eval(i, facts, properties) for i in node.items)
    if isinstance(node, Or):
        return any(_eval(i, facts, properties) for i in node.items)
    if isinstance(node, Not):
        return not _eval(node.item, facts, properties)
    raise TypeError(f"not a condition node: {node!r}")


def _lookup(field: str, facts: ConditionFacts, properties: Mapping[str, Any]) -> object:
    root, _, name = field.partition(".")
    if root == "properties":
        return properties.get(name, _MISSING)
    if name in BUILTIN_FIELDS:
        return getattr(facts, name)
    return facts.fields.get(name, _MISSING)


def _same(actual: object, expected: Scalar) -> bool:
    return _kind(actual) == _kind(expected) and actual == expected


def _compare(actual: object, op: Op, value: Value) -> bool:
    if isinstance(value, tuple):
        same_kind = bool(value) and _kind(actual) == _kind(value[0])
        hit = any(_same(actual, v) for v in value)
        return hit if op == "in" else same_kind and not hit
    if op == "==":
        return _same(actual, value)
    if op == "!=":
        return _kind(actual) == _kind(value) and actual != value
    if op in _ORDER_OPS:
        if _kind(actual) != "number" or _kind(value) != "number":
            return False
        a, b = float(actual), float(value)  # type: ignore[arg-type]
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if not isinstance(actual, str) or not isinstance(value, str):
        return False
    if op == "contains":
        return value in actual
    if op == "starts_with":
        return actual.startswith(value)
    return actual.endswith(value)
