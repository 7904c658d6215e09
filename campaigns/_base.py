"""The building blocks every file of the language shares: strict models, ids and durations.

Its own module so the language's parts (campaigns, the workspace's deliverability section)
can use them without importing each other.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic_core import PydanticCustomError

from campaigns.durations import DurationError, format_duration, parse_duration

__all__ = ["Duration", "Identifier", "Strict"]

Identifier = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_-]{0,79}$",
        description="lower-case letters, digits, '-' and '_', starting with a letter",
    ),
]


def _duration(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    Field(json_schema_extra={"type": "string", "examples": ["2d", "36h", "P2D"]}),
]


class Strict(BaseModel):
    """Unknown keys are errors (a typo gets a hint, never silently ignored) and values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
