"""The one-dataclass-in, one-dataclass-out contracts of the journey workflow and its activities.

Add fields with defaults, never new positional parameters: histories recorded with the old shape
must keep deserialising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from campaigns.plan import Plan

__all__ = [
    "FinishJourneyInput",
    "JourneyInput",
    "JourneyResult",
    "JourneySignal",
    "JourneyState",
    "SendEmailInput",
    "SendEmailResult",
    "UpdateContactInput",
]

SIGNAL_EVENT = "event"
QUERY_STATE = "state"


@dataclass
class JourneyInput:
    """The plan travels in the input, so a deploy never changes a journey already running."""

    plan: Plan
    contact_id: int
    enrolment: int = 1


@dataclass
class JourneySignal:
    """An event delivered to a journey; ``event_id`` lets the journey ignore a duplicate."""

    event_id: int
    type: str
    name: str = ""
    step_id: str = ""
    message_id: str = ""


@dataclass
class JourneyState:
    """What ``drip journeys show`` prints: where the journey is and what it waits for."""

    campaign_id: str
    version: str
    contact_id: int
    current_step: str | None
    waiting_for: str
    visited: list[str] = field(default_factory=list)
    finished: bool = False


@dataclass
class JourneyResult:
    visited: list[str]
    emails: dict[str, str] = field(default_factory=dict)


@dataclass
class SendEmailInput:
    """Ids and names only: the activity reads the contact and template itself."""

    message_id: str
    key: str
    workflow_id: str
    contact_id: int
    campaign_id: str
    campaign_version: str
    step_id: str
    template: str
    subject: str
    preheader: str = ""
    track: bool = True


@dataclass
class SendEmailResult:
    message_id: str
    state: str
    error: str | None = None


@dataclass
class UpdateContactInput:
    contact_id: int
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)
    set_fields: dict[str, Any] = field(default_factory=dict)
    unset_fields: list[str] = field(default_factory=list)
    add_score: int = 0
    #: journey/step/visit: score points are added once per key, however often the activity runs
    key: str = ""


@dataclass
class BranchInput:
    """The conditions of a branch, in order, and what the journey itself knows: which of its
    emails were opened and clicked (from its own signals)."""

    contact_id: int
    conditions: list[str]
    opened: list[str] = field(default_factory=list)
    clicked: list[str] = field(default_factory=list)


@dataclass
class BranchResult:
    #: the first condition that holds, or -1 for ``else``
    index: int


@dataclass
class FinishJourneyInput:
    workflow_id: str
    state: str = "completed"
