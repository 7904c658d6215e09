"""The journey workflow: one durable run per contact enrolment, walking a compiled campaign plan.

Deterministic by construction: time comes from ``workflow.now()`` and timers, message ids from
``workflow.uuid4()`` (so a retried send is the same message), and all I/O happens in activities.
Events arrive as signals and are buffered, so an open that lands while the send activity is still
finishing counts when the journey reaches its ``wait_for``.

Ending early. A signal can end the journey at any point: an unsubscribe, bounce or complaint
(``exited``), the goal (``converted``: the router matched the goal's event and filter, or its
``when`` condition, for this contact), an ``exit_when`` rule (``exited``) or an operator's cancel
(``cancelled``). Waits and timers are interruptible; an activity in flight finishes first (it is
short, and a send that was already handed to SMTP cannot be taken back).

Retry policies, chosen per activity (with the step kinds, in ``workflows._journey_steps``):

- ``send_email``: forever, 5 s doubling to 10 min. An SMTP outage delays mail, never drops it;
  permanent failures (5xx, template errors) are returned and recorded, not raised.
- database activities (``update_contact``, ``evaluate_branch``, ``contact_time``,
  ``split_winner``, ``finish_journey``): forever, 1 s doubling to 5 min; the database being away
  is their only failure. All but ``update_contact`` (which also routes the change events it
  records) run as local activities: a marker in the history instead of a server round trip.
- ``notify_sales`` and ``call_webhook``: 10 s doubling to 30 min for at most a day, then the
  journey records the failure and carries on: a CRM that is down must not stop the emails.

Where a journey is. When it comes to a step where it can dwell (a timer, a ``wait_for`` that
has not already matched, a send, a call to the outside) and that is not the step it last
recorded, it upserts the search attributes ``DripCampaign`` and ``DripStep`` on itself
(``workflows.positions``): the dashboard counts journeys per step from Temporal's visibility and
reads one journey's step with ``describe``. One history event per such step, no activity, no
database write. Runs from before this was added replay without it (``workflow.patched``).

History bound. Each step costs a handful of history events (an email step: 7 with its
position, a local database step: 1). Before a step, once the history passes ``HISTORY_BOUND``
events or the server suggests it, the journey continues as new, carrying its position, visit
counts, sent messages and unhandled events, so a loop or a monthly newsletter can run for years
(Temporal's hard limit is 51,200 events).

This module is the workflow itself: its state, the signals and query, the loop over the plan and
continue-as-new. What each step kind does is ``workflows._journey_steps``.
"""

from __future__ import annotations

from collections import Counter

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from campaigns.plan import PlanStep
    from workflows.types import (
        EXIT_EVENTS,
        QUERY_STATE,
        SIGNAL_CONTROL,
        SIGNAL_EVENT,
        FinishJourneyInput,
        JourneyCarry,
        JourneyControl,
        JourneyInput,
        JourneyResult,
        JourneySignal,
        JourneyState,
    )

# The step kinds are workflow code: imported normally, so the sandbox loads them afresh. The
# retry policies, patch ids and ``_variant`` are also importable from here, where they were.
from workflows._journey_steps import DB_RETRY as DB_RETRY
from workflows._journey_steps import LOCAL_DB_PATCH as LOCAL_DB_PATCH
from workflows._journey_steps import OUTBOUND_GIVE_UP as OUTBOUND_GIVE_UP
from workflows._journey_steps import OUTBOUND_RETRY as OUTBOUND_RETRY
from workflows._journey_steps import POSITION_PATCH as POSITION_PATCH
from workflows._journey_steps import SEND_RETRY, JourneySteps
from workflows._journey_steps import _variant as _variant

__all__ = ["HISTORY_BOUND", "SEND_RETRY", "JourneyWorkflow"]

#: Continue-as-new before a step once the history is longer than this many events.
HISTORY_BOUND = 2000
#: Event ids remembered across continue-as-new to drop late duplicates.
SEEN_CARRIED = 500


