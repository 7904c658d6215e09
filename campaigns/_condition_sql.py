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


def _sqlite_path(key: str) -> str:
    return f"'$.\"' || {key} || '\"'"


@compiles(_JsonText, "sqlite")
def _sqlite_text(element: _JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    path = _sqlite_path(key)
    return f"CASE WHEN json_type({col}, {path}) = 'text' THEN json_extract({col}, {path}) END"


@compiles(_JsonNumber, "sqlite")
def _sqlite_number(element: _JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    path = _sqlite_path(key)
    return (
        f"CASE WHEN json_type({col}, {path}) IN ('integer', 'real') "
        f"THEN json_extract({col}, {path}) END"
    )


@compiles(_JsonBool, "sqlite")
def _sqlite_bool(element: _JsonBool, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return f"CASE json_type({col}, {_sqlite_path(key)}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"


@compiles(_JsonIsSet, "sqlite")
def _sqlite_is_set(element: _JsonIsSet, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return f"(coalesce(json_type({col}, {_sqlite_path(key)}), 'null') <> 'null')"


@compiles(_HasTag, "sqlite")
def _sqlite_has_tag(element: _HasTag, compiler: SQLCompiler, **kw: Any) -> str:
    col, tag = _args(element, compiler, **kw)
    # only compiled fragments (a column, a bound parameter) go into the text
    return f"EXISTS (SELECT 1 FROM json_each({col}) WHERE json_each.value = {tag})"  # noqa: S608


@compiles(_Contains, "sqlite")
def _sqlite_contains(element: _Contains, compiler: SQLCompiler, **kw: Any) -> str:
    text, part = _args(element, compiler, **kw)
    return f"(instr({text}, {part}) > 0)"


@compiles(_JsonText, "postgresql")
def _pg_text(element: _JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return (
        f"CASE WHEN json_typeof({col} -> CAST({key} AS TEXT)) = 'string' "
        f"THEN {col} ->> CAST({key} AS TEXT) END"
    )


@compiles(_JsonNumber, "postgresql")
def _pg_number(element: _JsonNumber, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return (
        f"CASE WHEN json_typeof({col} -> CAST({key} AS TEXT)) = 'number' "
        f"THEN CAST({col} ->> CAST({key} AS TEXT) AS DOUBLE PRECISION) END"
    )


@compiles(_JsonBool, "postgresql")
def _pg_bool(element: _JsonBool, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return (
        f"CASE WHEN json_typeof({col} -> CAST({key} AS TEXT)) = 'boolean' "
        f"THEN CAST({col} ->> CAST({key} AS TEXT) AS BOOLEAN) END"
    )


@compiles(_JsonIsSet, "postgresql")
def _pg_is_set(element: _JsonIsSet, compiler: SQLCompiler, **kw: Any) -> str:
    col, key = _args(element, compiler, **kw)
    return f"(coalesce(json_typeof({col} -> CAST({key} AS TEXT)), 'null') <> 'null')"


@compiles(_HasTag, "postgresql")
def _pg_has_tag(element: _HasTag, compiler: SQLCompiler, **kw: Any) -> str:
    col, tag = _args(element, compiler, **kw)
    return (  # only compiled fragments (a column, a bound parameter) go into the text
        f"EXISTS (SELECT 1 FROM json_array_elements_text({col}) AS tag "  # noqa: S608
        f"WHERE tag = CAST({tag} AS TEXT))"
    )


@compiles(_Contains, "postgresql")
def _pg_contains(element: _Contains, compiler: SQLCompiler, **kw: Any) -> str:
    text, part = _args(element, compiler, **kw)
    return f"(strpos({text}, CAST({part} AS TEXT)) > 0)"


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
