"""Read workspace YAML safely, keep every node's line and column, and report all problems at once.

ruamel.yaml parses in round-trip mode; the tree is copied into plain dicts and lists while a side
table remembers where each path came from, so a pydantic error at
``('steps', 2, 'wait_for', 'timeout')`` becomes
``welcome.yaml:14:7: steps.remind.wait_for.timeout``.

Files are written by people, so they may also be hostile or broken in any way. What we refuse is
refused while the file is read, before anything is built from it: the size and the encoding first,
then, as each node is composed (``_GuardedComposer``), anchors and aliases (so a "billion laughs"
never expands), tags other than ``!!str`` (so no Python object is ever constructed), merge keys,
non-text and duplicate keys, nesting deeper than MAX_DEPTH (also in the scanner, so 100k ``[`` stop
at the 33rd) and more than MAX_NODES nodes. The work done is thus bounded by MAX_FILE_BYTES and
those limits, and every refusal is a CampaignSyntaxError naming the file, line and column.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import RoundTripScanner

from campaigns.errors import CampaignSchemaError, CampaignSyntaxError, Problem, hint

__all__ = ["MAX_FILE_BYTES", "Located", "load_model", "load_yaml", "problem_at"]

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 50_000

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Implicitly typed scalars that Python may fail to build (2024-02-30, a 5000-digit number): those
# stay text, for the schema to judge like any other string.
_FRAGILE_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp"}
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
# C0 and C1 control characters other than tab and newline: invisible in an email, refused by
# PostgreSQL (NUL) or a way to smuggle header lines (CR). Escapes like "\x00" would produce them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

Loc = tuple[int | str, ...]
M = TypeVar("M", bound=BaseModel)


class Located:
    """Plain data from a YAML file plus the (line, column) of every path in it (1-based)."""

    def __init__(
        self,
        file: str,
        data: Any,
        positions: dict[Loc, tuple[int, int]],
        key_positions: dict[Loc, tuple[int, int]] | None = None,
        lines: list[str] | None = None,
    ) -> None:
        self.file = file
        self.data = data
        self.positions = positions
        self.lines = lines or []
        # Where each mapping key itself is written: an unknown key is reported there, since its
        # value may be blank, on another line, or perfectly fine.
        self.key_positions = key_positions or {}

    def inside(self, loc: Loc, column: int) -> tuple[int, int]:
        """Where the ``column``-th character (1-based) of the text at ``loc`` is in the file, so
        an error inside a condition points at the very word. Exact for one-line plain and
        quoted values without escapes, which is how conditions are written."""
        line, col = self.position(loc)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        opening = 1 if text[col - 1 : col] in ("'", '"') else 0
        return line, col + opening + column - 1

    def key_position(self, loc: Loc) -> tuple[int, int]:
        return self.key_positions.get(loc) or self.position(loc)

    def position(self, loc: Loc) -> tuple[int, int]:
        """Position of the deepest known prefix of ``loc``: a missing key points at its parent."""
        for end in range(len(loc), -1, -1):
            if (pos := self.positions.get(tuple(loc[:end]))) is not None:
                return pos
        return (1, 1)

    def pretty_path(self, loc: Loc) -> str:
        """``steps.remind.wait_for``, not ``steps.2.wait_for``: step ids are what people see."""
        parts: list[str] = []
        node: Any = self.data
        for item in loc:
            label = str(item)
            if isinstance(item, int) and isinstance(node, list) and 0 <= item < len(node):
                child = node[item]
                if isinstance(child, dict) and isinstance(child.get("id"), str):
                    label = child["id"]
                node = child
            elif isinstance(node, dict) and isinstance(item, str):
                node = node.get(item)
            else:
                node = None
            parts.append(label)
        return ".".join(parts)


class _Refused(YAMLError):
    """Something we never accept, found while reading: where it is and what to tell the author."""

    def __init__(self, message: str, mark: Any, path: Loc = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line: int = mark.line + 1 if mark else 1
        self.column: int = mark.column + 1 if mark else 1
        self.path = path


_TOO_DEEP = f"YAML is nested more than {MAX_DEPTH} levels deep"


class _GuardedScanner(RoundTripScanner):
    """Stops ``[[[[...`` at the limit, before the composer recurses or the scanner's simple-key
    bookkeeping (one entry per open bracket) makes every further token slower."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if len(self.flow_context) >= MAX_DEPTH:
            raise _Refused(_TOO_DEEP, self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class _GuardedComposer(Composer):
    """Refuses, as each node is composed and before anything is expanded or constructed, what the
    constructor would otherwise turn into Python objects, shared subtrees or surprises."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._nodes = 0
        self._path: Loc = ()  # of the node being composed, for messages
        # one {key text: line} per mapping being composed, innermost last
        self._keys: list[dict[str, int]] = []

    def compose_document(self) -> Any:
        event = self.parser.peek_event()
        version = getattr(event, "version", None)
        if version is not None and tuple(version) != (1, 2):
            # YAML 1.1 would read `no` as false and `0777` as octal
            raise _Refused(
                f"only YAML 1.2 is accepted; remove the '%YAML {'.'.join(map(str, version))}' line",
                None,  # the directive's own position is not kept; it is near the top
            )
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        outer = self._path
        if isinstance(parent, SequenceNode):
            path: Loc = (*outer, index)
        elif isinstance(parent, MappingNode) and isinstance(index, ScalarNode):
            path = (*outer, str(index.value))
        else:
            path = outer  # the root, or a key: reported at its mapping
        if isinstance(event, AliasEvent) or event.anchor is not None:
            # refused at the first anchor, so an alias is never followed, let alone expanded
            raise _Refused("YAML anchors and aliases are not allowed", event.start_mark, path)
        tag = getattr(event, "ctag", None)
        implicit = tag is None or str(tag) == "!"  # no tag, or `!`: typed by the resolver
        text_tag = str(tag) == _STR_TAG and isinstance(event, ScalarEvent)
        if not implicit and not text_tag:
            raise _Refused(f"YAML tag {_written(tag)} is not allowed", event.start_mark, path)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(
                f"the file has more than {MAX_NODES} keys and values", event.start_mark, path
            )
        if self.depth > MAX_DEPTH:
            raise _Refused(_TOO_DEEP, event.start_mark, path)
        self._path = path
        node = super().compose_node(parent, index)
        self._path = outer
        if isinstance(parent, MappingNode) and index is None:
            self._check_key(node, path)
        elif isinstance(node, ScalarNode) and implicit and str(node.tag) in _FRAGILE_TAGS:
            self._keep_text_unless_buildable(node)
        return node

    def compose_mapping_node(self, anchor: Any) -> Any:
        self._keys.append({})
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._keys.pop()

    def _check_key(self, node: Any, path: Loc) -> None:
        if not isinstance(node, ScalarNode):
            raise _Refused("a key must be plain text, not a list or mapping", node.start_mark, path)
        if str(node.tag) == _MERGE_TAG:
            raise _Refused("YAML merge keys (<<) are not allowed", node.start_mark, path)
        # Keys are text as written: `1`, `01` and `"1"` are all the key "1", and so duplicates.
        node.tag = self.resolver.resolve(ScalarNode, node.value, (False, True))
        seen = self._keys[-1]
        if (first := seen.get(node.value)) is not None:
            raise _Refused(
                f"duplicate key {_short(node.value)!r} (first written on line {first})",
                node.start_mark,
                path,
            )
        seen[node.value] = node.start_mark.line + 1

    def _keep_text_unless_buildable(self, node: Any) -> None:
        build = (
            self.loader.constructor.construct_yaml_int
            if str(node.tag) == "tag:yaml.org,2002:int"
            else self.loader.constructor.construct_yaml_timestamp
        )
        try:
            build(node)
        except (ValueError, OverflowError):
            node.tag = self.resolver.resolve(ScalarNode, node.value, (False, True))


def _written(tag: Any) -> str:
    """A tag as the author wrote it: ``!!python/object:os.system``, ``!foo``, ``!<tag:...>``."""
    return f"{tag.handle}{tag.suffix}" if tag.handle else f"!<{tag.suffix}>"


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:37]}..."


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Scanner = _GuardedScanner
    yaml.Composer = _GuardedComposer
    return yaml


def load_yaml(path: Path, *, display: str | None = None) -> Located:
    """Parse one YAML file with positions; CampaignSyntaxError on anything unsafe or invalid."""
    name = display or str(path)
    try:
        # A FIFO would block the open and /dev/zero never ends: read regular files only, and no
        # more than one byte past the limit whatever the file claims its size is.
        if not stat.S_ISREG(path.stat().st_mode):
            raise CampaignSyntaxError([Problem(name, 1, 1, "", "not a regular file")])
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
            size = max(os.fstat(handle.fileno()).st_size, len(raw))
    except OSError as exc:
        raise CampaignSyntaxError(
            [Problem(name, 1, 1, "", f"cannot read file: {exc.strerror}")]
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise CampaignSyntaxError(
            [Problem(name, 1, 1, "", f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw[: exc.start].decode("utf-8"), exc.start)
        message = "file is not UTF-8 text"
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            line, col, message = 1, 1, f"{message} (it is UTF-16; save it as UTF-8)"
        raise CampaignSyntaxError([Problem(name, line, col, "", message)]) from None
    try:
        tree = _yaml().load(text)
    except _Refused as exc:
        raise CampaignSyntaxError(
            [Problem(name, exc.line, exc.column, _dotted(exc.path), exc.message)]
        ) from None
    except ReaderError as exc:
        # a raw control character (NUL, BEL, ...) in the text: say which, and where
        line, col = _line_col(text, exc.position)
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise CampaignSyntaxError(
            [Problem(name, line, col, "", f"YAML: character {what} is not allowed ({exc.reason})")]
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p).split("\n")[0]
        raise CampaignSyntaxError([Problem(name, line, col, "", f"YAML: {message}")]) from None
    except YAMLError as exc:
        message = str(exc).split("\n")[0]
        raise CampaignSyntaxError([Problem(name, 1, 1, "", f"YAML: {message}")]) from None
    except RecursionError:
        raise CampaignSyntaxError([Problem(name, 1, 1, "", "YAML nested too deeply")]) from None
    except (ValueError, OverflowError) as exc:
        # Not expected (the composer hands the constructor only values it can build), but a
        # value Python cannot build must never become a traceback.
        message = str(exc).split("\n")[0]
        raise CampaignSyntaxError([Problem(name, 1, 1, "", f"YAML: {message}")]) from None
    positions: dict[Loc, tuple[int, int]] = {(): (1, 1)}
    key_positions: dict[Loc, tuple[int, int]] = {}
    data = _plain(tree, (), positions, name, key_positions)
    return Located(name, data, positions, key_positions, text.splitlines())


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``, counting line breaks as ruamel's marks do
    (CRLF is one break; a lone CR, NEL, U+2028 and U+2029 are breaks too)."""
    breaks = list(_LINE_BREAK.finditer(text, 0, index))
    return len(breaks) + 1, index - (breaks[-1].end() if breaks else 0) + 1


def _plain(
    node: Any,
    loc: Loc,
    positions: dict[Loc, tuple[int, int]],
    name: str,
    key_positions: dict[Loc, tuple[int, int]],
) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key in node:
            child: Loc = (*loc, str(key))
            line, col = node.lc.value(key) if node[key] is not None else node.lc.key(key)
            positions[child] = (line + 1, col + 1)
            key_line, key_col = node.lc.key(key)
            key_positions[child] = (key_line + 1, key_col + 1)
            _refuse_controls(str(key), name, key_positions[child], loc)
            out[str(key)] = _plain(node[key], child, positions, name, key_positions)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, item in enumerate(node):
            line, col = node.lc.item(index)
            positions[(*loc, index)] = (line + 1, col + 1)
            items.append(_plain(item, (*loc, index), positions, name, key_positions))
        return items
    if isinstance(node, TaggedScalar):
        return str(node.value)
    if isinstance(node, str):
        _refuse_controls(node, name, positions.get(loc, (1, 1)), loc)
        return str(node)
    # ruamel's ScalarInt / ScalarFloat keep formatting; the rest of drip wants plain numbers
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if node is None:
        return node
    if hasattr(node, "isoformat"):
        return node.isoformat()
    return str(node)


def _refuse_controls(text: str, name: str, at: tuple[int, int], loc: Loc) -> None:
    if (found := _CONTROL.search(text)) is not None:
        raise CampaignSyntaxError(
            [
                Problem(
                    name,
                    *at,
                    _dotted(loc),
                    f"control character U+{ord(found.group()):04X} is not allowed in text",
                )
            ]
        )


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc)


def problem_at(doc: Located, loc: Loc, message: str) -> Problem:
    line, col = doc.position(loc)
    return Problem(doc.file, line, col, doc.pretty_path(loc), message)


def load_model(doc: Located, model: type[M]) -> M:
    """Validate located data against a schema model, turning every pydantic error into a Problem."""
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc: Loc = tuple(err["loc"])
            message = _message(err, model, loc)
            if err["type"] == "extra_forbidden":
                line, col = doc.key_position(loc)
                problems.append(Problem(doc.file, line, col, doc.pretty_path(loc), message))
            else:
                problems.append(problem_at(doc, loc, message))
        problems.sort(key=lambda p: (p.line, p.column))
        raise CampaignSchemaError(problems) from None


def _message(err: Any, model: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    if not loc and kind in ("model_type", "dict_type"):
        # an empty file, a lone scalar or a list: pydantic would name our class
        found = _kind(err["input"], quote_hint=False)
        return f"expected keys and values (like 'id: ...') at the top of the file, found {found}"
    if kind == "string_type":
        # YAML reads `0777`, `1e3`, `.nan` or `true` as no text at all: say what it saw
        return f"expected text, found {_kind(err['input'])}"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        return f"unknown key '{loc[-1]}'{hint(str(loc[-1]), allowed, listing='allowed')}"
    if kind == "missing":
        return "required field is missing"
    ctx = err.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        what = _PATTERNS.get(str(ctx.get("pattern")), "is not in the expected form")
        return f"{err['input']!r} {what}"
    if kind == "too_short" and ctx.get("field_type") in ("List", "Tuple"):
        n = ctx.get("min_length")
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    if kind == "too_long" and ctx.get("field_type") in ("List", "Tuple"):
        return f"has more than {ctx.get('max_length')} items"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {next(iter(ctx.values()), '')}"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    # pydantic's "Input should be 'email' or 'chat'" reads better as "must be ..."
    return message.replace("Input should be ", "must be ", 1)


_BOUNDS = {
    "greater_than_equal": "at least",
    "greater_than": "more than",
    "less_than_equal": "at most",
    "less_than": "less than",
}

#: What a pattern-checked value should look like, in the author's words, by pattern.
_PATTERNS = {
    r"^[a-z][a-z0-9_-]{0,79}$": (
        "is not a valid id (lower-case letters, digits, '-' and '_', starting with a letter)"
    ),
    r"^[A-Za-z0-9_.:-]+$": "is not an event name (letters, digits, '_', '.', ':' and '-')",
    r"^[A-Za-z_][A-Za-z0-9_]*$": "is not a field name (letters, digits and '_', not a digit first)",
    r"^([01]\d|2[0-3]):[0-5]\d$": "is not a time of day (24-hour HH:MM, e.g. 09:00)",
}


def _kind(value: Any, *, quote_hint: bool = True) -> str:
    """What YAML made of a value, in the author's terms."""
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "keys and values"
    if not quote_hint:
        return "a single value"
    if isinstance(value, bool):
        return f"{str(value).lower()} (yes/no); put text in quotes"
    if isinstance(value, int | float):
        return f"the number {value}; put text in quotes to keep it as written"
    return "a single value"


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Names a mapping at ``loc`` may hold, found by walking the schema's annotations."""
    current: Any = model
    for item in loc:
        current = _unwrap(current)
        if isinstance(item, int):
            args = get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(item) or next(
                (f for f in current.model_fields.values() if f.alias == item), None
            )
            current = field.annotation if field else None
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so the schema walk sees the model or list type underneath."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
            if len(options) != 1:
                return annotation
        else:
            return annotation