@workflow.defn(name="Journey")
class JourneyWorkflow(JourneySteps):
    @workflow.init
    def __init__(self, inp: JourneyInput) -> None:
        # The input is known here, before any signal handler runs: a signal-with-start delivers
        # its signal before ``run`` begins, and the handler needs the plan to judge it.
        self._input = inp
        carry = inp.carry
        self._events: list[JourneySignal] = list(carry.events) if carry else []
        self._seen: set[int] = set(carry.seen) if carry else set()
        self._sent: dict[str, str] = dict(carry.sent) if carry else {}
        self._visited: list[str] = list(carry.visited) if carry else []
        self._paused = carry.paused if carry else False
        self._current: str | None = None
        #: the step last recorded in the search attributes (``_at``); a new run records again
        self._placed: str | None = None
        self._waiting = ""
        self._finished = False
        #: (enrolment state, reason) once something ended the journey early
        self._end: tuple[str, str] | None = None
        #: events from this index on arrived since the journey last stopped waiting
        self._mark = 0

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, signal: JourneySignal) -> None:
        """Buffer an event once; a redelivered event (same id) is ignored."""
        if signal.event_id in self._seen:
            return
        self._seen.add(signal.event_id)
        self._events.append(signal)
        if self._end is None:
            self._end = self._ending(signal)

    @workflow.signal(name=SIGNAL_CONTROL)
    def control(self, command: JourneyControl) -> None:
        """Pause holds the journey before its next step (its timers keep running); resume
        releases it; cancel ends it."""
        if command.action == "pause":
            self._paused = True
        elif command.action == "resume":
            self._paused = False
        elif command.action == "cancel" and self._end is None:
            self._end = ("cancelled", command.reason or "cancelled by an operator")

    def _ending(self, signal: JourneySignal) -> tuple[str, str] | None:
        if signal.type in EXIT_EVENTS:
            return ("exited", signal.type)
        if "goal" in signal.matches:
            return ("converted", "goal")
        for match in signal.matches:
            if match.startswith("exit:"):
                rules = self._input.plan.exit_when
                index = int(match.removeprefix("exit:"))
                return ("exited", rules[index] if index < len(rules) else match)
        return None

    @workflow.query(name=QUERY_STATE)
    def state(self) -> JourneyState:
        inp = self._input
        return JourneyState(
            campaign_id=inp.plan.campaign_id,
            version=inp.plan.version,
            contact_id=inp.contact_id,
            current_step=self._current,
            waiting_for="paused by an operator" if self._paused else self._waiting,
            visited=list(self._visited),
            finished=self._finished,
            paused=self._paused,
            outcome=self._end[0] if self._end else ("completed" if self._finished else ""),
        )

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        plan = inp.plan
        carry = inp.carry
        visits: Counter[str] = Counter(carry.visits if carry else {})
        step_id: str | None = carry.step_id if carry else plan.entry
        # the trigger event (signal-with-start) is not something a later wait_for waits for
        self._mark = 0 if carry else len(self._events)
        while step_id is not None:
            if self._paused:
                self._waiting = "paused by an operator"
                await workflow.wait_condition(lambda: not self._paused or self._end is not None)
                self._waiting = ""
            if self._end is not None:
                break
            if self._history_full(inp.history_bound or HISTORY_BOUND):
                workflow.continue_as_new(self._carry(inp, step_id, visits))
            step = plan.step(step_id)
            visits[step_id] += 1
            self._current = step_id
            self._visited.append(step_id)
            step_id = await self._step(inp, step, visits[step.id], visits)
        self._current, self._finished = None, True
        state, reason = self._end or ("completed", "")
        await self._db(
            "finish_journey",
            FinishJourneyInput(
                workflow_id=workflow.info().workflow_id,
                state=state,
                reason=reason,
                contact_id=inp.contact_id,
                campaign_id=plan.campaign_id,
            ),
            None,
        )
        return JourneyResult(visited=list(self._visited), emails=dict(self._sent), outcome=state)

    async def _step(
        self, inp: JourneyInput, step: PlanStep, visit: int, visits: Counter[str]
    ) -> str | None:
        """Run one step; the id of the next one, or None when the journey ends here."""
        kind = step.kind
        if kind == "send_email":
            await self._send(inp, step, visit)
            return step.next
        if kind == "wait":
            await self._wait(inp, step)
            return step.next
        if kind == "wait_for":
            return step.on_event if await self._wait_for(step) else step.on_timeout
        if kind == "update_contact":
            await self._update_contact(inp, step, visit)
            return step.next
        if kind == "branch":
            return await self._branch(inp, step)
        if kind == "split":
            return await self._split(inp, step)
        if kind == "goto":
            # the goto's own visits count its jumps: after max_times, carry on below it
            return step.goto if visits[step.id] <= step.max_times else step.next
        if kind == "notify_sales":
            await self._notify_sales(inp, step, visit)
            return step.next
        if kind == "webhook":
            await self._webhook(inp, step, visit)
            return step.next
        if kind == "exit":
            # which way out it took, for the enrolment row and `drip journeys show`
            if step.reason and self._end is None:
                self._end = ("completed", step.reason)
            return None
        # the router never starts such a plan (workflows.capabilities); belt and braces
        raise ApplicationError(
            f"step {step.id}: this engine cannot run '{kind}' steps", non_retryable=True
        )

    def _history_full(self, bound: int) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > bound

    def _carry(self, inp: JourneyInput, step_id: str, visits: Counter[str]) -> JourneyInput:
        """The journey's state for its next run: only what later steps can still use."""
        sent = set(self._sent.values())
        events = [
            e
            for i, e in enumerate(self._events)
            if (e.message_id in sent) or (i >= self._mark and e.type == "event")
        ]
        carry = JourneyCarry(
            step_id=step_id,
            visits=dict(visits),
            sent=dict(self._sent),
            seen=sorted(self._seen)[-SEEN_CARRIED:],
            events=events,
            paused=self._paused,
            visited=self._visited[-100:],
            runs=(inp.carry.runs if inp.carry else 1) + 1,
        )
        return JourneyInput(
            plan=inp.plan,
            contact_id=inp.contact_id,
            enrolment=inp.enrolment,
            timezone=inp.timezone,
            carry=carry,
            history_bound=inp.history_bound,
        )
