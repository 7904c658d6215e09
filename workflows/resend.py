"""One durable resend of an interrupted email, run by the worker when an operator asks for it.

Why a workflow rather than an SMTP call from the command or the web app: the send then takes
the worker's path, the one every journey email takes (outbox row, suppression check, rendering,
the SMTP pool with its pacing and DKIM, bounce handling), an SMTP outage delays the resend with
the journeys' backoff instead of failing it, and the operator's process may go away once the
request is recorded. The workflow id is ``resend/<message id>``, so asking twice while one runs
joins it; the outbox row's claim (``contacts.interrupted.claim_resend``) is what makes sure an
email is resent at most once, even across crashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

__all__ = [
    "RESEND_RETRY",
    "ResendInput",
    "ResendResult",
    "ResendWorkflow",
    "resend_workflow_id",
]

#: as a journey's send: a transient SMTP failure is retried with backoff, forever (the row
#: stays claimed for this resend meanwhile; a crash mid-SMTP ends it ``failed``, never resent)
RESEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,
)


def resend_workflow_id(message_id: str) -> str:
    return f"resend/{message_id}"


@dataclass
class ResendInput:
    message_id: str
    #: who decided, for the row and the contact's ``resent`` event ("cli (alice)", a dashboard
    #: user's address, an API key's name)
    requested_by: str


@dataclass
class ResendResult:
    """``state`` is the row's final state (``sent``, ``failed``, ``suppressed``), ``refused``
    (nothing was done; ``error`` says why) or ``deferred`` (the contact paused their emails
    until ``retry_at``; the workflow waits and tries again)."""

    message_id: str
    state: str
    error: str | None = None
    retry_at: str = ""


@workflow.defn(name="ResendMessage")
class ResendWorkflow:
    @workflow.run
    async def run(self, inp: ResendInput) -> ResendResult:
        while True:
            result: ResendResult = await workflow.execute_activity(
                "resend_message",
                inp,
                result_type=ResendResult,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RESEND_RETRY,
            )
            if result.state != "deferred":
                return result
            until = datetime.fromisoformat(result.retry_at)
            await workflow.sleep(max(until - workflow.now(), timedelta(minutes=1)))
