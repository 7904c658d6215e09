"""Hypothesis strategies for conditions: trees the parser accepts, and contacts to test them on.

Values for the SQL tests come from small pools, so generated conditions often hit generated
contacts (a condition that matches nobody tests little); round-trip trees use any text or number.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from campaigns.conditions import (
    MAX_NUMBER,
    MAX_WITHIN,
    STATUSES,
    And,
    Clicked,
    Compare,
    Condition,
    Exists,
    HadEvent,
    HasTag,
    Not,
    Opened,
    Or,
)

FIELD_NAMES = ("country", "plan", "age", "vip", "note")
TEXTS = ("DE", "FR", "", "de", "a", "ab", "b@", "x")
NUMBERS = (0, 1, -1, 2.5, 50, 100)
TAGS = ("vip", "new", "x")
EMAIL_PARTS = ("a", "ann", "@acme.example", "b@", ".com", "n@")

Draw = Any


def _compares(
    fields: st.SearchStrategy[str],
    texts: st.SearchStrategy[str],
    numbers: st.SearchStrategy[int | float],
) -> st.SearchStrategy[Condition]:
    """Comparisons whose value fits the operator, as the parser demands."""
    scalars = st.one_of(texts, numbers, st.booleans())

    def lists(items: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
        return st.lists(items, min_size=1, max_size=3).map(tuple)

    return st.one_of(
        st.builds(Compare, fields, st.sampled_from(["==", "!="]), scalars),
        st.builds(Compare, fields, st.sampled_from(["<", "<=", ">", ">="]), numbers),
        st.builds(
            Compare, fields, st.sampled_from(["contains", "starts_with", "ends_with"]), texts
        ),
        st.builds(
            Compare,
            fields,
            st.sampled_from(["in", "not in"]),
            st.one_of(lists(texts), lists(numbers), lists(st.booleans())),
        ),
    )


def _builtin_compares(
    emails: st.SearchStrategy[str], numbers: st.SearchStrategy[int | float]
) -> st.SearchStrategy[Condition]:
    in_ops = st.sampled_from(["==", "!=", "in", "not in"])

    def fit(op: str, value: Any) -> Any:
        return value if op in ("in", "not in") else value[0]

    def built(field: str, op: str, values: tuple[Any, ...]) -> Condition:
        return Compare(field, op, fit(op, values))  # type: ignore[arg-type]

    some = lambda s: st.lists(s, min_size=1, max_size=3).map(tuple)  # noqa: E731
    return st.one_of(
        st.builds(built, st.just("contact.status"), in_ops, some(st.sampled_from(STATUSES))),
        st.builds(
            built,
            st.just("contact.score"),
            st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]),
            some(numbers),
        ),
        st.builds(
            built,
            st.just("contact.email"),
            st.sampled_from(["==", "!=", "in", "not in", "contains", "starts_with", "ends_with"]),
            some(emails),
        ),
    )


def _combine(children: st.SearchStrategy[Condition]) -> st.SearchStrategy[Condition]:
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(Not, children), st.builds(And, many), st.builds(Or, many))


def contact_conditions() -> st.SearchStrategy[Condition]:
    """Conditions ``to_sql`` can compile, over the small value pools."""
    fields = st.sampled_from(FIELD_NAMES).map(lambda n: f"contact.{n}")
    leaves = st.one_of(
        _compares(fields, st.sampled_from(TEXTS), st.sampled_from(NUMBERS)),
        _builtin_compares(st.sampled_from(EMAIL_PARTS), st.sampled_from(NUMBERS)),
        st.builds(Exists, fields),
        st.builds(HasTag, st.sampled_from(TAGS)),
    )
    return st.recursive(leaves, _combine, max_leaves=8)


any_text = st.text(max_size=12)
any_number = st.one_of(
    st.integers(-MAX_NUMBER, MAX_NUMBER),
    st.floats(-MAX_NUMBER, MAX_NUMBER, allow_nan=False, allow_infinity=False),
)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
step_ids = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)


def property_conditions() -> st.SearchStrategy[Condition]:
    """What ``where=`` accepts: tests on ``properties.*`` and logic."""
    fields = names.map(lambda n: f"properties.{n}")
    leaves = st.one_of(
        _compares(fields, any_text, any_number),
        st.builds(Exists, fields),
    )
    return st.recursive(leaves, _combine, max_leaves=4)


def any_conditions() -> st.SearchStrategy[Condition]:
    """Every kind of node, with any text and number: for the round trip through ``to_text``."""
    custom = names.filter(lambda n: n not in ("email", "score", "status", "tags")).map(
        lambda n: f"contact.{n}"
    )
    leaves = st.one_of(
        _compares(custom, any_text, any_number),
        _compares(names.map(lambda n: f"properties.{n}"), any_text, any_number),
        _builtin_compares(any_text.filter(lambda t: t == t.lower()), any_number),
        st.builds(Exists, custom),
        st.builds(HasTag, st.text(min_size=1, max_size=12)),
        st.builds(Opened, step_ids),
        st.builds(Clicked, step_ids),
        st.builds(
            HadEvent,
            st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True),
            st.none() | st.integers(1, MAX_WITHIN),
            st.none() | property_conditions(),
        ),
    )
    return st.recursive(leaves, _combine, max_leaves=10)


field_values = st.one_of(
    st.sampled_from(TEXTS),
    st.sampled_from(NUMBERS),
    st.booleans(),
    st.none(),
    st.lists(st.sampled_from(TEXTS), max_size=2),
)


@st.composite
def contact_rows(draw: Draw) -> dict[str, Any]:
    """The columns of one contact, without a unique email (the test adds its index)."""
    return {
        "fields": draw(st.dictionaries(st.sampled_from(FIELD_NAMES), field_values, max_size=4)),
        "tags": draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=2)),
        "score": draw(st.sampled_from(NUMBERS).filter(lambda n: isinstance(n, int))),
        "status": draw(st.sampled_from(STATUSES)),
        "email_local": draw(st.sampled_from(("a", "ann", "b", "n"))),
        "email_domain": draw(st.sampled_from(("acme.example", "x.com"))),
    }
