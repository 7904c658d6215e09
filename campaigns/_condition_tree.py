"""The condition tree, its canonical text and the walks validation needs (private: import from
``campaigns.conditions``). Split out so the parser, the evaluator and the SQL compiler share one
definition of every node without importing each other."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from campaigns.durations import format_duration

MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_LIST = 100
MAX_NUMBER = 10**15
MAX_WITHIN = 3650 * 86400
STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")
BUILTIN_FIELDS = {"email": "text", "score": "number", "status": "text"}

Scalar = str | int | float | bool
Value = Scalar | tuple[Scalar, ...]
Op = Literal[
    "==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "starts_with", "ends_with"
]
_ORDER_OPS = ("<", "<=", ">", ">=")
_TEXT_OPS = ("contains", "starts_with", "ends_with")
_WORD_OPS = ("in", "contains", "starts_with", "ends_with", "exists", "is")
_FUNCTIONS = ("has_tag", "opened", "clicked", "event")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_STEP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,79}$")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


class ConditionError(ValueError):
    """A condition that cannot be read or used; ``column`` is 1-based into the condition text.

    A ValueError so a pydantic validator may raise it as is; the loader adds ``column`` to the
    YAML position of the string to report ``file:line:col``.
    """

    def __init__(self, message: str, column: int = 1) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} at column {column}")


# ---------------------------------------------------------------------------------------------
# The tree. ``column`` (where the node starts in the text) takes no part in equality, so a tree
# built in code equals the parsed one; it lets later checks point at e.g. a wrong step id.


@dataclass(frozen=True)
class Condition:
    """Base of every node; ``to_text()`` gives the canonical spelling that parses back equal."""

    column: int = dataclasses.field(default=0, compare=False, repr=False, kw_only=True)

    def to_text(self) -> str:
        return _text(self)


@dataclass(frozen=True)
class Compare(Condition):
    field: str  # "contact.score", "properties.amount"
    op: Op
    value: Value


@dataclass(frozen=True)
class Exists(Condition):
    field: str


@dataclass(frozen=True)
class HasTag(Condition):
    tag: str


@dataclass(frozen=True)
class Opened(Condition):
    step: str


@dataclass(frozen=True)
class Clicked(Condition):
    step: str


@dataclass(frozen=True)
class HadEvent(Condition):
    name: str
    within_seconds: int | None = None
    where: Condition | None = None


@dataclass(frozen=True)
class And(Condition):
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Or(Condition):
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not(Condition):
    item: Condition


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value_text(value: Value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return repr(value)  # int, or float in a form the tokenizer reads back exactly


def _text(node: Condition) -> str:
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {_value_text(node.value)}"
    if isinstance(node, Exists):
        return f"{node.field} exists"
    if isinstance(node, HasTag):
        return f"has_tag({_quote(node.tag)})"
    if isinstance(node, Opened):
        return f"opened({_quote(node.step)})"
    if isinstance(node, Clicked):
        return f"clicked({_quote(node.step)})"
    if isinstance(node, HadEvent):
        args = [_quote(node.name)]
        if node.within_seconds is not None:
            args.append(f"within={format_duration(timedelta(seconds=node.within_seconds))}")
        if node.where is not None:
            args.append(f"where={_text(node.where)}")
        return f"event({', '.join(args)})"
    if isinstance(node, Not):
        inner = _text(node.item)
        return f"not ({inner})" if isinstance(node.item, And | Or) else f"not {inner}"
    if isinstance(node, And):
        return " and ".join(
            f"({_text(i)})" if isinstance(i, And | Or) else _text(i) for i in node.items
        )
    if isinstance(node, Or):
        return " or ".join(f"({_text(i)})" if isinstance(i, Or) else _text(i) for i in node.items)
    raise TypeError(f"not a condition node: {node!r}")


def _walk(node: Condition) -> Iterator[Condition]:
    yield node
    if isinstance(node, And | Or):
        for item in node.items:
            yield from _walk(item)
    elif isinstance(node, Not):
        yield from _walk(node.item)
    elif isinstance(node, HadEvent) and node.where is not None:
        yield from _walk(node.where)


def referenced_steps(cond: Condition) -> set[str]:
    """Step ids named by opened()/clicked(), for the check that they are send_email steps."""
    return {step for step, _ in step_references(cond)}


def step_references(cond: Condition) -> list[tuple[str, int]]:
    """(step id, column) of every opened()/clicked(), so a wrong id is reported where it is."""
    return [(n.step, n.column) for n in _walk(cond) if isinstance(n, Opened | Clicked)]


def referenced_events(cond: Condition) -> set[str]:
    """Event names used by event(...): the journey must be told about these events."""
    return {n.name for n in _walk(cond) if isinstance(n, HadEvent)}


def is_contact_only(cond: Condition) -> bool:
    """True if the condition needs only the contact row (so ``to_sql`` can compile it)."""
    return not any(
        isinstance(n, Opened | Clicked | HadEvent)
        or (isinstance(n, Compare | Exists) and n.field.startswith("properties."))
        for n in _walk(cond)
    )


def _kind(value: object) -> str | None:
    """The kind of a value as conditions see it; a bool is never a number."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return None
