"""The marked blocks of the documentation pages, as the docs tests read them.

A page marks a fenced block for a test with an HTML comment on the line before it, which the
site does not show: ``<!-- checked: NAME -->`` before a ``console`` block the tour test runs
and compares, ``<!-- validate: PATH -->`` before a YAML block that is a whole workspace file
(``PATH`` inside the workspace) which ``drip campaigns validate`` must accept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

DOCS = ROOT / "docs"
_MARKED = re.compile(
    r"^<!-- (?P<kind>checked|validate): (?P<name>\S+) -->\n"
    r"```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^```$",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    page: Path
    kind: str
    name: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)} ({self.kind}: {self.name})"


def marked_blocks(kind: str, pages: list[Path] | None = None) -> list[Block]:
    found = []
    for page in pages or sorted(DOCS.rglob("*.md")):
        for m in _MARKED.finditer(page.read_text()):
            if m["kind"] == kind:
                found.append(Block(page, kind, m["name"], m["body"]))
    return found


@dataclass(frozen=True)
class Console:
    """A console block: the commands (``$ `` lines with their ``\\`` continuations) and the
    lines the last one prints."""

    command: str
    expected: list[str]


def console(block: Block) -> Console:
    lines = block.body.splitlines()
    assert lines and lines[0].startswith("$ "), f"{block.where}: a checked block starts with $"
    command = [lines[0][2:]]
    rest = lines[1:]
    while command[-1].endswith("\\") and rest:
        command[-1] = command[-1][:-1]
        command.append(rest.pop(0).strip())
    assert not any(line.startswith("$ ") for line in rest), f"{block.where}: one command a block"
    return Console(" ".join(part.strip() for part in command), rest)
