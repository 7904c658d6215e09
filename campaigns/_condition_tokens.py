"""The condition language's tokenizer (private: import from ``campaigns.conditions``): names,
texts with their escapes, numbers, durations and operators, each with its column; a word that is
not ours (``&&``, ``=<``) is refused with the one to write instead."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from campaigns._condition_tree import (
    MAX_NUMBER,
    ConditionError,
    Scalar,
)

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
