"""Errors of the campaign language, each pointing at a file, line and column.

CampaignError                 base; ``problems`` lists every problem found, not only the first
├── CampaignSyntaxError       the file is not YAML we accept (syntax, tags, size, duplicate keys)
├── CampaignSchemaError       a field is missing, unknown or has a wrong value
└── CampaignReferenceError    a step, template or form named in the file does not exist

``campaigns.conditions.ConditionError`` (a ValueError with a column) is raised by the condition
parser alone; the validator turns it into a Problem at the exact file position.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

__all__ = [
    "CampaignError",
    "CampaignReferenceError",
    "CampaignSchemaError",
    "CampaignSyntaxError",
    "Problem",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, rendered like a compiler error: ``file:line:col: path: msg``."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        # line 0: about the file or folder as a whole, which has no position to point at
        where = f"{self.file}:{self.line}:{self.column}" if self.line > 0 else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class CampaignError(Exception):
    """One or more problems with a workspace file; ``str()`` lists them all, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CampaignSyntaxError(CampaignError):
    """The YAML cannot be read safely."""


class CampaignSchemaError(CampaignError):
    """The YAML is readable but does not describe a valid campaign, form or workspace."""


class CampaignReferenceError(CampaignError):
    """The file names a step, template or form that does not exist."""


def hint(wrong: str, options: Collection[str], *, listing: str = "known") -> str:
    """`` (did you mean 'reminder'?)`` for a likely typo, else the options, so the author never
    has to open another file to find the right name."""
    close = difflib.get_close_matches(wrong, list(options), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if not options:
        return ""
    names = sorted(options)
    if len(names) > _MAX_LISTED:  # a long list buries the message; the rest is a `ls` away
        shown = ", ".join(names[:_MAX_LISTED])
        return f" ({listing}: {shown}, and {len(names) - _MAX_LISTED} more)"
    return f" ({listing}: {', '.join(names)})"


_MAX_LISTED = 8
