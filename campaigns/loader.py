"""Read workspace YAML safely, keep every node's line and column, and report all problems at once.

ruamel.yaml parses (round-trip mode constructs no Python objects from tags); the tree is copied into
plain dicts and lists while a side table remembers where each path came from, so a pydantic error
at ``('steps', 2, 'wait_for', 'timeout')`` becomes
``welcome.yaml:14:7: steps.remind.wait_for.timeout``.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from campaigns.errors import CampaignSchemaError, CampaignSyntaxError, Problem, hint

__all__ = ["MAX_FILE_BYTES", "Located", "load_model", "load_yaml", "problem_at"]

MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 50_000

_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
}

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
    ) -> None:
        self.file = file
        self.data = data
        self.positions = positions
        # Where each mapping key itself is written: an unknown key is reported there, since its
        # value may be blank, on another line, or perfectly fine.
        self.key_positions = key_positions or {}

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


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def load_yaml(path: Path, *, display: str | None = None) -> Located:
    """Parse one YAML file with positions; CampaignSyntaxError on anything unsafe or invalid."""
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CampaignSyntaxError(
            [Problem(name, 1, 1, "", f"cannot read file: {exc.strerror}")]
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise CampaignSyntaxError(
            [Problem(name, 1, 1, "", f"file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CampaignSyntaxError([Problem(name, 1, 1, "", "file is not UTF-8 text")]) from None
    try:
        tree = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p).split("\n")[0]
        raise CampaignSyntaxError([Problem(name, line, col, "", f"YAML: {message}")]) from None
    except YAMLError as exc:
        raise CampaignSyntaxError([Problem(name, 1, 1, "", f"YAML: {exc}")]) from None
    except RecursionError:
        raise CampaignSyntaxError([Problem(name, 1, 1, "", "YAML nested too deeply")]) from None
    positions: dict[Loc, tuple[int, int]] = {(): (1, 1)}
    key_positions: dict[Loc, tuple[int, int]] = {}
    counter = [0]
    data = _plain(tree, (), positions, name, counter, key_positions)
    return Located(name, data, positions, key_positions)


def _plain(
    node: Any,
    loc: Loc,
    positions: dict[Loc, tuple[int, int]],
    name: str,
    counter: list[int],
    key_positions: dict[Loc, tuple[int, int]],
) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES or len(loc) > MAX_DEPTH:
        raise CampaignSyntaxError(
            [Problem(name, *positions.get(loc, (1, 1)), "", "YAML too large or nested too deeply")]
        )
    tag = getattr(node, "tag", None)
    if tag is not None and getattr(tag, "value", None) and str(tag.value) not in _PLAIN_TAGS:
        raise CampaignSyntaxError(
            [
                Problem(
                    name,
                    *positions.get(loc, (1, 1)),
                    _dotted(loc),
                    f"YAML tag {tag.value} is not allowed",
                )
            ]
        )
    if getattr(node, "anchor", None) is not None and getattr(node.anchor, "value", None):
        raise CampaignSyntaxError(
            [
                Problem(
                    name,
                    *positions.get(loc, (1, 1)),
                    _dotted(loc),
                    "YAML anchors and aliases are not allowed",
                )
            ]
        )
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key in node:
            child: Loc = (*loc, str(key))
            line, col = node.lc.value(key) if node[key] is not None else node.lc.key(key)
            positions[child] = (line + 1, col + 1)
            key_line, key_col = node.lc.key(key)
            key_positions[child] = (key_line + 1, key_col + 1)
            out[str(key)] = _plain(node[key], child, positions, name, counter, key_positions)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, item in enumerate(node):
            line, col = node.lc.item(index)
            positions[(*loc, index)] = (line + 1, col + 1)
            items.append(_plain(item, (*loc, index), positions, name, counter, key_positions))
        return items
    if isinstance(node, TaggedScalar):
        return str(node.value)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool | int | float) or node is None:
        return node
    if hasattr(node, "isoformat"):
        return node.isoformat()
    return str(node)


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
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        return f"unknown key '{loc[-1]}'{hint(str(loc[-1]), allowed, listing='allowed')}"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        return (
            f"{err['input']!r} is not a valid id (lower-case letters, digits, '-' and '_', "
            "starting with a letter)"
        )
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


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
