"""The one-dataclass-in, one-dataclass-out contracts of the journey workflow and its activities.

Add fields with defaults, never new positional parameters: histories recorded with the old shape
must keep deserialising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from campaigns.plan import Plan

__all__ = [
    "EXIT_EVENTS",
    "QUERY_STATE",
    "SIGNAL_CONTROL",
    "SIGNAL_EVENT",
    "BranchInput",
    "BranchResult",
    "ContactTimeInput",
    "ContactTimeResult",
    "FinishJourneyInput",
    "JourneyCarry",
    "JourneyControl",
    "JourneyInput",
    "JourneyResult",
    "JourneySignal",
    "JourneyState",
    "NotifySalesInput",
    "NotifySalesResult",
    "SendEmailInput",
    "SendEmailResult",
    "SplitWinnerInput",
    "SplitWinnerResult",
    "UpdateContactInput",
    "UpdateContactResult",
    "WebhookInput",
    "WebhookResult",
]

SIGNAL_EVENT = "event"
SIGNAL_CONTROL = "control"
QUERY_STATE = "state"

#: Event types that end every running journey of the contact at once.
EXIT_EVENTS = frozenset({"unsubscribe", "bounce", "complaint"})


@dataclass
class JourneySignal:
    """An event delivered to a journey; ``event_id`` lets the journey ignore a duplicate.

    ``matches`` says which of the plan's filters the router found true for this event and this
    contact: a ``wait_for`` step id whose ``where`` holds, ``goal`` (the goal's event and
    filter, or its ``when`` condition), ``exit:N`` (``exit_when[N]``). The router has the event's
    properties and the contact at hand; the journey then decides without a database round trip.
    """

    event_id: int
    type: str
    name: str = ""
    step_id: str = ""
    message_id: str = ""
    matches: list[str] = field(default_factory=list)


@dataclass
class JourneyControl:
    """An operator's ``pause``, ``resume`` or ``cancel`` of one journey."""

    action: str
    reason: str = ""


@dataclass
class JourneyCarry:
    """What a journey takes across continue-as-new: where it is and what it has seen."""

    step_id: str | None
    visits: dict[str, int] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    seen: list[int] = field(default_factory=list)
    events: list[JourneySignal] = field(default_factory=list)
    paused: bool = False
    visited: list[str] = field(default_factory=list)
    runs: int = 1


@dataclass
class JourneyInput:
    """The plan travels in the input, so a deploy never changes a journey already running.

    ``timezone`` is the contact's (or the workspace's) zone at enrolment, for send windows and
    times of day; ``carry`` is set only by continue-as-new."""

    plan: Plan
    contact_id: int
    enrolment: int = 1
    timezone: str = "UTC"
    carry: JourneyCarry | None = None
    #: continue-as-new past this many history events (0: the engine's default)
    history_bound: int = 0


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
    paused: bool = False
    outcome: str = ""


@dataclass
class JourneyResult:
    visited: list[str]
    emails: dict[str, str] = field(default_factory=dict)
    #: the enrolment's end state: completed, converted, exited or cancelled
    outcome: str = "completed"


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
    #: the step's own sender and reply-to, when it overrides the workspace's
    from_addr: str = ""
    reply_to: str = ""
    #: the campaign's frequency cap: at most ``cap_max`` emails (all campaigns) per ``cap_seconds``
    cap_max: int = 0
    cap_seconds: float = 0.0
    #: the journey's clock when it asked (ISO 8601): the cap counts back from it, and the row
    #: is stamped with it, so the cap follows Temporal's time, also when tests skip time
    now: str = ""
    #: the campaign's UTM parameters for this step's links (empty: none)
    utm: dict[str, Any] = field(default_factory=dict)
    #: marketing mail (the default) needs consent and skips suppressed role addresses; a
    #: transactional campaign's does not (``kind: transactional`` in the campaign language)
    marketing: bool = True
    #: False for a marketing campaign that says ``without_consent: allowed``: its email also
    #: goes to contacts without marketing consent (``contacts.marketing_consent``)
    consent_required: bool = True
    #: an email of the transactional API (``workflows.transactional``), its own category: a
    #: marketing unsubscribe or a pause does not stop it; a bounce, a complaint, an erasure and
    #: the suppression lists' addresses and domains do (``marketing`` is False with it)
    transactional: bool = False
    #: the values the API call gave the template, seen there as ``data`` (small: ids and
    #: amounts, not files; attachments stay in the database)
    data: dict[str, Any] = field(default_factory=dict)
    #: how many attachments ``contacts.attachments`` holds for this message (0: none)
    attachments: int = 0


@dataclass
class SendEmailResult:
    """``state`` is the outbox state, or ``deferred`` when the frequency cap holds the send
    back until ``retry_at`` (ISO 8601); then nothing was reserved and the journey retries."""

    message_id: str
    state: str
    error: str | None = None
    retry_at: str = ""


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
    #: the journey's goal ``when`` and ``exit_when`` conditions, checked after the change
    goal_when: str = ""
    exit_when: list[str] = field(default_factory=list)


@dataclass
class UpdateContactResult:
    #: "goal", "exit" or "" : whether the change met the journey's goal or an exit rule
    ends: str = ""
    reason: str = ""


@dataclass
class ContactTimeInput:
    contact_id: int
    field: str


@dataclass
class ContactTimeResult:
    #: the field as ISO 8601 with a zone, or "" when it is missing or not a date-time
    value: str = ""


@dataclass
class NotifySalesInput:
    contact_id: int
    campaign_id: str
    step_id: str
    message: str
    via: list[str]
    key: str


@dataclass
class NotifySalesResult:
    delivered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class WebhookInput:
    contact_id: int
    campaign_id: str
    step_id: str
    url: str
    body: dict[str, Any]
    key: str


@dataclass
class WebhookResult:
    status: int | None = None
    error: str | None = None


@dataclass
class SplitWinnerInput:
    """Which variant of an A/B split wins on ``metric``, once ``after_seconds`` have passed since
    the split's first email and every variant has ``min_sample`` sends."""

    campaign_id: str
    step_id: str
    metric: str
    after_seconds: float
    min_sample: int
    #: the first step of each variant, in the order of the plan
    variant_steps: list[str] = field(default_factory=list)
    #: the journey's clock (ISO 8601), so "after" follows Temporal's time
    now: str = ""


@dataclass
class SplitWinnerResult:
    #: the winning variant's first step, or "" while the test is still running
    goto: str = ""


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
    """``state`` is an enrolment state: completed, converted (goal), exited, cancelled."""

    workflow_id: str
    state: str = "completed"
    reason: str = ""
    contact_id: int = 0
    campaign_id: str = ""
