"""The render budget's sizes: how big a value would print, and the checks that refuse an
operation before it builds something over the budget (``emails._sandbox`` applies them).

Sizes are estimates that never fall short: the digits of a width or precision, the characters a
replace or join would produce, a container walked only until it is known to be too big.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any

from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS as DEFAULT_FILTERS
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

if TYPE_CHECKING:
    from drip.settings import Settings

__all__ = [
    "BUDGET",
    "GUARDED_FILTERS",
    "MAX_INT_BITS",
    "MAX_REPEAT",
    "BoundedEscapeFormatter",
    "BoundedFormatter",
    "OverBudget",
    "RenderBudget",
    "check_percent",
    "check_size",
    "check_str_method",
    "check_value",
    "current_budget",
    "output_limit",
    "printable",
    "size_of",
]

#: Largest string or list a template may build with ``*``: repetition is for a divider, not data.
MAX_REPEAT = 100_000
#: Largest integer a template may build (bits); Python refuses to print over 4,300 digits anyway.
MAX_INT_BITS = 100_000


@dataclass(frozen=True, slots=True)
class RenderBudget:
    """What one render may take: wall-clock seconds, and characters of output (which also caps
    every string a template builds on the way)."""

    seconds: float = 2.0
    output_chars: int = 2_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderBudget:
        return cls(
            seconds=settings.template_render_seconds,
            output_chars=settings.template_output_chars,
        )


_DEFAULT = RenderBudget()
#: The budget of the render under way in this thread (set and reset by ``render_bounded``).
BUDGET: ContextVar[RenderBudget | None] = ContextVar("drip_render_budget", default=None)


def current_budget() -> RenderBudget:
    """The budget of the render under way (the defaults outside one: compiling)."""
    return BUDGET.get() or _DEFAULT


def output_limit() -> int:
    return (BUDGET.get() or _DEFAULT).output_chars


class OverBudget(SecurityError):
    """An operation that would exceed the render budget, refused before it ran."""


def _refuse(what: str, size: int) -> OverBudget:
    limit = output_limit()
    return OverBudget(
        f"{what} is too large: about {size:,} characters, over the budget of {limit:,} "
        "(DRIP_TEMPLATE_OUTPUT_CHARS)"
    )


def size_of(value: Any, limit: int) -> int:
    """About how many characters ``str(value)`` takes; counting stops once past ``limit``.

    Containers are walked (iteratively, so a list repeated inside itself many times over is
    counted as the characters it would print, without printing it)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if not isinstance(value, list | tuple | set | frozenset | dict):
        return 32
    total = 0
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item) + 4
        elif isinstance(item, dict):
            total += 2
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2
            pending.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 4
        else:
            total += 32
        if total > limit:
            return total
    return total


def check_size(what: str, size: int) -> None:
    if size > output_limit():
        raise _refuse(what, size)


def check_value(what: str, value: Any) -> None:
    limit = output_limit()
    size = size_of(value, limit)
    if size > limit:
        raise _refuse(what, size)


def printable(value: Any) -> None:
    """Refuse to print a container whose text would be over the budget (a list holding one
    long string many times over is small in memory but not on paper)."""
    check_value("printing a list or mapping", value)


# --- formatting: widths and precisions are sizes --------------------------------------------

_DIGITS = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


def _check_spec(spec: str, what: str) -> None:
    """A ``str.format`` spec: no run of digits in it (width, precision) may exceed the budget."""
    for digits in _DIGITS.findall(spec):
        if len(digits) > 9 or int(digits) > output_limit():
            raise _refuse(f"{what} width or precision {digits}", int(digits[:12]))


def check_percent(template: str, args: Any) -> None:
    """``template % args`` only with widths and precisions inside the budget."""
    star = False
    for match in _PERCENT_SPEC.finditer(template):
        for number in match.group(1, 2):
            if number == "*":
                star = True
            elif number:
                _check_spec(number, "%-format")
    values = args if isinstance(args, tuple) else (args,)
    if star:
        for value in values:
            if isinstance(value, int) and abs(value) > output_limit():
                raise _refuse("%-format width or precision", abs(value))
    check_size("%-format", len(template) + size_of(values, output_limit()))


