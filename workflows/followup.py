"""One durable follow-up per lead alert: alert the owner, remind them, then tell the team lead.

Sales leads go cold in hours, and an alert email is easy to miss. So every alert (a contact
crossing the qualification stage, or a campaign's ``notify_sales`` step) runs this workflow:

1. deliver the alert to the owner (email, chat, CRM);
2. if nobody acknowledges within ``remind_after_hours`` *working* hours, remind the owner;
3. if still nobody has by ``escalate_after_hours`` working hours after the alert, escalate to the
   team lead, copying the owner.

Acknowledging (the signed link in the email, the API, the dashboard) writes the database first
and then signals here; the signal ends the workflow early, and the reminder activity re-checks
the database, so a signal lost while Temporal was away still stops the reminder. Deadlines are
computed from ``workflow.now()`` with the working calendar fixed in the input, so replay is
deterministic and a change to sales.yaml does not move alerts already out.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from campaigns.schedule import add_working_hours
    from workflows.sales_types import (
        QUERY_ALERT,
        SIGNAL_ACK,
        AlertAck,
        AlertDeliveryInput,
        AlertDeliveryResult,
        LeadAlertInput,
        LeadAlertResult,
    )

__all__ = ["DELIVERY_RETRY", "LeadAlertWorkflow"]

# Delivery talks to SMTP and chat/CRM endpoints: back off to 30 minutes and keep trying for a
# day; an alert that could not go out in a day is logged, and the follow-up carries on.
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    maximum_attempts=0,
)
DELIVERY_GIVE_UP = timedelta(days=1)


@workflow.defn(name="LeadAlert")
class LeadAlertWorkflow:
    def __init__(self) -> None:
        self._ack: AlertAck | None = None
        self._stage = "alerting"
        self._due: datetime | None = None

    @workflow.signal(name=SIGNAL_ACK)
    def acknowledge(self, ack: AlertAck) -> None:
        if self._ack is None:
            self._ack = ack

    @workflow.query(name=QUERY_ALERT)
    def state(self) -> dict[str, str]:
        """Where the follow-up is, for ``drip`` and the dashboard."""
        return {
            "stage": self._stage,
            "due": self._due.isoformat() if self._due else "",
            "acknowledged_by": self._ack.by if self._ack else "",
        }

    @workflow.run
    async def run(self, inp: LeadAlertInput) -> LeadAlertResult:
        start = workflow.now()
        await self._deliver(inp, "alert")
        result = LeadAlertResult(outcome="acknowledged")
        if await self._acknowledged_by(self._deadline(inp, start, inp.remind_after_hours)):
            return result
        self._stage = "reminding"
        reminder = await self._deliver(inp, "reminder")
        if reminder is not None and reminder.skipped:  # acknowledged while the signal was lost
            return result
        result.reminded = True
        if inp.escalate_after_hours is None:
            result.outcome = "unacknowledged"
            self._stage = "done"
            return result
        if await self._acknowledged_by(self._deadline(inp, start, inp.escalate_after_hours)):
            return result
        self._stage = "escalating"
        escalation = await self._deliver(inp, "escalation")
        if escalation is not None and escalation.skipped:
            return result
        result.escalated = True
        result.outcome = "unacknowledged"
        self._stage = "done"
        return result

    @staticmethod
    def _deadline(inp: LeadAlertInput, start: datetime, hours: float) -> datetime:
        return add_working_hours(
            start,
            hours,
            days=inp.working_days,
            begin=inp.working_start,
            end=inp.working_end,
            timezone=inp.timezone,
        )

    async def _acknowledged_by(self, due: datetime) -> bool:
        """Wait until ``due`` or an acknowledgement, whichever comes first."""
        self._stage, self._due = ("waiting", due)
        left = due - workflow.now()
        if self._ack is None and left > timedelta(0):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._ack is not None, timeout=left)
        if self._ack is not None:
            self._stage = "acknowledged"
        return self._ack is not None

    async def _deliver(self, inp: LeadAlertInput, kind: str) -> AlertDeliveryResult | None:
        try:
            result: AlertDeliveryResult = await workflow.execute_activity(
                "deliver_lead_alert",
                AlertDeliveryInput(alert_id=inp.alert_id, kind=kind, channels=inp.channels),
                result_type=AlertDeliveryResult,
                start_to_close_timeout=timedelta(minutes=1),
                schedule_to_close_timeout=DELIVERY_GIVE_UP,
                retry_policy=DELIVERY_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.error("alert %s: %s gave up: %s", inp.alert_id, kind, exc.cause)
            return None
        for problem in result.problems:
            workflow.logger.warning("alert %s: %s: %s", inp.alert_id, kind, problem)
        return result
