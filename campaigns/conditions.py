"""The one condition language of campaigns: branches, audiences, goals, exit rules, event filters.

A condition is a YAML string, so it is written to read well inside quotes::

    audience: 'contact.country in ["DE", "AT", "CH"] and contact.status == "subscribed"'
    when: 'contact.score >= 50 and has_tag("vip")'
    when: 'opened("welcome") and not clicked("tips")'
    when: 'event("purchase", within=30d, where=properties.amount > 100)'
    exit_when: ['event("purchase", where=properties.category == "boots")']
    trigger: {event: checkout, where: 'properties.total > 50'}

Grammar (lower-case keywords; ``not`` binds tighter than ``and``, which binds tighter than
``or``; parentheses group)::

    condition  := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" condition ")" | test
    test       := FIELD OP VALUE             contact.score >= 50, contact.country != "DE"
                | FIELD ["not"] "in" LIST    contact.plan in ["pro", "team"]
                | FIELD TEXT_OP TEXT         contact.email ends_with "@acme.example"
                | FIELD "exists"             contact.company exists
                | FIELD "is" ["not"] "set"   contact.company is set   (same as exists)
                | has_tag(TEXT)              has_tag("vip")
                | opened(TEXT)               opened("welcome")   a send_email step of this campaign
                | clicked(TEXT)              clicked("tips")
                | event(TEXT [, within=DURATION] [, where=condition])
    FIELD      := contact.NAME | properties.NAME
    OP         := == | != | < | <= | > | >=      (<, <=, >, >= compare numbers only)
    TEXT_OP    := contains | starts_with | ends_with   (on text, case-sensitive)
    VALUE      := "text" | 'text' | 42 | -2.5 | true | false
    LIST       := [VALUE, ...]                 one kind of value, 1 to 100 of them
    DURATION   := 30d | 12h | 90m | 2w | 1d12h (no quotes)

Fields. ``contact.NAME`` is a custom field of the contact (free-form JSON), except the built-ins
``contact.email`` (text, stored lower-case), ``contact.score`` (a number) and ``contact.status``
(subscribed, unsubscribed, bounced or complained), which are checked when the condition is read:
``contact.score >= "50"`` is an error. Tags are tested with ``has_tag("vip")``, never through
``contact.tags``. ``properties.NAME`` is a property of the event at hand: the event a trigger,
``wait_for`` or goal filters with ``where:``, or each candidate event inside ``event(..., where=)``;
inside ``where=`` only ``properties.`` tests are allowed.

Missing values. A comparison on a field the contact does not have, or whose value is of another
kind (text against a number), is false, whatever the operator: ``contact.country != "DE"`` is
false for a contact without a country. Write ``not contact.country == "DE"`` to include them.
``null`` is not a value: test for an empty field with ``not contact.company exists``.

Events. ``event("purchase")`` holds if the contact has such an event; ``within=30d`` keeps only
events of the last 30 days before ``now``; ``where=`` keeps only events whose properties match.

Why a hand-written parser: the language is tiny, the errors must speak to marketers with an exact
column (the loader adds it to the YAML position of the string), and nothing here may ever reach
``eval``. Input is bounded (length, nesting, list size), and every refusal is a ConditionError.
This module is the public face: the tokenizer (``_condition_tokens``), the parser
(``_condition_parser``), the tree (``_condition_tree``), evaluation (``_condition_eval``) and SQL
(``_condition_sql``) sit beside it and are imported from here.

API: ``parse_condition(text)`` (and ``parse_event_filter`` for ``where:``) gives a tree of frozen
dataclasses (Compare, Exists, HasTag, Opened, Clicked, HadEvent, And, Or, Not) whose ``to_text()``
is the canonical spelling and parses back equal. ``evaluate(tree, ConditionFacts(...))`` is pure
and reads no clock, so Temporal workflows may call it. ``to_sql(tree, contacts_table)`` compiles
the contact-only part to a SQLAlchemy expression with bound parameters only, for SQLite and
PostgreSQL. ``referenced_steps``/``step_references``/``referenced_events`` serve validation.
"""

from __future__ import annotations

from campaigns._condition_eval import ConditionFacts, EventFact, evaluate
from campaigns._condition_parser import _Parser
from campaigns._condition_sql import to_sql
from campaigns._condition_tree import (
    BUILTIN_FIELDS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST,
    MAX_NUMBER,
    MAX_WITHIN,
    STATUSES,
    And,
    Clicked,
    Compare,
    Condition,
    ConditionError,
    Exists,
    HadEvent,
    HasTag,
    Not,
    Opened,
    Or,
    is_contact_only,
    referenced_events,
    referenced_steps,
    step_references,
)

__all__ = [
    "BUILTIN_FIELDS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_LIST",
    "MAX_NUMBER",
    "MAX_WITHIN",
    "STATUSES",
    "And",
    "Clicked",
    "Compare",
    "Condition",
    "ConditionError",
    "ConditionFacts",
    "EventFact",
    "Exists",
    "HadEvent",
    "HasTag",
    "Not",
    "Opened",
    "Or",
    "evaluate",
    "is_contact_only",
    "parse_condition",
    "parse_event_filter",
    "referenced_events",
    "referenced_steps",
    "step_references",
    "to_sql",
]


def parse_condition(text: str) -> Condition:
    """Parse a condition as written in a campaign; ConditionError says what and where."""
    return _Parser(text, event_filter=False).parse()


def parse_event_filter(text: str) -> Condition:
    """Parse a ``where:`` filter of a trigger, wait_for or goal: properties of the event only."""
    return _Parser(text, event_filter=True).parse()
