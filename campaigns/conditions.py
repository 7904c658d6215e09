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
This module is the public face and holds the tokenizer and parser; the tree
(``_condition_tree``), evaluation (``_condition_eval``) and SQL (``_condition_sql``) sit beside it
and are imported from here. The parser is one method per grammar rule, which is why it alone is
longer than our usual 400 lines.

API: ``parse_condition(text)`` (and ``parse_event_filter`` for ``where:``) gives a tree of frozen
dataclasses (Compare, Exists, HasTag, Opened, Clicked, HadEvent, And, Or, Not) whose ``to_text()``
is the canonical spelling and parses back equal. ``evaluate(tree, ConditionFacts(...))`` is pure
and reads no clock, so Temporal workflows may call it. ``to_sql(tree, contacts_table)`` compiles
the contact-only part to a SQLAlchemy expression with bound parameters only, for SQLite and
PostgreSQL. ``referenced_steps``/``step_references``/``referenced_events`` serve validation.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

from campaigns._condition_eval import ConditionFacts, EventFact, evaluate
from campaigns._condition_sql import to_sql
from campaigns._condition_tree import (
    _EVENT_NAME,
    _FUNCTIONS,
    _NAME,
    _ORDER_OPS,
    _STEP_ID,
    _TEXT_OPS,
    _WORD_OPS,
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
    Op,
    Opened,
    Or,
    Scalar,
    _kind,
    _quote,
    _value_text,
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

# ---------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class _Token:
    kind: Literal["name", "text", "number", "duration", "op", "end"]
    text: str  # as written
    column: int
    value: Scalar = ""


_SPACE = re.compile(r"\s+")
_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)*")
_NUMBER_TOKEN = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WORD_AFTER_NUMBER = re.compile(r"-?[0-9][A-Za-z0-9.]*")
_DURATION_TOKEN = re.compile(r"(?:[0-9]+[wdhmsWDHMS])+")
_DURATION_PART = re.compile(r"([0-9]+)([wdhmsWDHMS])")
_DIGITS = frozenset("0123456789")  # ASCII only: "¹" or "٣" are not numbers here
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "=", "(", ")", "[", "]", ",")
_WRONG_OPERATORS = {
    "===": "==",
    "=>": ">=",
    "=<": "<=",
    "<>": "!=",
    "&&": "and",
    "||": "or",
    "!": "not",
    "&": "and",
    "|": "or",
}
_ESCAPES = {"\\": "\\", '"': '"', "'": "'"}


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(text):
        if m := _SPACE.match(text, i):
            i = m.end()
            continue
        column = i + 1
        ch = text[i]
        if ch in "\"'":
            out.append(_text_token(text, i))
            i += len(out[-1].text)
        elif m := _NAME_TOKEN.match(text, i):
            out.append(_Token("name", m.group(), column))
            i = m.end()
        elif ch in _DIGITS or (ch == "-" and text[i + 1 : i + 2] in _DIGITS):
            out.append(_number_token(text, i))
            i += len(out[-1].text)
        else:
            for wrong, right in _WRONG_OPERATORS.items():
                if text.startswith(wrong, i) and not (wrong == "!" and text.startswith("!=", i)):
                    raise ConditionError(
                        f"unknown operator '{wrong}' (did you mean '{right}'?)", column
                    )
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                raise ConditionError(f"unexpected character {ch!r}", column)
            out.append(_Token("op", op, column))
            i += len(op)
    out.append(_Token("end", "", len(text) + 1))
    return out


def _text_token(text: str, start: int) -> _Token:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return _Token("text", text[start : i + 1], start + 1, "".join(chars))
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                raise ConditionError(
                    f"unknown escape '\\{nxt}' in text (use \\\\, \\\" or \\')", i + 1
                )
            chars.append(_ESCAPES[nxt])
            i += 2
            continue
        chars.append(ch)
        i += 1
    raise ConditionError(f"text starting here is not closed with {quote}", start + 1)


