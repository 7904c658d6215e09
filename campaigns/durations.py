"""Durations as marketers write them: ``2d``, ``36h``, ``1d12h``, ``90m``, or ISO 8601 ``P2D``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DurationError", "format_duration", "parse_duration"]

_SHORT = re.compile(r"(\d+)\s*(w|d|h|m|s)", re.IGNORECASE)
_SHORT_FULL = re.compile(r"^\s*(?:\d+\s*[wdhms]\s*)+$", re.IGNORECASE)
_ISO = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$",
    re.IGNORECASE,
)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


class DurationError(ValueError):
    """Text that is not a duration; the message shows the accepted forms."""


def parse_duration(text: object) -> timedelta:
    """Parse a positive duration; anything else raises DurationError with examples."""
    if isinstance(text, timedelta):
        value = text
    elif isinstance(text, str) and _SHORT_FULL.match(text):
        value = timedelta(seconds=sum(int(n) * _UNITS[u.lower()] for n, u in _SHORT.findall(text)))
    elif isinstance(text, str) and (m := _ISO.match(text.strip())) and text.strip().upper() != "P":
        value = timedelta(seconds=sum(int(v or 0) * _UNITS[k] for k, v in m.groupdict().items()))
    else:
        raise DurationError(f"{text!r} is not a duration (examples: 2d, 36h, P2D)")
    if value <= timedelta(0):
        raise DurationError(f"{text!r} must be longer than zero")
    return value


def format_duration(value: timedelta) -> str:
    """The short form of a duration, e.g. ``2d`` or ``1d12h``; used in graphs and messages."""
    seconds = int(value.total_seconds())
    parts = []
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
