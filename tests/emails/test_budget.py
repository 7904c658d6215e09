"""The template budget holds: a hostile or careless template fails with TemplateBudgetError, the
render stops (no thread left burning CPU), and nothing takes gigabytes on the way.

Each hostile render runs in a forked child with its memory capped at a gigabyte above what the
test process already uses, so a template that would allocate gigabytes fails there instead of
swapping the machine, and one that would loop for ever is killed after a generous wait
(``_NEVER``) rather than hanging the suite: both count as the budget not holding.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from campaigns.workspace import load_workspace
from contacts.models import Contact
from drip.settings import Settings
from emails import Renderer, TemplateError
from emails.errors import TemplateBudgetError
from tests.emails.conftest import FRAGMENT, render_with

#: Seconds after which a render that has not returned is taken as never returning.
_NEVER = 120.0
_GIB = 1 << 30

HOSTILE = {
    # the issue's own list
    "nested loops": "{% for a in 'x'|center(100000) %}{% for b in 'x'|center(100000) %}"
    "{% endfor %}{% endfor %}",
    "tower of powers": "{{ ((((9**100)**100)**100)**100) }}",
    "percent width": "{{ '%0999999999d' % 1 }}",
    "center filter": "{{ 'a'|center(10**9) }}",
    "format width": "{{ '{:>999999999}'.format('x') }}",
    "indent filter": "{{ 'x'|indent(10**9) }}",
    "string repeat": "{{ 'x' * 10**9 }}",
    # the same blow-ups in other spellings
    "center literal": "{{ 'a'|center(1000000000) }}",
    "center method": "{{ 'a'.center(10**9) }}",
    "zfill method": "{{ 'a'.zfill(10**9) }}",
    "format filter": "{{ '%0999999999d'|format(1) }}",
    "format precision": "{{ '{:.999999999f}'.format(1.5) }}",
    "percent star width": "{{ '%*d' % (10**9, 1) }}",
    "replace blow-up": "{{ 'ab'|center(1000000)|replace(' ', 'xxxxxxxxxx') }}",
    "wordwrap wrapstring": "{{ 'a b c d e f g h'|center(1000000)|wordwrap(1, "
    "wrapstring='y'|center(1000000)) }}",
    "tojson indent": "{{ ['a']|tojson(indent=10**9) }}",
    "repeat a list of one long string": "{{ ['x'|center(1000000)] * 90000 }}",
    "join one long string many times": "{% set s = 'x'|center(1000000) %}{% set a = [s, s] %}"
    "{% set b = [a, a, a, a] %}{{ [b, b, b, b]|join }}",
    "print a list of one long string many times": "{% set s = 'x'|center(1000000) %}"
    "{% set a = [s, s] %}{% set b = [a, a, a, a] %}{{ [b, b, b, b] }}",
    "string of a list of one long string many times": "{% set s = 'x'|center(1000000) %}"
    "{% set a = [s, s] %}{{ [a, a, a, a]|string|length }}",
    "str.join of a generator": "{% set s = 'x'|center(1000000) %}"
    "{{ ''.join([s, s, s]|map('upper')) }}",
    "format a list of one long string": "{% set s = 'x'|center(1000000) %}"
    "{% set a = [s, s] %}{{ '{}'.format([a, a, a, a]) }}",
    "doubling with ~": "{% set s = 'x'|center(1000000) %}{% set s = s ~ s %}{% set s = s ~ s %}"
    "{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s|length }}",
    "doubling with +": "{% set s = 'x'|center(1000000) %}{% set s = s + s %}{% set s = s + s %}"
    "{% set s = s + s %}{% set s = s + s %}{% set s = s + s %}{% set s = s + s %}{{ s|length }}",
    "block set": "{% set s = 'x'|center(1000000) %}{% set big %}{% for i in [0] * 90000 %}{{ s }}"
    "{% endfor %}{% endset %}{{ big|length }}",
    "squaring a big number": "{% set n = 9 ** 10000 %}{% set n = n * n %}{% set n = n * n %}"
    "{% set n = n * n %}{% set n = n * n %}{% set n = n * n %}{% set n = n * n %}{{ n > 0 }}",
    "loop printing nothing": "{% for a in 'x'|center(1000000) %}{% for b in 'x'|center(1000000) %}"
    "{{ '' }}{% endfor %}{% endfor %}",
}


def _fork(fn: Callable[[], list[Any]]) -> list[Any]:
    """``fn()`` in a forked child with a memory cap; its JSON result, or a failure of the test
    if it crashed or never returned."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            used = _data_bytes()
            resource.setrlimit(resource.RLIMIT_DATA, (used + _GIB, used + _GIB))
            payload = json.dumps(fn())
        except BaseException as exc:  # reported to the parent, which fails
            payload = json.dumps(["crashed", f"{type(exc).__name__}: {exc}"[:300], None])
        os.write(write, payload.encode())
        os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], _NEVER)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the render was still running after {_NEVER:.0f}s")
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert data, "the child died without a word (killed for its memory?)"
    result: list[Any] = json.loads(data)
    return result


def _data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmData in /proc/self/status")


@pytest.fixture
def budget_settings(settings: Settings) -> Settings:
    """A tighter clock than the default 2 s, so the loops end sooner."""
    return settings.model_copy(update={"template_render_seconds": 0.5})


