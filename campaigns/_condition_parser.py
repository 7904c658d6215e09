"""The condition language's parser (private: import ``parse_condition`` and
``parse_event_filter`` from ``campaigns.conditions``): recursive descent, one method per grammar
rule (the grammar is in ``campaigns.conditions``), each refusal a ConditionError at its column.
One class for the whole grammar, which is why it is longer than our usual 400 lines."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import cast

from campaigns._condition_tokens import _Token, _tokens
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
)


# ---------------------------------------------------------------------------------------------
# Parser: recursive descent, one method per grammar rule.
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
