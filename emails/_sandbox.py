"""The Jinja sandbox of every email, and the budgets a template cannot get around.

Templates are written by marketers, and one careless template must not wedge a worker. Two kinds
of runaway are possible, and each needs its own stop:

* **One C-level operation** (``9 ** 10 ** 8``, ``'x'|center(10**9)``, ``'%0999999999d' % 1``,
  ``'{:>999999999}'.format(x)``) holds the GIL for as long as it runs: no deadline can interrupt
  it, the whole process stalls and memory balloons. So every operation that can build something
  large is sized *before* it runs and refused when the result would exceed the output budget:
  ``*``, ``**``, ``+`` and ``%`` (``intercepted_binops``), ``~`` and block buffers (``concat``),
  ``str.format`` fields, the filters and ``str`` methods that take a size, and values printed.
* **Pure-Python loops** (nested ``for`` over big sequences printing nothing) are interruptible
  between bytecodes: ``emails._deadline`` raises in the rendering thread when its time is up.

The limits come from the current :class:`RenderBudget` (settings ``DRIP_TEMPLATE_RENDER_SECONDS``
and ``DRIP_TEMPLATE_OUTPUT_CHARS``), set for the duration of a render by ``render_bounded``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from functools import update_wrapper
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import Markup

from emails._budget import (
    GUARDED_FILTERS,
    MAX_INT_BITS,
    MAX_REPEAT,
    BoundedEscapeFormatter,
    BoundedFormatter,
    OverBudget,
    RenderBudget,
    check_percent,
    check_size,
    check_str_method,
    output_limit,
    printable,
    size_of,
)

__all__ = [
    "OverBudget",
    "RenderBudget",
    "Sandbox",
    "printable",
]

# --- the environment --------------------------------------------------------------------------


class _Codegen(CodeGenerator):
    """``a ~ b`` joins through the environment, which sizes the parts first."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:  # jinja's naming
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {markup})")


def _bounded_join(parts: Iterable[str]) -> str:
    """``"".join`` for block buffers (``{% set %}...{% endset %}``, macros, filter blocks),
    which never reach the output check on their own."""
    chunks = parts if isinstance(parts, list) else list(parts)
    check_size("a block's output", sum(map(len, chunks)))
    return "".join(chunks)


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox: no globals, no mutation of lists and dicts, and every sized operation held
    to the current :class:`RenderBudget` (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _Codegen
    concat = staticmethod(_bounded_join)

    def __init__(self, *, autoescape: bool, undefined: type[jinja2.Undefined]) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=undefined,
            loader=None,
            auto_reload=False,
            keep_trailing_newline=False,
        )
        # range, lipsum, cycler, joiner, namespace, dict: none is needed for personalisation,
        # and cycler/joiner are classic SSTI footholds.
        self.globals.clear()
        self.filters.update(GUARDED_FILTERS)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            if _same_kind(left, right):
                limit = output_limit()
                check_size("adding with +", size_of(left, limit) + size_of(right, limit))
        elif operator == "%" and isinstance(left, str):
            check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def bounded_concat(self, parts: tuple[Any, ...], markup: bool) -> str:
        limit = output_limit()
        check_size("joining with ~", sum(size_of(part, limit) for part in parts))
        return markup_join(parts) if markup else str_join(parts)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """As the sandbox's own, with a formatter that sizes every field before formatting."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        owner: Any = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: SandboxedFormatter
        if isinstance(owner, Markup):
            formatter = BoundedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = BoundedFormatter(self)
        is_map = value.__name__ == "format_map"
        kind = type(owner)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            return kind(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(
            getattr(__obj, "__self__", None), str | bytes
        ):
            args = check_str_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
            if len(seq) * times > MAX_REPEAT:
                raise OverBudget(f"repeating {len(seq) * times:,} items with * is too large")
            limit = output_limit()
            check_size("repeating with *", size_of(seq, limit) * max(times, 0))
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise OverBudget(f"a product of about {bits:,} bits is too large")


def _check_power(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        bits = left.bit_length() * right
        if bits > MAX_INT_BITS:
            raise OverBudget(f"a power of about {bits:,} bits is too large (exponent too large)")


def _same_kind(left: Any, right: Any) -> bool:
    """Operands ``+`` concatenates (a str and a Markup, two lists), rather than adds."""
    return any(
        isinstance(left, kind) and isinstance(right, kind) for kind in (str, bytes, list, tuple)
    )