class BoundedFormatter(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(format_spec, "format")
        check_value("format", value)
        return super().format_field(value, format_spec)


class BoundedEscapeFormatter(SandboxedEscapeFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(format_spec, "format")
        check_value("format", value)
        return super().format_field(value, format_spec)


# --- filters and str methods that take a size ------------------------------------------------


def _lines(s: Any) -> int:
    return str(s).count("\n") + 1


def _replaced(s: Any, old: Any, new: Any, count: Any) -> int:
    s, old, new = str(s), str(old), str(new)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _joined(items: Any, sep: Any) -> int:
    limit = output_limit()
    count = len(items)
    return size_of(items, limit) + max(0, count - 1) * len(str(sep))


_Check = Callable[[inspect.BoundArguments], None]


def _filter_checks() -> dict[str, _Check]:
    def width(name: str, key: str) -> _Check:
        def check(a: inspect.BoundArguments) -> None:
            value = a.arguments.get(key)
            if isinstance(value, int) and value > 0:
                check_size(f"{name}({value})", value)

        return check

    def indent(a: inspect.BoundArguments) -> None:
        w = a.arguments["width"]
        each = len(w) if isinstance(w, str) else w if isinstance(w, int) else 0
        check_size(
            f"indent({w!r:.20})", len(str(a.arguments["s"])) + _lines(a.arguments["s"]) * each
        )

    def wordwrap(a: inspect.BoundArguments) -> None:
        s, wrap = str(a.arguments["s"]), a.arguments["wrapstring"]
        check_size("wordwrap", len(s) + (len(s) + 1) * (len(str(wrap)) if wrap else 1))

    def format_(a: inspect.BoundArguments) -> None:
        check_percent(str(a.arguments["value"]), a.arguments["args"] or a.arguments["kwargs"])

    def replace(a: inspect.BoundArguments) -> None:
        x = a.arguments
        check_size("replace", _replaced(x["s"], x["old"], x["new"], x["count"]))

    def join(a: inspect.BoundArguments) -> None:
        items = a.arguments["value"]
        if not isinstance(items, list | tuple):
            items = a.arguments["value"] = list(items)  # a generator: consumed once, here
        if a.arguments["attribute"] is not None:
            check_size("join", max(0, len(items) - 1) * len(str(a.arguments["d"])))
        else:
            check_size("join", _joined(items, a.arguments["d"]))

    def printed(name: str) -> _Check:
        def check(a: inspect.BoundArguments) -> None:
            check_value(name, next(iter(a.arguments.values())))

        return check

    def batch(a: inspect.BoundArguments) -> None:
        if a.arguments["fill_with"] is not None:
            width("batch", "linecount")(a)

    def tojson(a: inspect.BoundArguments) -> None:
        step = a.arguments["indent"]
        if isinstance(step, int) and step > 0:
            limit = output_limit()
            check_size("tojson", size_of(a.arguments["value"], limit) * (step + 1))

    return {
        "center": width("center", "width"),
        "indent": indent,
        "wordwrap": wordwrap,
        "format": format_,
        "replace": replace,
        "join": join,
        "batch": batch,
        "tojson": tojson,
        "string": printed("string"),
        "pprint": printed("pprint"),
    }


def _guarded(name: str, original: Callable[..., Any], check: _Check) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @wraps(original)  # keeps jinja's pass_eval_context/pass_environment marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check(bound)
        return original(*bound.args, **bound.kwargs)

    guarded.__name__ = name
    return guarded


GUARDED_FILTERS = {
    name: _guarded(name, DEFAULT_FILTERS[name], check) for name, check in _filter_checks().items()
}

#: ``str`` methods that take a size: ``'x'.center(10**9)`` is the filter in another spelling.
_STR_WIDTH = frozenset({"center", "ljust", "rjust", "zfill"})


def check_str_method(
    method: types.BuiltinMethodType, args: tuple[Any, ...], kwargs: Any
) -> tuple[Any, ...]:
    """Refuse a sized ``str`` method call over the budget; returns the arguments to call it
    with (a generator given to ``join`` is listed first, to be measured)."""
    owner: Any = method.__self__
    name = method.__name__
    if name in _STR_WIDTH and args and isinstance(args[0], int):
        check_size(f"{name}({args[0]})", args[0])
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            check_size(
                "expandtabs",
                len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * size,
            )
    elif name == "replace" and len(args) >= 2:
        check_size("replace", _replaced(owner, args[0], args[1], args[2] if len(args) > 2 else -1))
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], list | tuple) else list(args[0])
        check_size("join", _joined(items, owner))
        return (items, *args[1:])
    return args