def _number_token(text: str, start: int) -> _Token:
    column = start + 1
    word = _WORD_AFTER_NUMBER.match(text, start)
    assert word is not None  # the caller saw a digit
    if _DURATION_TOKEN.fullmatch(word.group()):
        seconds = sum(
            int(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION_PART.findall(word.group())
        )
        return _Token("duration", word.group(), column, seconds)
    m = _NUMBER_TOKEN.match(text, start)
    assert m is not None
    after = text[m.end() : m.end() + 1]
    if after.isalnum() or after in ("_", "."):
        raise ConditionError(
            f"'{word.group()}' is neither a number nor a duration (durations look like 30d, "
            "12h, 1d12h)",
            column,
        )
    raw = m.group()
    number: int | float
    if any(c in raw for c in ".eE"):
        number = float(raw)
        if not math.isfinite(number):
            raise ConditionError(f"number {raw} is too large", column)
    else:
        number = int(raw)
    if abs(number) > MAX_NUMBER:
        raise ConditionError(f"number {raw} is too large (the limit is 10^15)", column)
    return _Token("number", raw, column, number)


# ---------------------------------------------------------------------------------------------
# Parser: recursive descent, one method per grammar rule.


def parse_condition(text: str) -> Condition:
    """Parse a condition as written in a campaign; ConditionError says what and where."""
    return _Parser(text, event_filter=False).parse()


def parse_event_filter(text: str) -> Condition:
    """Parse a ``where:`` filter of a trigger, wait_for or goal: properties of the event only."""
    return _Parser(text, event_filter=True).parse()


def _hint(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _described(value: Scalar) -> str:
    return f"{_value_text(value)} is {'a number' if _kind(value) == 'number' else _kind(value)}"


class _Parser:
    def __init__(self, text: str, *, event_filter: bool) -> None:
        if not isinstance(text, str):
            raise ConditionError("a condition must be text", 1)
        if len(text) > MAX_LENGTH:
            raise ConditionError(
                f"the condition is {len(text)} characters long; the limit is {MAX_LENGTH}", 1
            )
        self.tokens = _tokens(text)
        self.pos = 0
        self.event_filter = event_filter

    # token helpers

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def _take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def _is(self, kind: str, text: str | None = None) -> bool:
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def _expect_op(self, op: str, what: str) -> _Token:
        if not self._is("op", op):
            raise ConditionError(f"expected {what} but found {self._shown()}", self.tok.column)
        return self._take()

    def _shown(self, token: _Token | None = None) -> str:
        token = token or self.tok
        return "the end" if token.kind == "end" else f"'{token.text}'"

    def _refuse_upper_case_keyword(self) -> None:
        """Where a condition could end, 'AND' is far likelier a habit from SQL than a typo."""
        if self._is("name") and self.tok.text.lower() in ("and", "or", "not"):
            raise ConditionError(f"write '{self.tok.text.lower()}' in lower case", self.tok.column)

    # rules

    def parse(self) -> Condition:
        if self.tok.kind == "end":
            raise ConditionError("the condition is empty", 1)
        node = self._or(0, properties_only=self.event_filter)
        self._refuse_upper_case_keyword()
        if not self._is("end"):
            raise ConditionError(
                f"unexpected {self._shown()} after a complete condition (missing 'and' or 'or'?)",
                self.tok.column,
            )
        return node

    def _or(self, depth: int, *, properties_only: bool) -> Condition:
        first = self.tok
        items = [self._and(depth, properties_only=properties_only)]
        while self._is("name", "or"):
            self._take()
            items.append(self._and(depth, properties_only=properties_only))
        return items[0] if len(items) == 1 else Or(tuple(items), column=first.column)

    def _and(self, depth: int, *, properties_only: bool) -> Condition:
        first = self.tok
        items = [self._factor(depth, properties_only=properties_only)]
        while self._is("name", "and"):
            self._take()
            items.append(self._factor(depth, properties_only=properties_only))
        return items[0] if len(items) == 1 else And(tuple(items), column=first.column)

    def _factor(self, depth: int, *, properties_only: bool) -> Condition:
        token = self.tok
        if depth >= MAX_DEPTH:
            raise ConditionError(
                f"the condition nests too deeply (more than {MAX_DEPTH} levels)", token.column
            )
        if self._is("name", "not"):
            self._take()
            return Not(
                self._factor(depth + 1, properties_only=properties_only), column=token.column
            )
        if self._is("op", "("):
            self._take()
            inner = self._or(depth + 1, properties_only=properties_only)
            self._refuse_upper_case_keyword()
            if not self._is("op", ")"):
                raise ConditionError(
                    f"expected ')' to close the '(' at column {token.column} but found "
                    f"{self._shown()}",
                    self.tok.column,
                )
            self._take()
            return inner
        if token.kind == "name":
            return self._test(depth, properties_only=properties_only)
        if token.kind == "end":
            previous = self.tokens[self.pos - 1] if self.pos else token
            raise ConditionError(f"expected a condition after '{previous.text}'", previous.column)
        raise ConditionError(
            f"expected a condition (e.g. contact.score >= 50) but found {self._shown()}",
            token.column,
        )

    def _test(self, depth: int, *, properties_only: bool) -> Condition:
        token = self._take()
        word = token.text
        if "." not in word:
            if word in _FUNCTIONS:
                if properties_only:
                    raise ConditionError(self._properties_only_message(), token.column)
                return self._call(token, depth)
            if word.lower() in ("and", "or", "not") or word in ("in", "exists", "is"):
                raise ConditionError(
                    f"expected a condition but found '{word}'"
                    + (f" (write '{word.lower()}' in lower case)" if word != word.lower() else ""),
                    token.column,
                )
            if word in ("tag", "tagged", "has_tags", "hastag") or word.lower() == "has_tag":
                raise ConditionError(
                    f"unknown word '{word}' (did you mean 'has_tag(\"...\")'?)", token.column
                )
            if self._is("op", "("):
                raise ConditionError(
                    f"unknown function '{word}'{_hint(word, _FUNCTIONS)}", token.column
                )
            if word in ("contact", "properties"):
                raise ConditionError(
                    f"'{word}' needs a field name after a dot, e.g. {word}.country", token.column
                )
            raise ConditionError(
                f"unknown word '{word}' (fields start with 'contact.', e.g. contact.{word})",
                token.column,
            )
        field = self._field(token, properties_only=properties_only)
        return self._comparison(field, token)

    def _properties_only_message(self) -> str:
        if self.event_filter:
            return "an event filter tests the event: write properties.<name>"
        return "inside where=, test the event's properties: properties.<name>"

    def _field(self, token: _Token, *, properties_only: bool) -> str:
        root, _, rest = token.text.partition(".")
        if root not in ("contact", "properties"):
            suggestion = (
                f"properties.{rest}" if root in ("event", "props", "property") else None
            ) or (f"contact.{rest}" if root in ("contacts", "c", "user") else None)
            hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
            raise ConditionError(
                f"unknown field '{token.text}'{hint}; fields start with 'contact.' or "
                "'properties.'",
                token.column,
            )
        if not rest:
            raise ConditionError(
                f"'{root}.' needs a field name after the dot, e.g. {root}.country", token.column
            )
        if "." in rest:
            raise ConditionError(f"nested fields are not supported: '{token.text}'", token.column)
        if not _NAME.match(rest):
            raise ConditionError(
                f"'{rest}' is not a field name (letters, digits and '_', not starting with a "
                "digit)",
                token.column + len(root) + 1,
            )
        if properties_only and root != "properties":
            raise ConditionError(self._properties_only_message(), token.column)
        if root == "contact" and rest == "tags":
            raise ConditionError('test tags with has_tag("..."), e.g. has_tag("vip")', token.column)
        return token.text

    def _comparison(self, field: str, field_token: _Token) -> Condition:
        op_token = self._take()
        column = field_token.column
        if op_token.kind == "op" and op_token.text in ("==", "!=", *_ORDER_OPS):
            at = self.tok.column
            value = self._scalar(op_token)
            op = cast(Op, op_token.text)
            return self._checked(Compare(field, op, value, column=column), op_token, (at,))
        if op_token.kind == "name":
            word = op_token.text
            if word in _TEXT_OPS:
                at = self.tok.column
                value = self._scalar(op_token)
                op = cast(Op, word)
                return self._checked(Compare(field, op, value, column=column), op_token, (at,))
            if word == "in":
                values, columns = self._list(op_token)
                return self._checked(Compare(field, "in", values, column=column), op_token, columns)
            if word == "not":
                if not self._is("name", "in"):
                    raise ConditionError(
                        f"expected 'in' after 'not' (to negate, write 'not {field} ...' or "
                        f"'{field} is not set')",
                        self.tok.column,
                    )
                values, columns = self._list(self._take())
                node = Compare(field, "not in", values, column=column)
                return self._checked(node, op_token, columns)
            if word in ("exists", "is"):
                negate = False
                if word == "is":
                    if self._is("name", "not"):
                        self._take()
                        negate = True
                    if not self._is("name", "set"):
                        raise ConditionError(
                            "expected 'set' or 'not set' after 'is' (to compare, use '==')",
                            self.tok.column,
                        )
                    self._take()
                self._check_exists(field, field_token)
                exists = Exists(field, column=column)
                return Not(exists, column=column) if negate else exists
            raise ConditionError(
                f"unknown operator '{word}'{_hint(word, (*_WORD_OPS, *_TEXT_OPS))}",
                op_token.column,
            )
        if op_token.kind == "op" and op_token.text == "=":
            raise ConditionError("unknown operator '=' (did you mean '=='?)", op_token.column)
        raise ConditionError(
            f"expected an operator after '{field}' (==, !=, <, <=, >, >=, in, contains, "
            f"starts_with, ends_with, exists) but found {self._shown(op_token)}",
            op_token.column,
        )

    def _scalar(self, after: _Token) -> Scalar:
        token = self.tok
        if token.kind in ("text", "number"):
            self._take()
            return token.value
        if token.kind == "name" and token.text in ("true", "false"):
            self._take()
            return token.text == "true"
        if token.kind == "end":
            raise ConditionError(f"expected a value after '{after.text}'", token.column)
        if token.kind == "name" and token.text in ("null", "none", "None", "NULL"):
            raise ConditionError(
                "null is not a value here; to test for an empty field write "
                "'not contact.<name> exists'",
                token.column,
            )
        if token.kind == "name" and "." in token.text:
            raise ConditionError(
                f"compare with a value, not with another field ('{token.text}')", token.column
            )
        if token.kind == "name":
            raise ConditionError(
                f'text needs quotes: "{token.text}" (or did you mean true/false?)',
                token.column,
            )
        if token.kind == "op" and token.text == "[":
            raise ConditionError("use 'in' to compare with a list", token.column)
        if token.kind == "duration":
            raise ConditionError("a duration goes only in event(..., within=...)", token.column)
        raise ConditionError(
            f"expected a value after '{after.text}' but found {self._shown()}", token.column
        )

    def _list(self, after: _Token) -> tuple[tuple[Scalar, ...], tuple[int, ...]]:
        """The values of a list and the column of each, to point at the one that is wrong."""
        start = self.tok
        if not self._is("op", "["):
            raise ConditionError(
                f'expected a list after \'{after.text}\', e.g. ["pro", "team"]', start.column
            )
        self._take()
        values: list[Scalar] = []
        columns: list[int] = []
        while not self._is("op", "]"):
            if len(values) >= MAX_LIST:
                raise ConditionError(f"a list holds at most {MAX_LIST} values", self.tok.column)
            value_token = self.tok
            value = self._scalar(after if not values else self.tokens[self.pos - 1])
            if values and _kind(value) != _kind(values[0]):
                raise ConditionError(
                    f"a list holds one kind of value: {_described(value)} but "
                    f"{_described(values[0])}",
                    value_token.column,
                )
            values.append(value)
            columns.append(value_token.column)
            if self._is("op", ","):
                self._take()
            elif not self._is("op", "]"):
                raise ConditionError(
                    f"expected ',' or ']' in the list starting at column {start.column} but "
                    f"found {self._shown()}",
                    self.tok.column,
                )
        self._take()
        if not values:
            raise ConditionError("an empty list never matches", start.column)
        return tuple(values), tuple(columns)

    def _checked(self, node: Compare, op_token: _Token, columns: tuple[int, ...]) -> Compare:
        """Type checks that need no data: built-in fields and what each operator compares.

        A wrong operator is reported at the operator, a wrong value at that value.
        """
        op, values = node.op, node.value if isinstance(node.value, tuple) else (node.value,)
        first, at = values[0], columns[0]
        column = op_token.column
        builtin = node.field.removeprefix("contact.") if node.field.startswith("contact.") else ""
        if builtin == "score" and op in _TEXT_OPS:
            raise ConditionError(f"contact.score is a number; '{op}' looks inside text", column)
        if builtin == "email" and op in _ORDER_OPS:
            raise ConditionError(f"'{op}' compares numbers; contact.email is text", column)
        if builtin == "status" and op not in ("==", "!=", "in", "not in"):
            raise ConditionError(
                f"compare contact.status with ==, !=, in or not in, not '{op}'", column
            )
        if op in _ORDER_OPS and _kind(first) != "number":
            raise ConditionError(f"'{op}' compares numbers; {_described(first)}", at)
        if op in _TEXT_OPS and _kind(first) != "text":
            raise ConditionError(f"'{op}' looks inside text; {_described(first)}", at)
        if builtin == "score" and _kind(first) != "number":
            raise ConditionError(f"contact.score is a number; {_described(first)}", at)
        if builtin in ("email", "status") and _kind(first) != "text":
            raise ConditionError(f"contact.{builtin} is text; {_described(first)}", at)
        for v, at in zip(values, columns, strict=True):
            if builtin == "email" and isinstance(v, str) and v != v.lower():
                raise ConditionError(
                    f"emails are stored in lower case; write {_quote(v.lower())}", at
                )
            if builtin == "status" and v not in STATUSES:
                raise ConditionError(
                    f"unknown status {_quote(str(v))}{_hint(str(v), STATUSES)}; a status is "
                    + ", ".join(STATUSES),
                    at,
                )
        return node

    def _check_exists(self, field: str, token: _Token) -> None:
        name = field.removeprefix("contact.")
        if field.startswith("contact.") and name in BUILTIN_FIELDS:
            raise ConditionError(
                f"{field} always has a value; 'exists' is for custom fields", token.column
            )

    def _call(self, name: _Token, depth: int) -> Condition:
        self._expect_op("(", f"'(' after '{name.text}', e.g. {name.text}(\"...\")")
        argument = self.tok
        if argument.kind != "text":
            what = {"has_tag": "a tag", "event": "an event name"}.get(name.text, "a step id")
            quoted = (
                f' (names go in quotes: {name.text}("{argument.text}"))'
                if argument.kind == "name"
                else ""
            )
            raise ConditionError(f"expected {what} in quotes{quoted}", argument.column)
        self._take()
        text = str(argument.value)
        column = name.column
        if name.text == "has_tag":
            if not 1 <= len(text) <= 100:
                raise ConditionError("a tag has 1 to 100 characters", argument.column)
            node: Condition = HasTag(text, column=column)
        elif name.text in ("opened", "clicked"):
            if not _STEP_ID.match(text):
                raise ConditionError(
                    f"{_quote(text)} is not a step id (lower-case letters, digits, '-' and '_', "
                    "starting with a letter)",
                    argument.column,
                )
            node = (Opened if name.text == "opened" else Clicked)(text, column=column)
        else:
            if not _EVENT_NAME.match(text):
                raise ConditionError(
                    f"{_quote(text)} is not an event name (letters, digits and _ . : -)",
                    argument.column,
                )
            node = self._event_arguments(text, column, depth)
        self._expect_op(")", f"')' to close {name.text}(")
        return node

    def _event_arguments(self, name: str, column: int, depth: int) -> HadEvent:
        within: int | None = None
        where: Condition | None = None
        seen: set[str] = set()
        while self._is("op", ","):
            self._take()
            key = self.tok
            if key.kind != "name" or key.text not in ("within", "where"):
                hint = _hint(key.text, ("within", "where")) if key.kind == "name" else ""
                raise ConditionError(
                    f"expected within= or where= but found {self._shown()}{hint}", key.column
                )
            if key.text in seen:
                raise ConditionError(f"{key.text}= is given twice", key.column)
            seen.add(key.text)
            self._take()
            self._expect_op("=", f"'=' after '{key.text}'")
            if key.text == "within":
                within = self._within()
            else:
                where = self._or(depth + 1, properties_only=True)
        return HadEvent(name, within, where, column=column)

    def _within(self) -> int:
        token = self.tok
        if token.kind == "duration":
            self._take()
            seconds = int(token.value)
            if not 0 < seconds <= MAX_WITHIN:
                raise ConditionError(
                    "within= must be longer than zero and at most 3650d", token.column
                )
            return seconds
        if token.kind == "number":
            raise ConditionError(
                f"a duration needs a unit: {token.text}d, {token.text}h or {token.text}m",
                token.column,
            )
        if token.kind == "text":
            raise ConditionError(
                f"write the duration without quotes: within={token.value}", token.column
            )
        raise ConditionError(
            f"expected a duration such as 30d after 'within=' but found {self._shown()}",
            token.column,
        )
