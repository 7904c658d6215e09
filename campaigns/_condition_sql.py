"""Compiling the contact-only part of a condition to SQLAlchemy with bound parameters only, for
SQLite and PostgreSQL (private: import from ``campaigns.conditions``)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from campaigns._condition_tree import (
    _TEXT_OPS,
    BUILTIN_FIELDS,
    And,
    Compare,
    Condition,
    ConditionError,
    Exists,
    HasTag,
    Not,
    Or,
    _kind,
)

# ---------------------------------------------------------------------------------------------
# SQL: the contact-only subset, as a SQLAlchemy expression with bound parameters only.
# JSON access differs between SQLite (json_type/json_extract with a path) and PostgreSQL
# (json_typeof, ->, ->>), so each access is a small construct compiled per dialect. Every value
# is typed-guarded: a field holding text never compares with a number (SQLite would say text >
# any number; PostgreSQL would fail to cast), matching ``evaluate``.


class _JsonAccess(FunctionElement[Any]):
    """Arguments: the JSON column and the key (a bound parameter)."""

    inherit_cache = True


class _JsonText(_JsonAccess):
    type = sa.Text()
    inherit_cache = True


class _JsonNumber(_JsonAccess):
    type = sa.Float()
    inherit_cache = True


class _JsonBool(_JsonAccess):
    type = sa.Boolean()
    inherit_cache = True


class _JsonIsSet(_JsonAccess):
    type = sa.Boolean()
    inherit_cache = True


class _HasTag(_JsonAccess):
    """Arguments: the JSON tags column and the tag."""

    type = sa.Boolean()
    inherit_cache = True


class _Contains(FunctionElement[bool]):
    """Arguments: the text and the part it must contain (case-sensitive on both databases)."""

    type = sa.Boolean()
    inherit_cache = True


def _args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> list[str]:
    return [compiler.process(c, **kw) for c in element.clauses.clauses]


#: Each construct's SQL per dialect: ``{a}`` and ``{b}`` are its two compiled arguments (the
#: column or text, then the key, tag or part: a bound parameter, never a value), ``{path}`` is
#: SQLite's JSON path of the key ``{b}``. Only compiled fragments go into the text.
_DIALECT_SQL: dict[str, dict[type[FunctionElement[Any]], str]] = {
    "sqlite": {
        _JsonText: "CASE WHEN json_type({a}, {path}) = 'text' THEN json_extract({a}, {path}) END",
        _JsonNumber: (
            "CASE WHEN json_type({a}, {path}) IN ('integer', 'real') "
            "THEN json_extract({a}, {path}) END"
        ),
        _JsonBool: "CASE json_type({a}, {path}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END",
        _JsonIsSet: "(coalesce(json_type({a}, {path}), 'null') <> 'null')",
        _HasTag: "EXISTS (SELECT 1 FROM json_each({a}) WHERE json_each.value = {b})",
        _Contains: "(instr({a}, {b}) > 0)",
    },
    "postgresql": {
        _JsonText: (
            "CASE WHEN json_typeof({a} -> CAST({b} AS TEXT)) = 'string' "
            "THEN {a} ->> CAST({b} AS TEXT) END"
        ),
        _JsonNumber: (
            "CASE WHEN json_typeof({a} -> CAST({b} AS TEXT)) = 'number' "
            "THEN CAST({a} ->> CAST({b} AS TEXT) AS DOUBLE PRECISION) END"
        ),
        _JsonBool: (
            "CASE WHEN json_typeof({a} -> CAST({b} AS TEXT)) = 'boolean' "
            "THEN CAST({a} ->> CAST({b} AS TEXT) AS BOOLEAN) END"
        ),
        _JsonIsSet: "(coalesce(json_typeof({a} -> CAST({b} AS TEXT)), 'null') <> 'null')",
        _HasTag: (
            "EXISTS (SELECT 1 FROM json_array_elements_text({a}) AS tag "
            "WHERE tag = CAST({b} AS TEXT))"
        ),
        _Contains: "(strpos({a}, CAST({b} AS TEXT)) > 0)",
    },
}


def _compiler_for(sql: str) -> Callable[..., str]:
    def compile_(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
        a, b = _args(element, compiler, **kw)
        return sql.format(a=a, b=b, path=f"'$.\"' || {b} || '\"'")

    return compile_


for _dialect, _constructs in _DIALECT_SQL.items():
    for _construct, _sql in _constructs.items():
        compiles(_construct, _dialect)(_compiler_for(_sql))


@compiles(_JsonAccess)
@compiles(_Contains)
def _unsupported(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    raise sa.exc.CompileError(
        f"conditions compile for SQLite and PostgreSQL only, not {compiler.dialect.name}"
    )


def to_sql(cond: Condition, contacts: sa.Table) -> ColumnElement[bool]:
    """A WHERE clause over the contacts table selecting exactly the contacts ``evaluate`` accepts.

    ``contacts`` is the table (``SQLModel.metadata.tables["contacts"]``), passed in because this
    package imports nothing from ``contacts``. Events, opens, clicks and ``properties.*`` are not
    stored on the contact row: they raise ConditionError at the column where they are written.
    """
    if isinstance(cond, And):
        return sa.and_(*(to_sql(i, contacts) for i in cond.items))
    if isinstance(cond, Or):
        return sa.or_(*(to_sql(i, contacts) for i in cond.items))
    if isinstance(cond, Not):
        return sa.not_(to_sql(cond.item, contacts))
    if isinstance(cond, HasTag):
        return _never_null(_HasTag(contacts.c.tags, _text_param(cond.tag)))
    if isinstance(cond, Compare | Exists) and cond.field.startswith("contact."):
        return _never_null(_contact_test(cond, contacts))
    what = (
        cond.field
        if isinstance(cond, Compare | Exists)
        else cond.to_text().partition("(")[0] + "(...)"
    )
    raise ConditionError(
        f"{what} is not stored on the contact and cannot be used to filter contacts",
        max(cond.column, 1),
    )


def _never_null(predicate: ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL's NULL would make ``not`` of a missing field unknown; conditions are two-valued."""
    return sa.func.coalesce(predicate, sa.false(), type_=sa.Boolean())


