"""The Jinja half of ``emails.lint``: names a template reads that the renderer does not provide,
and ``contact.X`` reads that fail for contacts without X.

The renderer's undefined values fail when printed, compared or filtered, but are false in a
condition (``emails.templates._Undefined``), so ``contact.X`` is safe under ``| default(...)``,
``is defined``, in a truth test and in that test's true branch, and nowhere else. This walks the
template's AST the same way, so each finding has the author's line.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

import jinja2
from jinja2 import meta, nodes

from emails._sandbox import Sandbox

__all__ = ["Issue", "Refs", "check_jinja", "data_reads", "unguarded_reads"]

#: ``(line, severity, rule, message)``; ``emails.lint`` adds the file.
Issue = tuple[int, Literal["error", "warning"], str, str]

#: The emails' sandbox (no globals: range, cycler and friends are undefined there), not a plain
#: one: compiling folds constant expressions, and a plain sandbox would compute
#: ``'%0999999999d' % 1`` or ``'x'|center(10**9)`` right here, holding lint for minutes.
_ENV = Sandbox(autoescape=False, undefined=jinja2.Undefined)
_WORKSPACE_ATTRS = frozenset({"name", "postal_address"})
_DEFAULT_FILTERS = frozenset({"default", "d"})
_SAFE_TESTS = frozenset({"defined", "undefined", "none"})


@dataclass
class Refs:
    """What templates and subjects read of ``contact``, for the sample contact: every field
    read, and those used as numbers (compared with or added to one)."""

    fields: set[str] = field(default_factory=set)
    numeric: set[str] = field(default_factory=set)
    unguarded: list[tuple[str, int]] = field(default_factory=list)


def check_jinja(
    source: str,
    *,
    names: Collection[str],
    known: Collection[str],
    refs: Refs,
    fields: Collection[str] = (),
) -> list[Issue]:
    """Issues of one template text.

    ``names`` are the context's names, ``known`` the contact fields every recipient has,
    ``fields`` the contact fields the workspace knows (for a "did you mean" hint); ``refs``
    collects the contact fields read.
    """
    try:
        tree = _ENV.parse(source)
        _ENV.compile(source)  # unknown filters and tests are found here
    except jinja2.TemplateSyntaxError as exc:
        return [(exc.lineno, "error", "syntax", exc.message or "syntax error")]
    found: list[Issue] = []
    undeclared = meta.find_undeclared_variables(tree) - set(names)
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared:
            message = f"'{name.name}' is not defined in emails" + _hint(name.name, names, fields)
            found.append((name.lineno, "error", "unresolved-variable", message))
    for attr in tree.find_all(nodes.Getattr):
        target = attr.node
        if (
            isinstance(target, nodes.Name)
            and target.name == "workspace"
            and attr.attr not in _WORKSPACE_ATTRS
        ):
            message = f"workspace.{attr.attr} is not defined (it has name and postal_address)"
            found.append((attr.lineno, "error", "unresolved-variable", message))
    local = Refs()
    _walk(tree, frozenset(), local)
    refs.fields |= local.fields
    refs.numeric |= local.numeric
    for missing, lineno in dict.fromkeys(local.unguarded):
        if missing not in known:
            message = (
                f"contacts without {missing} fail to render this email: write "
                f"{{{{ contact.{missing} | default('...') }}}} or guard it with "
                f"{{% if contact.{missing} %}}"
            )
            found.append((lineno, "warning", "optional-field", message))
    return found


def _hint(name: str, names: Collection[str], fields: Collection[str]) -> str:
    if name in fields:
        return f" (did you mean contact.{name}?)"
    close = difflib.get_close_matches(name, sorted(names), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unguarded_reads(source: str, root: str) -> dict[str, int]:
    """Each ``root.X`` the template reads where a missing X fails the render (printed,
    compared, filtered; not under ``default()``, ``is defined`` or a truth test), with its first
    line: the transactional API asks the caller's ``data`` for these. Raises
    ``jinja2.TemplateSyntaxError``."""
    refs = Refs()
    _walk(_ENV.parse(source), frozenset(), refs, root)
    found: dict[str, int] = {}
    for name, lineno in refs.unguarded:
        found.setdefault(name, lineno)
    return found


def data_reads(source: str, root: str, refs: Refs) -> None:
    """Add each ``root.X`` the template reads (guarded or not) to ``refs``, so lint's sample
    render can give the transactional API's ``data`` a value for each. Raises
    ``jinja2.TemplateSyntaxError``."""
    _walk(_ENV.parse(source), frozenset(), refs, root)


def _contact_field(node: nodes.Node | None, root: str = "contact") -> str | None:
    """``X`` for ``contact.X`` or ``contact['X']`` (``root`` instead of ``contact``)."""
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        target = node.node
        if isinstance(target, nodes.Name) and target.name == root:
            if isinstance(node, nodes.Getattr):
                return node.attr
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                return node.arg.value
    return None


def _walk(node: nodes.Node, guarded: frozenset[str], refs: Refs, root: str = "contact") -> None:
    """Record each ``contact.X`` that is printed, compared or filtered while X may be missing."""
    name = _contact_field(node, root)
    if name is not None:
        refs.fields.add(name)
        if name not in guarded:
            refs.unguarded.append((name, node.lineno))
        return
    if isinstance(node, nodes.If):
        _truth(node.test, guarded, refs, root)
        for child in node.body:
            _walk(child, guarded | _truthy(node.test, root), refs, root)
        otherwise = guarded | _falsy(node.test, root)
        for elif_ in node.elif_:
            _walk(elif_, otherwise, refs, root)
            otherwise |= _falsy(elif_.test, root)
        for child in node.else_:
            _walk(child, otherwise, refs, root)
        return
    if isinstance(node, nodes.CondExpr):
        _truth(node.test, guarded, refs, root)
        _walk(node.expr1, guarded | _truthy(node.test, root), refs, root)
        if node.expr2 is not None:
            _walk(node.expr2, guarded | _falsy(node.test, root), refs, root)
        return
    if isinstance(node, nodes.Filter | nodes.Test):
        safe = _DEFAULT_FILTERS if isinstance(node, nodes.Filter) else _SAFE_TESTS
        name = _contact_field(node.node, root)
        if name is not None and node.name in safe:
            guarded = guarded | {name}
    _note_numeric(node, refs, root)
    for child in node.iter_child_nodes():
        _walk(child, guarded, refs, root)


def _truth(test: nodes.Node, guarded: frozenset[str], refs: Refs, root: str) -> None:
    """A condition: a missing field in a truth position is just false."""
    name = _contact_field(test, root)
    if name is not None:
        refs.fields.add(name)
    elif isinstance(test, nodes.Not):
        _truth(test.node, guarded, refs, root)
    elif isinstance(test, nodes.And):
        _truth(test.left, guarded, refs, root)
        _truth(test.right, guarded | _truthy(test.left, root), refs, root)
    elif isinstance(test, nodes.Or):
        _truth(test.left, guarded, refs, root)
        _truth(test.right, guarded | _falsy(test.left, root), refs, root)
    else:
        _walk(test, guarded, refs, root)


def _truthy(test: nodes.Node, root: str) -> frozenset[str]:
    """Fields certainly present when ``test`` holds."""
    name = _contact_field(test, root)
    if name is not None:
        return frozenset({name})
    if isinstance(test, nodes.Test) and test.name == "defined":
        return _truthy(test.node, root)
    if isinstance(test, nodes.Not):
        return _falsy(test.node, root)
    if isinstance(test, nodes.And):
        return _truthy(test.left, root) | _truthy(test.right, root)
    return frozenset()


def _falsy(test: nodes.Node, root: str) -> frozenset[str]:
    """Fields certainly present when ``test`` does not hold."""
    if isinstance(test, nodes.Test) and test.name == "undefined":
        return _truthy(test.node, root)
    if isinstance(test, nodes.Not):
        return _truthy(test.node, root)
    if isinstance(test, nodes.Or):
        return _falsy(test.left, root) | _falsy(test.right, root)
    return frozenset()


def _note_numeric(node: nodes.Node, refs: Refs, root: str) -> None:
    """Fields compared with or added to a number get a number in the sample contact, so
    ``contact.visits > 3`` does not fail only because a sample value had the wrong type."""
    if isinstance(node, nodes.Compare):
        operands = [node.expr, *(op.expr for op in node.ops)]
    elif isinstance(node, nodes.BinExpr):
        operands = [node.left, node.right]
    else:
        return
    if any(isinstance(o, nodes.Const) and isinstance(o.value, int | float) for o in operands):
        refs.numeric.update(n for o in operands if (n := _contact_field(o, root)) is not None)
