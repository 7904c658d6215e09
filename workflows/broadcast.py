"""The broadcast workflow: one per send, fanning the audience out into batch activities.

A journey is one workflow per contact, which is right for behaviour and far too heavy for a
newsletter: a million workflows to send one email each. A send of a broadcast is one workflow
that walks its audience snapshot by seq range, ``parallel`` batch activities at a time, each
claiming, rendering, sending and recording about a thousand recipients (any worker may take
any batch). The outbox gives the guarantee, as for journeys: a recipient's email is sent at
most once, and a batch retried after a crash sends exactly those its first attempt did not.

Control: ``pause`` and ``cancel`` stop new batches at once, so they take effect within the
batches already running; ``resume`` carries on from the next recipient. The history stays
bounded for any audience: after a number of batches (or when Temporal suggests it) the
workflow continues as new, carrying only where it is.

Deterministic: no I/O here (activities do it), time from ``workflow.now()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.broadcast_types import (
        BATCH_ACTIVITY,
        PICK_WINNER_ACTIVITY,
        QUERY_BROADCAST,
        SET_STATE_ACTIVITY,
        SIGNAL_BROADCAST,
        SNAPSHOT_ACTIVITY,
        BatchInput,
        BatchResult,
        BroadcastControl,
        BroadcastInput,
        BroadcastStatus,
        PickWinnerInput,
        PickWinnerResult,
        SetStateInput,
        SnapshotInput,
        SnapshotResult,
    )

__all__ = ["BroadcastWorkflow"]

#: Database work and sends are retried until they succeed: an outage delays a broadcast, it
#: never drops recipients. The backoff is capped so a relay back up is used within a minute.
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
)


def _parse(iso: str) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _add(total: BatchResult, part: BatchResult, *, again: bool = False) -> None:
    """Count a batch's outcomes; a later round's (``again``) recipients that were done before
    are not counted twice."""
    total.sent += part.sent
    total.failed += part.failed
    total.suppressed += part.suppressed
    total.interrupted += part.interrupted
    if not again:
        total.already += part.already


@workflow.defn(name="Broadcast")
class BroadcastWorkflow:
    def __init__(self) -> None:
        self._paused = False
        self._cancelled_by: str | None = None
        self._inp: BroadcastInput | None = None

    @workflow.signal(name=SIGNAL_BROADCAST)
    def control(self, command: BroadcastControl) -> None:
        if command.action == "pause":
            self._paused = True
        elif command.action == "resume":
            self._paused = False
        elif command.action == "cancel" and self._cancelled_by is None:
            self._cancelled_by = command.by or "someone"

    @workflow.query(name=QUERY_BROADCAST)
    def status(self) -> BroadcastStatus:
        inp = self._inp
        assert inp is not None
        return BroadcastStatus(
            phase=inp.phase,
            paused=self._paused,
            cancelled=self._cancelled_by is not None,
            next_seq=inp.next_seq,
            audience=inp.snapshot.audience if inp.snapshot else 0,
            totals=inp.totals,
            winner=inp.winner,
        )

    @workflow.run
    async def run(self, inp: BroadcastInput) -> BatchResult:
        self._inp = inp
        self._paused = self._paused or inp.paused
        if inp.snapshot is None:
            inp.snapshot = await workflow.execute_activity(
                SNAPSHOT_ACTIVITY,
                SnapshotInput(send_id=inp.send_id),
                result_type=SnapshotResult,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=inp.heartbeat_seconds),
                retry_policy=_RETRY,
            )
        snapshot = inp.snapshot
        if inp.phase == "start":
            if not await self._sleep_until(_parse(inp.send_at)):
                return await self._finish(inp, "cancelled")
            inp.phase = "sample" if inp.has_test and snapshot.sample else "rest"
            await self._set_state(inp.send_id, self._unless_paused("sending"))
        if inp.phase == "sample":
            done = await self._batches(inp, snapshot.sample, variant="")
            if done is None:
                return await self._continue(inp)
            if not done:
                return await self._finish(inp, "cancelled")
            inp.phase = "testing"
            inp.tested_at = workflow.now().isoformat()
            await self._set_state(inp.send_id, self._unless_paused("testing"))
        if inp.phase == "testing":
            started = _parse(inp.tested_at) or workflow.now()
            if not await self._sleep_until(started + timedelta(seconds=inp.ab_wait_seconds)):
                return await self._finish(inp, "cancelled")
            picked = await workflow.execute_activity(
                PICK_WINNER_ACTIVITY,
                PickWinnerInput(send_id=inp.send_id),
                result_type=PickWinnerResult,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=_RETRY,
            )
            inp.winner = picked.winner
            inp.phase = "rest"
            await self._set_state(inp.send_id, self._unless_paused("sending"))
        for slot in snapshot.slots:
            if slot.last < inp.next_seq:
                continue
            inp.next_seq = max(inp.next_seq, slot.first)
            if not await self._sleep_until(_parse(slot.due)):
                return await self._finish(inp, "cancelled")
            done = await self._batches(inp, slot.last, variant=inp.winner)
            if done is None:
                return await self._continue(inp)
            if not done:
                return await self._finish(inp, "cancelled")
        # Later rounds: the recipients whose domain held them back (a deferral's backoff, a
        # pace with no slot soon, a warm-up's cap for the day), from the time it said.
        while inp.retry or inp.round:
            if not inp.round:
                note = f"{inp.held} held back by their domain; next round at {inp.retry_at}"
                await self._set_state(inp.send_id, self._unless_paused("sending"), note)
                if not await self._sleep_until(_parse(inp.retry_at)):
                    return await self._finish(inp, "cancelled")
                await self._set_state(inp.send_id, self._unless_paused("sending"), "")
                inp.round, inp.retry, inp.retry_at, inp.held = inp.retry, [], "", 0
            done = await self._batches(inp, 0, variant=inp.winner, again=True)
            if done is None:
                return await self._continue(inp)
            if not done:
                return await self._finish(inp, "cancelled")
        return await self._finish(inp, "completed")

    async def _batches(
        self, inp: BroadcastInput, last: int, *, variant: str, again: bool = False
    ) -> bool | None:
        """Run batches over recipients ``inp.next_seq``..``last`` (``again``: over the round's
        batches, ``inp.round``), ``parallel`` at once: True when all are done, False if
        cancelled, None when it is time to continue as new (no batch is left running then)."""
        parallel = max(1, inp.parallel)
        size = max(1, inp.batch_size)
        rate = inp.rate / parallel if inp.rate else 0.0
        if rate:
            # a batch at a low rate would run for hours: smaller batches keep pause/cancel
            # within about a minute
            size = max(1, min(size, int(rate * 60)))
        running: dict[asyncio.Task[BatchResult], tuple[int, int]] = {}
        started = 0
        paused_shown = False

        def more() -> bool:
            return bool(inp.round) if again else inp.next_seq <= last

        while True:
            while (
                more()
                and len(running) < parallel
                and not self._paused
                and self._cancelled_by is None
                and started < inp.batches_per_run
            ):
                if again:
                    first, end = inp.round.pop(0)
                else:
                    first, inp.next_seq = inp.next_seq, min(last, inp.next_seq + size - 1) + 1
                    end = inp.next_seq - 1
                task = asyncio.ensure_future(
                    workflow.execute_activity(
                        BATCH_ACTIVITY,
                        BatchInput(
                            send_id=inp.send_id,
                            first=first,
                            last=end,
                            variant=variant,
                            rate=rate,
                        ),
                        result_type=BatchResult,
                        start_to_close_timeout=timedelta(
                            seconds=max(600.0, 3 * size / rate if rate else 0.0)
                        ),
                        heartbeat_timeout=timedelta(seconds=inp.heartbeat_seconds),
                        retry_policy=_RETRY,
                    )
                )
                running[task] = (first, end)
                started += 1
            if not running:
                if self._cancelled_by is not None:
                    return False
                if not more():
                    return True
                if started >= inp.batches_per_run or workflow.info().is_continue_as_new_suggested():
                    return None
                # paused, nothing running: say so, and wait for resume or cancel
                if not paused_shown:
                    await self._set_state(inp.send_id, "paused")
                    paused_shown = True
                await workflow.wait_condition(
                    lambda: not self._paused or self._cancelled_by is not None
                )
                if self._cancelled_by is None:
                    paused_shown = False
                    await self._set_state(inp.send_id, "sending")
                continue
            done, _ = await workflow.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                first, end = running.pop(task)
                result = task.result()
                _add(inp.totals, result, again=again)
                if result.deferred:
                    inp.held += result.deferred
                    inp.retry.append([first, end])
                    inp.retry_at = min(inp.retry_at or result.retry_at, result.retry_at)

    def _unless_paused(self, state: str) -> str:
        """The state to show: a pause asked for before this point stays shown (the batches
        honour it), so a resume is not refused as "not paused"."""
        return "paused" if self._paused and self._cancelled_by is None else state

    async def _sleep_until(self, when: datetime | None) -> bool:
        """Wait until ``when`` (now if None or past); False if cancelled meanwhile."""
        if when is not None:
            left = (when - workflow.now()).total_seconds()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._cancelled_by is not None, timeout=left
                    )
        return self._cancelled_by is None

    async def _set_state(self, send_id: str, state: str, note: str | None = None) -> None:
        await workflow.execute_activity(
            SET_STATE_ACTIVITY,
            SetStateInput(send_id=send_id, state=state, note=note),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=_RETRY,
        )

    async def _finish(self, inp: BroadcastInput, state: str) -> BatchResult:
        note = f"cancelled by {self._cancelled_by}" if state == "cancelled" else None
        await self._set_state(inp.send_id, state, note)
        return inp.totals

    async def _continue(self, inp: BroadcastInput) -> BatchResult:
        inp.paused = self._paused
        # a cancel that arrived just now is not lost: the next run sees it in its first turn
        if self._cancelled_by is not None:
            return await self._finish(inp, "cancelled")
        workflow.continue_as_new(inp)