def _text_param(value: str) -> ColumnElement[str]:
    return sa.cast(sa.literal(value, sa.Text()), sa.Text())


def _contact_test(cond: Compare | Exists, contacts: sa.Table) -> ColumnElement[Any]:
    name = cond.field.removeprefix("contact.")
    if isinstance(cond, Exists):
        return (
            sa.true()
            if name in BUILTIN_FIELDS
            else _JsonIsSet(contacts.c.fields, sa.literal(name, sa.Text()))
        )
    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    target: ColumnElement[Any]
    if name in BUILTIN_FIELDS:
        target = contacts.c[name]
    else:
        kind = _kind(values[0])
        accessor = {"text": _JsonText, "number": _JsonNumber}.get(kind or "", _JsonBool)
        target = accessor(contacts.c.fields, sa.literal(name, sa.Text()))
    op = cond.op
    if op == "in":
        return target.in_(values)
    if op == "not in":
        return target.not_in(values)
    if op in _TEXT_OPS:
        part = str(values[0])
        if op == "contains":
            return _Contains(target, _text_param(part))
        if op == "starts_with":
            return sa.func.substr(target, 1, sa.func.length(_text_param(part))) == _text_param(part)
        tail_start = sa.func.length(target) - sa.func.length(_text_param(part)) + 1
        return sa.and_(
            sa.func.length(target) >= sa.func.length(_text_param(part)),
            sa.func.substr(target, tail_start) == _text_param(part),
        )
    return _SQL_OPERATORS[op](target, values[0])


_SQL_OPERATORS: dict[str, Callable[[Any, Any], ColumnElement[Any]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
