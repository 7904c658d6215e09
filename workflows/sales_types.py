"""The contracts of the lead-alert follow-up workflow and its activities (one dataclass in, one
out; add fields with defaults only, so recorded histories keep deserialising)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "QUERY_ALERT",
    "SIGNAL_ACK",
    "AlertAck",
    "AlertDeliveryInput",
    "AlertDeliveryResult",
    "AlertKind",
    "LeadAlertInput",
    "LeadAlertResult",
    "lead_alert_workflow_id",
]

SIGNAL_ACK = "acknowledge"
QUERY_ALERT = "alert"

#: what a delivery is: the first alert to the owner, the reminder to the owner, or the
#: escalation to the team lead
AlertKind = Literal["alert", "reminder", "escalation"]


def lead_alert_workflow_id(alert_id: str) -> str:
    """One follow-up workflow per alert, so starting it twice is a no-op."""
    return f"lead-alert-{alert_id}"


def _all_channels() -> list[str]:
    return ["email", "chat", "crm"]


def _weekdays() -> list[str]:
    return ["mon", "tue", "wed", "thu", "fri"]


@dataclass
class LeadAlertInput:
    """Everything the follow-up needs, fixed when the alert is raised: a change to sales.yaml
    later does not move the deadlines of alerts already out."""

    alert_id: str
    channels: list[str] = field(default_factory=_all_channels)
    remind_after_hours: float = 4.0
    #: None: no escalation
    escalate_after_hours: float | None = 8.0
    working_days: list[str] = field(default_factory=_weekdays)
    working_start: str = "09:00"
    working_end: str = "17:00"
    timezone: str = "UTC"


@dataclass
class LeadAlertResult:
    #: ``acknowledged`` or ``unacknowledged`` (the escalation went out, or there is none)
    outcome: str
    reminded: bool = False
    escalated: bool = False


@dataclass
class AlertAck:
    """The acknowledge signal: who acknowledged (an address, ``link`` or an API key's name)."""

    by: str = ""


@dataclass
class AlertDeliveryInput:
    alert_id: str
    kind: str = "alert"
    channels: list[str] = field(default_factory=_all_channels)


@dataclass
class AlertDeliveryResult:
    delivered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: the alert was acknowledged before this reminder or escalation: nothing was sent
    skipped: bool = False
