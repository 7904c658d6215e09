"""The condition language: what it accepts, what it refuses (and where), what it means in Python
and in SQL, and that the two meanings agree on real databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from campaigns.conditions import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST,
    And,
    Clicked,
    Compare,
    Condition,
    ConditionError,
    ConditionFacts,
    EventFact,
    Exists,
    HadEvent,
    HasTag,
    Not,
    Opened,
    Or,
    evaluate,
    is_contact_only,
    parse_condition,
    parse_event_filter,
    referenced_events,
    referenced_steps,
    step_references,
    to_sql,
)
from contacts.models import Contact
from tests.campaigns.strategies import any_conditions, contact_conditions, contact_rows

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONTACTS = SQLModel.metadata.tables["contacts"]

# --- parsing: valid text -> tree -------------------------------------------------------------

GOLDEN: list[tuple[str, Condition]] = [
    ('contact.country == "DE"', Compare("contact.country", "==", "DE")),
    ("contact.country == 'DE'", Compare("contact.country", "==", "DE")),
    ("contact.score >= 50", Compare("contact.score", ">=", 50)),
    ("contact.score>-5", Compare("contact.score", ">", -5)),
    ("contact.ltv < 2.5e3", Compare("contact.ltv", "<", 2500.0)),
    ('contact.status == "subscribed"', Compare("contact.status", "==", "subscribed")),
    ('contact.plan in ["pro", "team"]', Compare("contact.plan", "in", ("pro", "team"))),
    ('contact.plan not in ["free",]', Compare("contact.plan", "not in", ("free",))),
    ("contact.beta == true", Compare("contact.beta", "==", True)),
    ("contact.company exists", Exists("contact.company")),
    ("contact.company is set", Exists("contact.company")),
    ("contact.company is not set", Not(Exists("contact.company"))),
    (
        'contact.email ends_with "@acme.example"',
        Compare("contact.email", "ends_with", "@acme.example"),
    ),
    ('contact.name contains "\\"Bo\\""', Compare("contact.name", "contains", '"Bo"')),
    ('contact.city starts_with "Ber"', Compare("contact.city", "starts_with", "Ber")),
    ('has_tag("vip")', HasTag("vip")),
    ('opened("welcome") and not clicked("tips")', And((Opened("welcome"), Not(Clicked("tips"))))),
    ('event("purchase")', HadEvent("purchase")),
    ('event("purchase", within=30d)', HadEvent("purchase", 30 * 86400)),
    (
        'event("purchase", where=properties.amount > 100 and properties.category == "boots", '
        "within=1d12h)",
        HadEvent(
            "purchase",
            36 * 3600,
            And(
                (
                    Compare("properties.amount", ">", 100),
                    Compare("properties.category", "==", "boots"),
                )
            ),
        ),
    ),
    ("properties.total > 50", Compare("properties.total", ">", 50)),
    (
        'contact.score >= 50 and has_tag("vip") or contact.plan == "team"',
        Or(
            (
                And((Compare("contact.score", ">=", 50), HasTag("vip"))),
                Compare("contact.plan", "==", "team"),
            )
        ),
    ),
    (
        'contact.score >= 50 and (has_tag("vip") or contact.plan == "team")',
        And(
            (
                Compare("contact.score", ">=", 50),
                Or((HasTag("vip"), Compare("contact.plan", "==", "team"))),
            )
        ),
    ),
    ("not not contact.a == 1", Not(Not(Compare("contact.a", "==", 1)))),
    (
        "contact.a == 1 and contact.b == 2 and contact.c == 3",
        And(tuple(Compare(f"contact.{n}", "==", i) for n, i in (("a", 1), ("b", 2), ("c", 3)))),
    ),
    (
        "\n  contact.a == 1\n  and contact.b == 2\n",
        And((Compare("contact.a", "==", 1), Compare("contact.b", "==", 2))),
    ),
]


@pytest.mark.parametrize(("text", "tree"), GOLDEN, ids=[t for t, _ in GOLDEN])
def test_valid_conditions_parse_to_their_tree(text: str, tree: Condition) -> None:
    parsed = parse_condition(text)
    assert parsed == tree
    assert repr(parsed) == repr(tree)  # 1, 1.0 and True are equal in Python, not here


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("contact.company is set", "contact.company exists"),
        ("contact.company is not set", "not contact.company exists"),
        ("contact.x == 'a'", 'contact.x == "a"'),
        (
            'event("buy", where=properties.a == 1, within=36h)',
            'event("buy", within=1d12h, where=properties.a == 1)',
        ),
        ("((contact.a == 1))", "contact.a == 1"),
        (
            '(contact.a == 1 or contact.b == 2) and has_tag("x")',
            '(contact.a == 1 or contact.b == 2) and has_tag("x")',
        ),
        ("not (contact.a == 1 and contact.b == 2)", "not (contact.a == 1 and contact.b == 2)"),
        (
            "contact.a == 1 and contact.b == 2 or contact.c == 3",
            "contact.a == 1 and contact.b == 2 or contact.c == 3",
        ),
        ("contact.x in [1, 2.5,]", "contact.x in [1, 2.5]"),
    ],
)
def test_to_text_is_canonical(text: str, canonical: str) -> None:
    assert parse_condition(text).to_text() == canonical
    assert parse_condition(canonical).to_text() == canonical


@given(any_conditions())
@settings(max_examples=300, deadline=None)
def test_every_tree_round_trips_through_its_text(tree: Condition) -> None:
    again = parse_condition(tree.to_text())
    assert again == tree
    assert repr(again) == repr(tree)


# --- parsing: refusals say what and where ----------------------------------------------------

INVALID: list[tuple[str, str, int]] = [
    ("contact.score >=", "expected a value after '>='", 17),
    ("contact.score => 50", "unknown operator '=>' (did you mean '>='?)", 15),
    ("contact.score = 50", "unknown operator '=' (did you mean '=='?)", 15),
    ("contact.score === 50", "unknown operator '===' (did you mean '=='?)", 15),
    ('contact.country <> "DE"', "unknown operator '<>' (did you mean '!='?)", 17),
    ("contact.a == 1 && contact.b == 2", "unknown operator '&&' (did you mean 'and'?)", 16),
    ('!has_tag("vip")', "unknown operator '!' (did you mean 'not'?)", 1),
    ("contact.a == 1 AND contact.b == 2", "write 'and' in lower case", 16),
    ('(has_tag("a") Or has_tag("b"))', "write 'or' in lower case", 15),
    ('contact.score >= "50"', "'>=' compares numbers; \"50\" is text", 18),
    ('contact.score == "high"', 'contact.score is a number; "high" is text', 18),
    (
        'contact.status == "subscribd"',
        "unknown status \"subscribd\" (did you mean 'subscribed'?); a status is subscribed, "
        "unsubscribed, bounced, complained",
        19,
    ),
    (
        'contact.status in ["bounced", "complaind"]',
        "unknown status \"complaind\" (did you mean 'complained'?); a status is subscribed, "
        "unsubscribed, bounced, complained",
        31,
    ),
    (
        'contact.email ends_with "@ACME.example"',
        'emails are stored in lower case; write "@acme.example"',
        25,
    ),
    ("contact.country == DE", 'text needs quotes: "DE" (or did you mean true/false?)', 20),
    (
        "contact.country == null",
        "null is not a value here; to test for an empty field write 'not contact.<name> exists'",
        20,
    ),
    (
        'contact.company is "x"',
        "expected 'set' or 'not set' after 'is' (to compare, use '==')",
        20,
    ),
    ('contact.tags contains "vip"', 'test tags with has_tag("..."), e.g. has_tag("vip")', 1),
    (
        "score >= 50",
        "unknown word 'score' (fields start with 'contact.', e.g. contact.score)",
        1,
    ),
    (
        "event.amount > 100",
        "unknown field 'event.amount' (did you mean 'properties.amount'?); fields start with "
        "'contact.' or 'properties.'",
        1,
    ),
    (
        'contact.address.city == "Berlin"',
        "nested fields are not supported: 'contact.address.city'",
        1,
    ),
    ('hastag("vip")', "unknown word 'hastag' (did you mean 'has_tag(\"...\")'?)", 1),
    ('tag "vip"', "unknown word 'tag' (did you mean 'has_tag(\"...\")'?)", 1),
    ('hsa_tag("vip")', "unknown function 'hsa_tag' (did you mean 'has_tag'?)", 1),
    ("has_tag(vip)", 'expected a tag in quotes (names go in quotes: has_tag("vip"))', 9),
    (
        'opened("Welcome")',
        "\"Welcome\" is not a step id (lower-case letters, digits, '-' and '_', starting with a "
        "letter)",
        8,
    ),
    ('event("purchase", within="30d")', "write the duration without quotes: within=30d", 26),
    ('event("purchase", within=30)', "a duration needs a unit: 30d, 30h or 30m", 26),
    (
        'event("purchase", whithin=30d)',
        "expected within= or where= but found 'whithin' (did you mean 'within'?)",
        19,
    ),
    (
        'event("purchase", where=contact.score > 1)',
        "inside where=, test the event's properties: properties.<name>",
        25,
    ),
    ('event("purchase", within=30d, within=2d)', "within= is given twice", 31),
    (
        'event("purchase", within=30days)',
        "'30days' is neither a number nor a duration (durations look like 30d, 12h, 1d12h)",
        26,
    ),
    ('event("p", within=0d)', "within= must be longer than zero and at most 3650d", 19),
    ("(contact.a == 1", "expected ')' to close the '(' at column 1 but found the end", 16),
    (
        "contact.a == 1)",
        "unexpected ')' after a complete condition (missing 'and' or 'or'?)",
        15,
    ),
    (
        "contact.a == 1 contact.b == 2",
        "unexpected 'contact.b' after a complete condition (missing 'and' or 'or'?)",
        16,
    ),
    ("contact.a == 1 and", "expected a condition after 'and'", 16),
    ("contact.a == 1 and or", "expected a condition but found 'or'", 20),
    (
        'contact.plan in ["pro", 1]',
        'a list holds one kind of value: 1 is a number but "pro" is text',
        25,
    ),
    ("contact.plan in []", "an empty list never matches", 17),
    (
        'contact.plan in ["pro" "team"]',
        "expected ',' or ']' in the list starting at column 17 but found '\"team\"'",
        24,
    ),
    ('contact.plan in "pro"', 'expected a list after \'in\', e.g. ["pro", "team"]', 17),
    ('contact.country == "DE', 'text starting here is not closed with "', 20),
    ('contact.country == "D\\E"', "unknown escape '\\E' in text (use \\\\, \\\" or \\')", 22),
    ("contact.a > 1e400", "number 1e400 is too large", 13),
    (
        "contact.a > 10000000000000000",
        "number 10000000000000000 is too large (the limit is 10^15)",
        13,
    ),
    ("contact.name contains 5", "'contains' looks inside text; 5 is a number", 23),
    ("contact.score exists", "contact.score always has a value; 'exists' is for custom fields", 1),
    ('contact.x endswith "a"', "unknown operator 'endswith' (did you mean 'ends_with'?)", 11),
    (
        "contact.x not exists",
        "expected 'in' after 'not' (to negate, write 'not contact.x ...' or 'contact.x is not "
        "set')",
        15,
    ),
    (
        "contact.x",
        "expected an operator after 'contact.x' (==, !=, <, <=, >, >=, in, contains, "
        "starts_with, ends_with, exists) but found the end",
        10,
    ),
    ("", "the condition is empty", 1),
    ("   ", "the condition is empty", 1),
    ("contact. == 1", "'contact.' needs a field name after the dot, e.g. contact.country", 1),
    (
        "contact.1a == 1",
        "'1a' is not a field name (letters, digits and '_', not starting with a digit)",
        9,
    ),
    ("contact.a == 1 $", "unexpected character '$'", 16),
    ("contact.a == [1]", "use 'in' to compare with a list", 14),
    ("contact.a == contact.b", "compare with a value, not with another field ('contact.b')", 14),
    ("50 <= contact.score", "expected a condition (e.g. contact.score >= 50) but found '50'", 1),
    ("contact.score > 1d", "a duration goes only in event(..., within=...)", 17),
    ('event("buy now")', '"buy now" is not an event name (letters, digits and _ . : -)', 7),
    ('__import__("os")', "unknown function '__import__'", 1),
]


@pytest.mark.parametrize(("text", "message", "column"), INVALID, ids=[t for t, _, _ in INVALID])
def test_invalid_conditions_say_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert (caught.value.message, caught.value.column) == (message, column)
    assert str(caught.value) == f"{message} at column {column}"


def test_a_condition_error_is_a_value_error_so_pydantic_validators_may_raise_it() -> None:
    assert issubclass(ConditionError, ValueError)


@pytest.mark.parametrize("text", ["contact.score > 1", 'has_tag("x")', 'opened("a")'])
def test_an_event_filter_only_tests_the_event(text: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_event_filter(text)
    assert caught.value.message == "an event filter tests the event: write properties.<name>"
    assert caught.value.column == 1


def test_an_event_filter_accepts_properties() -> None:
    assert parse_event_filter("properties.total > 50 and not properties.test exists") == And(
        (Compare("properties.total", ">", 50), Not(Exists("properties.test")))
    )


# --- bounds ----------------------------------------------------------------------------------


def test_huge_input_is_refused_before_reading_it() -> None:
    text = "contact.a == 1 and " * 10_000 + "contact.a == 1"
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.message == (
        f"the condition is {len(text)} characters long; the limit is {MAX_LENGTH}"
    )


@pytest.mark.parametrize(
    ("opening", "closing", "levels"),
    [("(", ")", 1), ("not ", "", 1), ("not (", ")", 2)],
    ids=["parentheses", "not", "both"],
)
def test_deep_nesting_is_refused(opening: str, closing: str, levels: int) -> None:
    """Each '(' and each 'not' is one level; 31 levels around a test are fine, 500 are not."""
    fits = (MAX_DEPTH - 1) // levels
    parse_condition(opening * fits + "contact.a == 1" + closing * fits)
    deep = opening * 500 + "contact.a == 1" + closing * 500
    with pytest.raises(ConditionError) as caught:
        parse_condition(deep[:MAX_LENGTH])
    assert caught.value.message == f"the condition nests too deeply (more than {MAX_DEPTH} levels)"


def test_long_lists_are_refused() -> None:
    fits = "contact.n in [" + ", ".join(["1"] * MAX_LIST) + "]"
    assert len(parse_condition(fits).value) == MAX_LIST  # type: ignore[attr-defined]
    with pytest.raises(ConditionError) as caught:
        parse_condition("contact.n in [" + ", ".join(["1"] * (MAX_LIST + 1)) + "]")
    assert caught.value.message == f"a list holds at most {MAX_LIST} values"


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_raises_condition_error(text: str) -> None:
    try:
        parse_condition(text)
    except ConditionError as exc:
        assert 1 <= exc.column <= len(text) + 1


@given(
    st.lists(
        st.sampled_from(
            [
                "contact.a",
                "==",
                '"x"',
                "1",
                "and",
                "or",
                "not",
                "(",
                ")",
                "[",
                "]",
                ",",
                "in",
                "has_tag",
                "event",
                "within=",
                "2d",
                "where=",
                "exists",
            ]
        ),
        max_size=12,
    )
)
@settings(max_examples=300, deadline=None)
def test_token_soup_parses_or_raises_condition_error(words: list[str]) -> None:
    try:
        tree = parse_condition(" ".join(words))
    except ConditionError:
        return
    assert parse_condition(tree.to_text()) == tree


# --- references ------------------------------------------------------------------------------


def test_references_for_validation() -> None:
    text = 'opened("welcome") and (clicked("tips") or event("purchase")) and event("refund")'
    tree = parse_condition(text)
    assert referenced_steps(tree) == {"welcome", "tips"}
    assert step_references(tree) == [("welcome", 1), ("tips", 24)]
    assert referenced_events(tree) == {"purchase", "refund"}
    assert not is_contact_only(tree)
    assert is_contact_only(parse_condition('contact.a == 1 or has_tag("x")'))
    assert not is_contact_only(parse_condition("properties.a == 1"))


# --- evaluation ------------------------------------------------------------------------------


def facts(**kw: Any) -> ConditionFacts:
    return ConditionFacts(now=NOW, **kw)


ANN = facts(
    fields={"country": "DE", "plan": "pro", "age": 41, "beta": True, "company": None, "n": "5"},
    tags=("vip",),
    score=60,
    status="subscribed",
    email="ann@acme.example",
    opened=("welcome",),
    clicked=(),
    events=(
        EventFact("purchase", NOW - timedelta(days=3), {"amount": 120, "category": "boots"}),
        EventFact("purchase", NOW - timedelta(days=40), {"amount": 500, "category": "tents"}),
        EventFact("purchase", NOW + timedelta(days=1), {"amount": 900, "category": "socks"}),
    ),
    properties={"total": 75},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('contact.country == "DE"', True),
        ('contact.country != "DE"', False),
        ('contact.plan in ["pro", "team"]', True),
        ('contact.plan not in ["pro", "team"]', False),
        ("contact.age >= 41 and contact.age < 41.5", True),
        ("contact.beta == true", True),
        ("contact.beta == 1", False),  # a bool is not a number
        ("contact.n == 5", False),  # text is not a number
        ("contact.n > 4", False),
        ('contact.n == "5"', True),
        ('contact.missing != "DE"', False),  # missing: every comparison is false
        ('contact.missing not in ["DE"]', False),
        ('not contact.missing == "DE"', True),
        ("contact.company exists", False),  # null is not set
        ("contact.country is set", True),
        ("contact.missing is not set", True),
        ('contact.email ends_with "@acme.example"', True),
        ('contact.email starts_with "ann@"', True),
        ('contact.email contains "acme"', True),
        ('contact.country contains "D"', True),
        ('contact.age contains "4"', False),
        ('contact.status == "subscribed"', True),
        ("contact.score >= 50", True),
        ('has_tag("vip") and not has_tag("new")', True),
        ('opened("welcome")', True),
        ('clicked("welcome")', False),
        ('event("purchase")', True),
        ('event("refund")', False),
        ('event("purchase", within=30d)', True),
        ('event("purchase", within=2d)', False),
        ('event("purchase", within=30d, where=properties.amount > 100)', True),
        ('event("purchase", within=30d, where=properties.category == "tents")', False),
        ('event("purchase", where=properties.category == "tents")', True),
        ('event("purchase", where=properties.category == "socks")', False),  # in the future
        ("properties.total > 50", True),
        ("properties.missing > 50", False),
        ('contact.country == "FR" or contact.score > 59', True),
    ],
)
def test_evaluate(text: str, expected: bool) -> None:
    assert evaluate(parse_condition(text), ANN) is expected


def test_within_includes_its_boundary() -> None:
    at_edge = facts(events=(EventFact("visit", NOW - timedelta(days=30)),))
    assert evaluate(parse_condition('event("visit", within=30d)'), at_edge)
    assert not evaluate(parse_condition('event("visit", within=29d23h)'), at_edge)


def test_facts_need_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ConditionFacts(now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        EventFact("x", datetime(2026, 1, 1))


# --- SQL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "what", "column"),
    [
        ('contact.a == 1 and opened("welcome")', "opened(...)", 20),
        ('clicked("tips")', "clicked(...)", 1),
        ('not event("purchase")', "event(...)", 5),
        ("properties.total > 5", "properties.total", 1),
    ],
)
def test_to_sql_refuses_what_is_not_on_the_contact(text: str, what: str, column: int) -> None:
    with pytest.raises(ConditionError) as caught:
        to_sql(parse_condition(text), CONTACTS)
    assert caught.value.message == (
        f"{what} is not stored on the contact and cannot be used to filter contacts"
    )
    assert caught.value.column == column


def test_to_sql_binds_every_value() -> None:
    tree = parse_condition(
        'contact.x == "\'; DROP TABLE contacts; --" or has_tag("a\' OR 1=1") or '
        'contact.email contains "%"'
    )
    compiled = select(CONTACTS.c.id).where(to_sql(tree, CONTACTS)).compile(dialect=sqlite.dialect())
    assert "DROP" not in str(compiled) and "OR 1=1" not in str(compiled)
    assert "'; DROP TABLE contacts; --" in compiled.params.values()


def _facts_of(contact: Contact) -> ConditionFacts:
    return ConditionFacts(
        now=NOW,
        fields=contact.fields,
        tags=tuple(contact.tags),
        score=contact.score,
        status=str(contact.status),
        email=contact.email,
    )


@given(rows=st.lists(contact_rows(), min_size=1, max_size=8), tree=contact_conditions())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_sql_selects_exactly_the_contacts_evaluate_accepts(
    any_engine: Engine, rows: list[dict[str, Any]], tree: Condition
) -> None:
    contacts = [
        Contact(
            email=f"{row['email_local']}{i}@{row['email_domain']}",
            fields=row["fields"],
            tags=row["tags"],
            score=row["score"],
            status=row["status"],
        )
        for i, row in enumerate(rows)
    ]
    with Session(any_engine) as session:
        session.add_all(contacts)
        session.flush()
        selected = set(session.exec(select(Contact.id).where(to_sql(tree, CONTACTS))).all())
        expected = {c.id for c in contacts if evaluate(tree, _facts_of(c))}
        session.rollback()
    assert selected == expected, tree.to_text()


@pytest.mark.parametrize(
    "text",
    [
        'contact.country == "DE"',
        "contact.age > 40",
        "contact.beta == true",
        "contact.beta != false",
        'contact.n == "5"',
        "contact.n == 5",
        "contact.company exists",
        "not contact.company exists",
        'not contact.missing == "x"',
        'contact.missing != "x"',
        'contact.email ends_with "@acme.example"',
        'contact.email ends_with "xann@acme.example"',
        'contact.email starts_with ""',
        'contact.plan in ["pro", "team"]',
        'contact.plan not in ["team"]',
        'has_tag("vip") and contact.score >= 50 and contact.status == "subscribed"',
    ],
)
def test_sql_and_evaluate_agree_on_known_contacts(any_engine: Engine, text: str) -> None:
    tree = parse_condition(text)
    people = [
        Contact(email="ann@acme.example", fields=dict(ANN.fields), tags=["vip"], score=60),
        Contact(email="bo@example.com", fields={"country": "FR", "n": 5, "beta": False}),
        Contact(email="cy@acme.example", fields={"company": "Acme", "plan": ["pro"]}),
    ]
    with Session(any_engine) as session:
        session.add_all(people)
        session.flush()
        selected = set(session.exec(select(Contact.id).where(to_sql(tree, CONTACTS))).all())
        expected = {c.id for c in people if evaluate(tree, _facts_of(c))}
        session.rollback()
    assert selected == expected