@pytest.fixture
def hostile(own_workspace: Path, budget_settings: Settings) -> Callable[..., list[Any]]:
    """``hostile(source, **overrides)``: render the template ``custom`` in a child; returns
    ``[error class, message, line]`` (``["rendered", size, None]`` if it rendered)."""

    def run(source: str, **overrides: Any) -> list[Any]:
        (own_workspace / "emails" / "custom.mjml").write_text(source, encoding="utf-8")
        renderer = Renderer(load_workspace(own_workspace), budget_settings)
        who = Contact(id=1, email="ann@example.com", fields={"first_name": "Ann"})

        def render() -> list[Any]:
            try:
                email = render_with(renderer)("custom", who, **overrides)
            except TemplateError as exc:
                return [type(exc).__name__, str(exc), exc.lineno]
            return ["rendered", len(email.html), None]

        return _fork(render)

    return run


@pytest.mark.parametrize("expr", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_fail_within_the_budget(
    hostile: Callable[..., list[Any]], expr: str
) -> None:
    kind, message, _ = hostile(FRAGMENT.format(expr))
    assert kind == "TemplateBudgetError", message
    assert message.startswith("custom:") or message.startswith("custom: "), message
    assert "too large" in message or "render took over 0.5s" in message, message


@pytest.mark.parametrize(
    "expr",
    [HOSTILE["percent width"], HOSTILE["tower of powers"], HOSTILE["center filter"]],
    ids=["percent width", "tower of powers", "center filter"],
)
def test_hostile_subjects_name_their_line(hostile: Callable[..., list[Any]], expr: str) -> None:
    kind, message, line = hostile(FRAGMENT.format("fine"), subject=f"Hi\n{expr}")
    assert kind == "TemplateBudgetError", message
    assert message.startswith("custom: subject:2: over budget:"), message
    assert line == 2


def test_a_loop_over_time_names_its_line(hostile: Callable[..., list[Any]]) -> None:
    kind, message, line = hostile(
        FRAGMENT.format("fine"), preheader="Hello\n\n" + HOSTILE["nested loops"]
    )
    assert kind == "TemplateBudgetError", message
    assert "render took over 0.5s and was stopped (DRIP_TEMPLATE_RENDER_SECONDS)" in message
    assert line == 3


def test_normal_templates_within_the_budget(hostile: Callable[..., list[Any]]) -> None:
    source = FRAGMENT.format(
        "{{ '%s and %05d' % ('a', 42) }} {{ '{:>8}|{:.2f}'.format('x', 2.5) }} "
        "{{ 'ab'|center(6) }} {{ 'a\nb'|indent(2) }} {{ 'x' ~ 'y' }} {{ 2 ** 64 }} "
        "{{ [1, 2] + [3] }} {{ 'abc'|replace('b', 'B') }} {{ ['a', 'b']|join(', ') }} "
        "{{ 'one two three'|wordwrap(5) }} {{ [1]|tojson(indent=2) }} {{ 'x' * 3 }}"
    )
    kind, size, _ = hostile(source)
    assert kind == "rendered", size


def test_output_budget_is_a_setting(own_workspace: Path, settings: Settings) -> None:
    (own_workspace / "emails" / "custom.mjml").write_text(
        FRAGMENT.format("{{ 'x'|center(50000) }}"), encoding="utf-8"
    )
    who = Contact(id=1, email="ann@example.com", fields={})
    workspace = load_workspace(own_workspace)
    render_with(Renderer(workspace, settings))("custom", who)  # within the default budget
    tight = settings.model_copy(update={"template_output_chars": 20_000})
    with pytest.raises(TemplateBudgetError, match=r"(budget of 20,000|larger than 20000)"):
        render_with(Renderer(workspace, tight))("custom", who)


def test_the_render_thread_is_freed_and_others_keep_rendering(
    own_workspace: Path, budget_settings: Settings
) -> None:
    """The thread of an overtime render is interrupted and reusable, with nothing pending
    that could hit its next job; meanwhile another thread renders normally."""
    (own_workspace / "emails" / "custom.mjml").write_text(
        FRAGMENT.format(HOSTILE["nested loops"]), encoding="utf-8"
    )
    render = render_with(Renderer(load_workspace(own_workspace), budget_settings))
    who = Contact(id=1, email="ann@example.com", fields={"first_name": "Ann"})
    outcome: list[str] = []

    def hostile_then_plain() -> None:
        try:
            render("custom", who)
        except TemplateBudgetError as exc:
            outcome.append(exc.reason)
        total = sum(range(200_000))  # plain Python in the same thread, after the interruption
        outcome.append(f"{total} {render('welcome', who).subject}")

    thread = threading.Thread(target=hostile_then_plain, daemon=True)  # daemon: if it never ends
    thread.start()
    others: list[str] = []
    deadline = time.monotonic() + _NEVER
    while thread.is_alive() and time.monotonic() < deadline:
        others.append(render("welcome", who).subject)
    thread.join(timeout=1)
    assert not thread.is_alive(), "the hostile render was never stopped"
    assert outcome == [
        "render took over 0.5s and was stopped (DRIP_TEMPLATE_RENDER_SECONDS)",
        f"{sum(range(200_000))} Welcome to Acme Outdoor, Ann",
    ]
    assert others, "the other thread rendered nothing while the hostile render ran"
