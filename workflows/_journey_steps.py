"""What each step of a journey does (private: the workflow is ``workflows.journey``): the
sends, timers and waits, contact updates, branches and splits, and the calls to the outside, as
methods of ``JourneySteps``, which ``JourneyWorkflow`` extends with the signals, the loop over
the plan and continue-as-new. The split is by what a reader looks for, not a second workflow:
the history is the same as when it was one class, and the recorded histories replay.

Retry policies, chosen per activity, are here too (see ``workflows.journey``)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TypedDict, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from campaigns.plan import PlanStep
    from campaigns.schedule import next_send_time, next_time_of_day, zone
    from workflows.positions import CAMPAIGN, STEP
    from workflows.types import (
        BranchInput,
        BranchResult,
        ContactTimeInput,
        ContactTimeResult,
        JourneyInput,
        JourneySignal,
        NotifySalesInput,
        NotifySalesResult,
        SendEmailInput,
        SendEmailResult,
        SplitWinnerInput,
        SplitWinnerResult,
        UpdateContactInput,
        UpdateContactResult,
        WebhookInput,
        WebhookResult,
    )

__all__ = [
    "DB_RETRY",
    "LOCAL_DB_PATCH",
    "OUTBOUND_GIVE_UP",
    "OUTBOUND_RETRY",
    "POSITION_PATCH",
    "SEND_RETRY",
    "JourneySteps",
]

T = TypeVar("T")

#: Journeys started after this patch run their database reads and writes as local activities.
LOCAL_DB_PATCH = "local-db-activities"
#: Runs after this patch record the step they dwell at as search attributes.
POSITION_PATCH = "journey-position"

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
# Calls to the outside (sales chat, CRM webhooks): retried for a day, then given up on.
OUTBOUND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    maximum_attempts=0,
)
OUTBOUND_GIVE_UP = timedelta(days=1)
#: A click proves the email was opened, also when the client blocked the pixel (or the click
#: signal overtook the open's).
_COUNTS_AS = {"open": ("open", "click"), "click": ("click",)}


class JourneySteps:
    """The step kinds of ``JourneyWorkflow``; the state they share is set up by its
    ``__init__`` (declared here for the type checker)."""

    _input: JourneyInput
    _events: list[JourneySignal]
    _sent: dict[str, str]
    _placed: str | None
    _waiting: str
    _end: tuple[str, str] | None
    _mark: int

    async def _db(self, name: str, arg: object, result_type: type[T] | None) -> T:
        """A short database read or write. New journeys run it as a local activity: one
        marker event in the history instead of six, and no round trip through the server's
        task queue, which is the engine's bottleneck. Histories from before keep replaying
        their regular activities (``patched``)."""
        if workflow.patched(LOCAL_DB_PATCH):
            return await workflow.execute_local_activity(  # type: ignore[no-any-return]
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
        return await workflow.execute_activity(  # type: ignore[no-any-return]
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )

    def _at(self, step_id: str) -> None:
        """Record that the journey dwells at ``step_id`` (``DripStep``), unless it already
        did: steps it passes straight through are never recorded."""
        if step_id == self._placed or not workflow.patched(POSITION_PATCH):
            return
        workflow.upsert_search_attributes(
            [CAMPAIGN.value_set(self._input.plan.campaign_id), STEP.value_set(step_id)]
        )
        self._placed = step_id

    async def _sleep_until(self, deadline: datetime, waiting: str, step_id: str) -> None:
        """A timer that an ending (goal, exit, cancel) cuts short; the journey dwells at
        ``step_id`` meanwhile."""
        delay = deadline - workflow.now()
        if delay <= timedelta(0):
            return
        self._at(step_id)
        self._waiting = waiting
        try:
            await workflow.wait_condition(lambda: self._end is not None, timeout=delay)
        except TimeoutError:
            pass
        finally:
            self._waiting = ""
            self._mark = len(self._events)

    async def _wait(self, inp: JourneyInput, step: PlanStep) -> None:
        now = workflow.now()
        if step.seconds:
            deadline = now + timedelta(seconds=step.seconds)
        elif step.until_time:
            deadline = next_time_of_day(now, step.until_time, zone(inp.timezone))
        elif step.until_date:
            deadline = datetime.fromisoformat(step.until_date)
        else:
            result: ContactTimeResult = await self._db(
                "contact_time",
                ContactTimeInput(contact_id=inp.contact_id, field=step.until_field),
                ContactTimeResult,
            )
            if not result.value:  # no date in the field: nothing to wait for
                workflow.logger.info("step %s: %s is not set", step.id, step.until_field)
                return
            deadline = datetime.fromisoformat(result.value) + timedelta(seconds=step.offset_seconds)
        await self._sleep_until(deadline, f"the timer, until {_shown(deadline)}", step.id)

    async def _send(self, inp: JourneyInput, step: PlanStep, visit: int) -> None:
        info = workflow.info()
        plan = inp.plan
        message_id = str(workflow.uuid4())
        self._at(step.id)
        while True:
            if plan.window_days:
                opens = next_send_time(
                    workflow.now(),
                    plan.window_days,
                    plan.window_start,
                    plan.window_end,
                    zone(inp.timezone),
                )
                await self._sleep_until(opens, f"the send window, opening {_shown(opens)}", step.id)
                if self._end is not None:
                    return
            result: SendEmailResult = await workflow.execute_activity(
                "send_email",
                SendEmailInput(
                    message_id=message_id,
                    key=_key(step, visit),
                    workflow_id=info.workflow_id,
                    contact_id=inp.contact_id,
                    campaign_id=plan.campaign_id,
                    campaign_version=plan.version,
                    step_id=step.id,
                    template=step.template,
                    subject=step.subject,
                    preheader=step.preheader,
                    track=step.track,
                    from_addr=step.from_addr,
                    reply_to=step.reply_to,
                    cap_max=plan.cap_max,
                    cap_seconds=plan.cap_seconds,
                    now=workflow.now().isoformat(),
                    utm=plan.utm_for(step.id),
                    marketing=plan.marketing,
                    consent_required=plan.consent_required,
                ),
                result_type=SendEmailResult,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=SEND_RETRY,
            )
            if result.state != "deferred":
                break
            # the frequency cap is full (wait for the oldest counted email to leave the
            # window), or the recipient's domain holds mail back (its backoff, its pace or a
            # warm-up's cap for the day, named in ``error``): at least a minute, so clocks
            # that disagree can never make this loop spin
            retry_at = max(
                datetime.fromisoformat(result.retry_at), workflow.now() + timedelta(minutes=1)
            )
            why = result.error or "the frequency cap"
            await self._sleep_until(retry_at, f"{why}, until {_shown(retry_at)}", step.id)
            if self._end is not None:
                return
        self._sent[step.id] = result.message_id

    async def _update_contact(self, inp: JourneyInput, step: PlanStep, visit: int) -> None:
        plan = inp.plan
        result: UpdateContactResult | None = await workflow.execute_activity(
            "update_contact",
            UpdateContactInput(
                contact_id=inp.contact_id,
                add_tags=step.add_tags,
                remove_tags=step.remove_tags,
                set_fields=step.set_fields,
                unset_fields=step.unset_fields,
                add_score=step.add_score,
                key=_key(step, visit),
                goal_when=plan.goal_when,
                exit_when=plan.exit_when,
            ),
            result_type=UpdateContactResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        # histories recorded before the activity returned a result replay a None here
        if result is not None and result.ends and self._end is None:
            self._end = ("converted" if result.ends == "goal" else "exited", result.reason)

    def _seen_by_step(self) -> dict[str, list[str]]:
        """The send steps of this journey whose email was opened / clicked (from its signals).
        A click counts as an open too: the reader saw the email even if images stayed off."""
        by_message = {message_id: sid for sid, message_id in self._sent.items()}
        return {
            kind: sorted(
                {
                    by_message[e.message_id]
                    for e in self._events
                    if e.type in _COUNTS_AS[kind] and e.message_id in by_message
                }
            )
            for kind in ("open", "click")
        }

    async def _branch(self, inp: JourneyInput, step: PlanStep) -> str:
        """The first case that holds now, else ``else``; opens and clicks are the journey's own."""
        seen = self._seen_by_step()
        result: BranchResult = await self._db(
            "evaluate_branch",
            BranchInput(
                contact_id=inp.contact_id,
                conditions=[case.when for case in step.cases],
                opened=seen["open"],
                clicked=seen["click"],
            ),
            BranchResult,
        )
        return step.cases[result.index].goto if result.index >= 0 else step.else_goto

    async def _split(self, inp: JourneyInput, step: PlanStep) -> str:
        """The hashed variant, until an auto-winner has been decided: then the winner."""
        if step.winner_metric:
            result: SplitWinnerResult = await self._db(
                "split_winner",
                SplitWinnerInput(
                    campaign_id=inp.plan.campaign_id,
                    step_id=step.id,
                    metric=step.winner_metric,
                    after_seconds=step.winner_after_seconds,
                    min_sample=step.winner_min_sample,
                    variant_steps=[v.goto for v in step.variants],
                    now=workflow.now().isoformat(),
                ),
                SplitWinnerResult,
            )
            if result.goto:
                return result.goto
        return _variant(step, inp.contact_id, inp.plan.campaign_id)

    async def _notify_sales(self, inp: JourneyInput, step: PlanStep, visit: int) -> None:
        result = await self._outbound(
            step.id,
            "notify_sales",
            NotifySalesInput(**_call_ids(inp, step, visit), message=step.message, via=step.via),
            NotifySalesResult,
        )
        for problem in result.problems if result else ["sales were not notified"]:
            workflow.logger.warning("step %s: %s", step.id, problem)

    async def _webhook(self, inp: JourneyInput, step: PlanStep, visit: int) -> None:
        result = await self._outbound(
            step.id,
            "call_webhook",
            WebhookInput(**_call_ids(inp, step, visit), url=step.url, body=step.body),
            WebhookResult,
        )
        if result is None or result.error:
            error = result.error if result else "gave up"
            workflow.logger.warning("step %s: webhook: %s", step.id, error)

    async def _outbound(
        self, step_id: str, name: str, arg: object, result_type: type[T]
    ) -> T | None:
        """A call to the outside, retried for a day; None if it never got through (the
        journey carries on: a receiver that is down must not hold the emails back)."""
        self._at(step_id)
        try:
            return await workflow.execute_activity(  # type: ignore[no-any-return]
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=timedelta(minutes=1),
                schedule_to_close_timeout=OUTBOUND_GIVE_UP,
                retry_policy=OUTBOUND_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.error("%s gave up: %s", name, exc.cause)
            return None

    async def _wait_for(self, step: PlanStep) -> bool:
        """True if the awaited event arrived (possibly before we got here), False on timeout."""
        deadline = workflow.now() + timedelta(seconds=step.seconds)
        self._waiting = f"{step.wait_event} {step.wait_ref} until {_shown(deadline)}"
        mark = self._mark

        def matched() -> bool:
            if step.wait_event in ("open", "click"):
                wanted = self._sent.get(step.wait_ref)
                kinds = _COUNTS_AS[step.wait_event]
                return wanted is not None and any(
                    e.type in kinds and e.message_id == wanted for e in self._events
                )
            return any(
                e.type == "event"
                and e.name == step.wait_ref
                and (not step.where or step.id in e.matches)
                for e in self._events[mark:]
            )

        if not matched() and self._end is None:  # it will wait here
            self._at(step.id)
        try:
            await workflow.wait_condition(
                lambda: matched() or self._end is not None,
                timeout=timedelta(seconds=step.seconds),
            )
            return matched()
        except TimeoutError:
            return False
        finally:
            self._waiting = ""
            self._mark = len(self._events)


def _key(step: PlanStep, visit: int) -> str:
    """The idempotency key of a step's activity: this journey, the step, which visit of it (a
    loop's second send is another email; a retried one is the same)."""
    return f"{workflow.info().workflow_id}/{step.id}/{visit}"


class _CallIds(TypedDict):
    contact_id: int
    campaign_id: str
    step_id: str
    key: str


def _call_ids(inp: JourneyInput, step: PlanStep, visit: int) -> _CallIds:
    """What every call to the outside carries, whatever it says: who and where in which
    campaign, for the receiver's record, and the key it dedupes a retried call on."""
    return {
        "contact_id": inp.contact_id,
        "campaign_id": inp.plan.campaign_id,
        "step_id": step.id,
        "key": _key(step, visit),
    }


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


def _shown(moment: datetime) -> str:
    """A deadline for people reading the journey's state (queries are not in history)."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
