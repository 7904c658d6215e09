"""What drip accepts as data: addresses, text and JSON values. The one vocabulary, used by
every door (forms, events API, admin API, CSV import, CLI) and by the database engine itself.

Three rules, from strict to lenient:

- **addresses** (``normalise_email``): RFC 5321/5322 limits, checked by email-validator in its
  strict mode (local part at most 64 octets, the whole at most 254), stored lower-cased with the
  domain as IDNA punycode, so ``ann@bücher.de`` and ``ann@xn--bcher-kva.de`` are one contact and
  the address SMTP sees is the address we stored;
- **text** (``text_problem``): no control characters (a single-line value refuses tab, CR and
  LF too; a multi-line one allows them), no lone surrogates (not text: no encoder can write
  them), no bidirectional embeddings, overrides or isolates (U+202A-U+202E, U+2066-U+2069:
  they make the dashboard show ``evil`` as ``live``, "Trojan Source");
- **JSON values** (``json_problems``): every number finite, every string (keys included)
  multi-line text by the rule above.

Doors refuse a value that breaks a rule with a 422 naming the field (``InvalidValue`` carries
it); nothing is silently changed. Underneath, the engine serializes JSON with ``dumps_json``,
which refuses what would make a stored row break queries over *other* rows (a non-finite number
is not JSON, so SQLite's ``json_extract`` fails on it for the whole table; PostgreSQL cannot
turn ``\\u0000`` or a lone surrogate into text): no code path can store those again. Rows stored
by older versions are found and repaired with ``repair_json``/``repair_text``
(``contacts.integrity``, ``drip db check``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from email_validator import EmailNotValidError, validate_email

from contacts.errors import InvalidEmail, InvalidValue

__all__ = [
    "MAX_ADDRESS_OCTETS",
    "MAX_LOCAL_PART_OCTETS",
    "check_json",
    "check_text",
    "dumps_json",
    "json_problems",
    "normalise_email",
    "repair_json",
    "repair_text",
    "storage_problem",
    "text_problem",
]

#: RFC 5321 section 4.5.3.1.1 and the 254-octet path limit (RFC 3696 erratum 1690)
MAX_LOCAL_PART_OCTETS = 64
MAX_ADDRESS_OCTETS = 254

_BIDI = "\u202a-\u202e\u2066-\u2069"
# a lone surrogate is the only way a Python str holds a code point in D800-DFFF
_SINGLE_LINE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI}\\ud800-\\udfff]")
_MULTI_LINE = re.compile(f"[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f{_BIDI}\\ud800-\\udfff]")
#: what makes a stored JSON value break queries over other rows
_UNSTORABLE = re.compile("[\\x00\\ud800-\\udfff]")
_BIDI_CHARS = re.compile(f"[{_BIDI}]")
_SURROGATES = re.compile("[\\ud800-\\udfff]")


def normalise_email(raw: str) -> str:
    """The canonical form of an address: trimmed, checked, lower-cased, domain as punycode.

    The local part is lower-cased too: providers that treat case as significant are vanishingly
    rare, and two contacts for ``Ann@x`` and ``ann@x`` are a real, common bug.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidEmail("an email address is required")
    try:
        info = validate_email(text, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from exc
    local = info.local_part
    if len(local.encode()) > MAX_LOCAL_PART_OCTETS:
        raise InvalidEmail(f"the part before the @-sign is over {MAX_LOCAL_PART_OCTETS} octets")
    address = f"{local}@{info.ascii_domain}".lower()
    if len(address.encode()) > MAX_ADDRESS_OCTETS:
        raise InvalidEmail(f"the address is over {MAX_ADDRESS_OCTETS} octets")
    return address


def _describe(char: str) -> str:
    code = f"U+{ord(char):04X}"
    if char == "\x00":
        return f"contains a NUL character ({code})"
    if _SURROGATES.match(char):
        return f"contains a lone surrogate ({code}), which is not text"
    if _BIDI_CHARS.match(char):
        return f"contains a bidirectional control ({code}), which can disguise text"
    return f"contains a control character ({code})"


def text_problem(text: str, *, multiline: bool = False) -> str | None:
    """Why ``text`` cannot be stored as a person's text, or None when it can."""
    found = (_MULTI_LINE if multiline else _SINGLE_LINE).search(text)
    return None if found is None else _describe(found.group())


def check_text(text: str, field: str, *, multiline: bool = False) -> str:
    """``text`` itself, or InvalidValue naming ``field``."""
    reason = text_problem(text, multiline=multiline)
    if reason is not None:
        raise InvalidValue(field, reason)
    return text


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (path, leaf or key) in a JSON value in document order, iteratively (no recursion
    limit to hit); a key comes just before its value."""
    stack: list[tuple[str, Any, bool]] = [(path, value, False)]
    while stack:
        where, item, is_key = stack.pop()
        if is_key:
            yield where, item
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                stack += [(_join(where, key), child, False), (_join(where, key), key, True)]
        elif isinstance(item, list | tuple):
            stack.extend(
                (_join(where, i), child, False) for i, child in reversed(list(enumerate(item)))
            )
        else:
            yield where, item


def json_problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(field, reason) for every number that is not finite and every string (keys included)
    that is not multi-line text, in a value about to be stored as JSON."""
    found: list[tuple[str, str]] = []
    for where, leaf in _walk(value, path):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            found.append((where, f"is not a finite number ({leaf})"))
        elif isinstance(leaf, str) and (reason := text_problem(leaf, multiline=True)):
            found.append((where, reason))
    return found


def check_json(value: Any, field: str) -> None:
    """InvalidValue naming the first field of ``value`` that breaks the JSON rule."""
    found = json_problems(value, field)
    if found:
        raise InvalidValue(*found[0])


def storage_problem(value: Any) -> tuple[str, str] | None:
    """(path, reason) of the first part of ``value`` that would break queries once stored:
    a non-finite number, a NUL, a lone surrogate. The lenient rule the engine enforces."""
    for where, leaf in _walk(value, ""):
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return where, f"is not a finite number ({leaf})"
        if isinstance(leaf, str) and (found := _UNSTORABLE.search(leaf)):
            return where, _describe(found.group())
    return None


def dumps_json(value: Any) -> str:
    """The engine's JSON serializer: the same text as SQLAlchemy's default (``json.dumps``),
    but a value that would poison its table is refused (InvalidValue) instead of stored."""
    found = storage_problem(value)
    if found is not None:
        raise InvalidValue(found[0] or "(value)", found[1])
    return json.dumps(value, allow_nan=False)


def repair_text(text: str, *, multiline: bool = True) -> tuple[str, list[str]]:
    """``text`` with control characters and bidirectional controls removed and lone
    surrogates replaced by U+FFFD; and what was wrong (for the report)."""
    pattern = _MULTI_LINE if multiline else _SINGLE_LINE
    found = [_describe(c) for c in dict.fromkeys(pattern.findall(text))]
    if not found:
        return text, []

    def fix(match: re.Match[str]) -> str:
        return "\ufffd" if _SURROGATES.match(match.group()) else ""

    return pattern.sub(fix, text), found


def repair_json(value: Any, path: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """A repaired copy of a stored JSON value: non-finite numbers become null, strings (and
    keys) are repaired as multi-line text; and (path, problem) for each thing changed."""
    found: list[tuple[str, str]] = []

    def fix(item: Any, where: str) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            found.append((where, f"is not a finite number ({item})"))
            return None
        if isinstance(item, str):
            text, problems = repair_text(item)
            found.extend((where, p) for p in problems)
            return text
        if isinstance(item, list):
            return [fix(child, _join(where, i)) for i, child in enumerate(item)]
        if isinstance(item, dict):
            out: dict[str, Any] = {}
            for key, child in item.items():
                name, problems = repair_text(str(key))
                found.extend((_join(where, key), f"key {p}") for p in problems)
                out[name] = fix(child, _join(where, key))
            return out
        return item

    return fix(value, path), found
