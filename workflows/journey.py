"""The journey workflow: one durable run per contact enrolment, walking a compiled campaign plan.

Deterministic by construction: time comes from ``workflow.now()`` and timers, message ids from
``workflow.uuid4()`` (so a retried send is the same message), and all I/O happens in activities.
Events arrive as signals and are buffered, so an open that lands while the send activity is still
finishing counts when the journey reaches its ``wait_for``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from campaigns.plan import PlanStep
    from workflows.types import (
        QUERY_STATE,
        SIGNAL_EVENT,
        BranchInput,
        BranchResult,
        FinishJourneyInput,
        JourneyInput,
        JourneyResult,
        JourneySignal,
        JourneyState,
        SendEmailInput,
        SendEmailResult,
        UpdateContactInput,
    )

__all__ = ["SEND_RETRY", "JourneyWorkflow"]

# SMTP outages delay mail, they never drop it: retry forever, backing off to 10 minutes.
# Permanent failures (5xx, template errors) are not exceptions: the activity records them.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,
)
# Contact updates are short database writes; the database being away is the only failure mode.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)


@workflow.defn(name="Journey")
class JourneyWorkflow:
    def __init__(self) -> None:
        self._events: list[JourneySignal] = []
        self._seen: set[int] = set()
        self._sent: dict[str, str] = {}
        self._visited: list[str] = []
        self._current: str | None = None
        self._waiting = ""
        self._finished = False
        self._input: JourneyInput | None = None

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, signal: JourneySignal) -> None:
        """Buffer an event once; a redelivered event (same id) is ignored."""
        if signal.event_id in self._seen:
            return
        self._seen.add(signal.event_id)
        self._events.append(signal)

    @workflow.query(name=QUERY_STATE)
    def state(self) -> JourneyState:
        inp = self._input
        return JourneyState(
            campaign_id=inp.plan.campaign_id if inp else "",
            version=inp.plan.version if inp else "",
            contact_id=inp.contact_id if inp else 0,
            current_step=self._current,
            waiting_for=self._waiting,
            visited=list(self._visited),
            finished=self._finished,
        )

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        self._input = inp
        plan = inp.plan
        visits: Counter[str] = Counter()
        step_id: str | None = plan.entry
        while step_id is not None:
            step = plan.step(step_id)
            visits[step_id] += 1
            self._current = step_id
            self._visited.append(step_id)
            if step.kind == "send_email":
                await self._send(inp, step, visits[step_id])
                step_id = step.next
            elif step.kind == "wait":
                self._waiting = f"the timer, until {_until(step.seconds)}"
                await workflow.sleep(timedelta(seconds=step.seconds))
                self._waiting = ""
                step_id = step.next
            elif step.kind == "wait_for":
                step_id = step.on_event if await self._wait_for(step) else step.on_timeout
            elif step.kind == "update_contact":
                await workflow.execute_activity(
                    "update_contact",
                    UpdateContactInput(
                        contact_id=inp.contact_id,
                        add_tags=step.add_tags,
                        remove_tags=step.remove_tags,
                        set_fields=step.set_fields,
                        unset_fields=step.unset_fields,
                        add_score=step.add_score,
                        key=f"{workflow.info().workflow_id}/{step_id}/{visits[step_id]}",
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=DB_RETRY,
                )
                step_id = step.next
            elif step.kind == "branch":
                step_id = await self._branch(inp, step)
            elif step.kind == "split":
                step_id = _variant(step, inp.contact_id, inp.plan.campaign_id)
            elif step.kind == "goto":
                # the goto's own visits count its jumps: after max_times, carry on below it
                step_id = step.goto if visits[step_id] <= step.max_times else step.next
            elif step.kind == "exit":
                step_id = None
            else:  # the router never starts such a plan (workflows.capabilities); belt and braces
                raise ApplicationError(
                    f"step {step_id}: this engine cannot run '{step.kind}' steps yet",
                    non_retryable=True,
                )
        self._current, self._finished = None, True
        await workflow.execute_activity(
            "finish_journey",
            FinishJourneyInput(workflow_id=workflow.info().workflow_id),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        return JourneyResult(visited=list(self._visited), emails=dict(self._sent))

    async def _send(self, inp: JourneyInput, step: PlanStep, visit: int) -> None:
        info = workflow.info()
        result: SendEmailResult = await workflow.execute_activity(
            "send_email",
            SendEmailInput(
                message_id=str(workflow.uuid4()),
                key=f"{info.workflow_id}/{step.id}/{visit}",
                workflow_id=info.workflow_id,
                contact_id=inp.contact_id,
                campaign_id=inp.plan.campaign_id,
                campaign_version=inp.plan.version,
                step_id=step.id,
                template=step.template,
                subject=step.subject,
                preheader=step.preheader,
                track=step.track,
            ),
            result_type=SendEmailResult,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=SEND_RETRY,
        )
        self._sent[step.id] = result.message_id

    async def _branch(self, inp: JourneyInput, step: PlanStep) -> str:
        """The first case that holds now, else ``else``; opens and clicks are the journey's own."""
        by_message = {message_id: sid for sid, message_id in self._sent.items()}
        seen = {
            kind: sorted(
                {
                    by_message[e.message_id]
                    for e in self._events
                    if e.type == kind and e.message_id in by_message
                }
            )
            for kind in ("open", "click")
        }
        result = await workflow.execute_activity(
            "evaluate_branch",
            BranchInput(
                contact_id=inp.contact_id,
                conditions=[case.when for case in step.cases],
                opened=seen["open"],
                clicked=seen["click"],
            ),
            result_type=BranchResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        return step.cases[result.index].goto if result.index >= 0 else step.else_goto

    async def _wait_for(self, step: PlanStep) -> bool:
        """True if the awaited event arrived (possibly before we got here), False on timeout."""
        start = len(self._events)
        self._waiting = f"{step.wait_event} {step.wait_ref} until {_until(step.seconds)}"

        def matched() -> bool:
            if step.wait_event in ("open", "click"):
                wanted = self._sent.get(step.wait_ref)
                return wanted is not None and any(
                    e.type == step.wait_event and e.message_id == wanted for e in self._events
                )
            return any(e.type == "event" and e.name == step.wait_ref for e in self._events[start:])

        try:
            await workflow.wait_condition(matched, timeout=timedelta(seconds=step.seconds))
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting = ""


def _variant(step: PlanStep, contact_id: int, campaign_id: str) -> str:
    """A/B/n assignment: a hash of (campaign, step, contact) into 100 buckets, so a contact lands
    in the same variant on every visit and on replay, and the shares follow the percentages."""
    digest = hashlib.sha256(f"{campaign_id}/{step.id}/{contact_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    for variant in step.variants:
        if bucket < variant.percent:
            return variant.goto
        bucket -= variant.percent
    return step.variants[-1].goto  # percentages sum to 100 (validated); never reached


def _until(seconds: float) -> str:
    """When a wait ends, for people reading the journey's state (queries are not in history)."""
    deadline = workflow.now() + timedelta(seconds=seconds)
    return f"{deadline:%Y-%m-%d %H:%M:%S} UTC"
