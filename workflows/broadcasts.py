"""Starting and steering broadcasts: the one place that knows their workflow ids and signals.

Used by ``drip broadcasts``, the admin API and the dashboard alike. A send is recorded in
``broadcast_sends`` (with its compiled plan and the template texts it renders from) before its
workflow starts, under the workflow's own id, so a second ``send`` of the same run is refused
by the database and by Temporal, never duplicated.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from campaigns.broadcasts import BroadcastPlan
from campaigns.conditions import parse_condition, to_sql
from campaigns.workspace import Workspace
from contacts import broadcasts as rows_of
from contacts import deploys, suppressions
from contacts.broadcast_models import FINISHED, BroadcastSend, SendState
from contacts.broadcast_reports import send_progress
from contacts.consent import TOPIC_LEFT_TAG
from contacts.db import session_scope
from contacts.marketing_consent import NO_CONSENT
from contacts.models import MarketingConsent
from drip.settings import Settings
from workflows.broadcast import BroadcastWorkflow
from workflows.broadcast_types import (
    QUERY_BROADCAST,
    SIGNAL_BROADCAST,
    BroadcastControl,
    BroadcastInput,
    BroadcastStatus,
)

__all__ = [
    "BroadcastError",
    "DryRun",
    "Progress",
    "broadcast_workflow_id",
    "cancel_broadcast",
    "dry_run",
    "latest_send",
    "list_sends",
    "pause_broadcast",
    "progress",
    "resume_broadcast",
    "start_broadcast",
]


class BroadcastError(Exception):
    """A refusal, worded for the person who asked: unknown broadcast, already sent, not
    running, nothing to pause."""


def broadcast_workflow_id(broadcast_id: str, number: int) -> str:
    return f"broadcast:{broadcast_id}:{number}"


def _plan(workspace: Workspace, broadcast_id: str) -> BroadcastPlan:
    plan = workspace.broadcast_plans.get(broadcast_id)
    if plan is None:
        known = ", ".join(sorted(workspace.broadcast_plans)) or "none"
        raise BroadcastError(f"no broadcast {broadcast_id!r} in the workspace (known: {known})")
    return plan


async def start_broadcast(
    client: Client,
    engine: Engine,
    workspace: Workspace,
    broadcast_id: str,
    *,
    settings: Settings | None = None,
    started_by: str = "",
    again: bool = False,
) -> BroadcastSend:
    """Record a new send of the broadcast and start its workflow.

    Refused while a send of it is running, and after one completed unless ``again`` (a
    newsletter is sent once; sending it twice is a decision, not a retry)."""
    plan = _plan(workspace, broadcast_id)
    settings = settings or Settings()
    texts = {
        h: workspace.template_texts[h]
        for files in plan.templates.values()
        for h in files.values()
        if h and h in workspace.template_texts
    }

    def record() -> BroadcastSend:
        with session_scope(engine) as session:
            previous = rows_of.sends_of(session, broadcast_id)
            if previous:
                last = previous[0]
                if last.state not in FINISHED:
                    raise BroadcastError(
                        f"broadcast {broadcast_id!r} is being sent ({last.state}): "
                        "pause or cancel it first"
                    )
                if last.state == SendState.completed and not again:
                    raise BroadcastError(
                        f"broadcast {broadcast_id!r} was sent already "
                        f"(send {last.number}, {last.audience or 0} recipients); "
                        "send it again on purpose with --again"
                    )
            number = rows_of.next_number(session, broadcast_id)
            deploys.record_template_sources(session, texts)
            row = rows_of.create_send(
                session,
                BroadcastSend(
                    id=broadcast_workflow_id(broadcast_id, number),
                    broadcast_id=broadcast_id,
                    number=number,
                    name=plan.name,
                    version=plan.version,
                    plan=plan.to_dict(),
                    started_by=started_by[:200],
                ),
            )
            session.expunge(row)
            return row

    try:
        send = await asyncio.to_thread(record)
    except IntegrityError:  # another send of it started this very moment
        raise BroadcastError(f"broadcast {broadcast_id!r} is being started already") from None
    inp = BroadcastInput(
        send_id=send.id,
        send_at="" if plan.local_time else plan.send_at,
        rate=plan.rate,
        ab_wait_seconds=plan.ab_wait_seconds,
        has_test=bool(plan.variants),
        batch_size=settings.broadcast_batch_size,
        parallel=settings.broadcast_parallel_batches,
        batches_per_run=settings.broadcast_batches_per_run,
        heartbeat_seconds=settings.broadcast_heartbeat_seconds,
    )
    try:
        await client.start_workflow(
            BroadcastWorkflow.run,
            inp,
            id=send.id,
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise BroadcastError(f"send {send.id} was started already") from None
    except BaseException:
        # Temporal refused or could not be reached: the send never started, so its row goes
        # (a later send takes the number again)
        await asyncio.to_thread(_forget, engine, send.id)
        raise
    return send


def _forget(engine: Engine, send_id: str) -> None:
    with session_scope(engine) as session:
        row = session.get(BroadcastSend, send_id)
        if row is not None and row.state == SendState.scheduled and row.audience is None:
            session.delete(row)


def _latest(engine: Engine, broadcast_id: str) -> BroadcastSend | None:
    with session_scope(engine) as session:
        sends = rows_of.sends_of(session, broadcast_id)
        if not sends:
            return None
        session.expunge(sends[0])
        return sends[0]


def latest_send(engine: Engine, broadcast_id: str) -> BroadcastSend | None:
    """The broadcast's newest send, or None if it was never sent."""
    return _latest(engine, broadcast_id)


def list_sends(engine: Engine) -> list[BroadcastSend]:
    """Every send of every broadcast, newest first."""
    with session_scope(engine) as session:
        sends = list(rows_of.sends_of(session))
        for s in sends:
            session.expunge(s)
        return sends


async def _control(
    client: Client, engine: Engine, broadcast_id: str, action: str, by: str
) -> BroadcastSend:
    send = await asyncio.to_thread(_latest, engine, broadcast_id)
    if send is None:
        raise BroadcastError(f"broadcast {broadcast_id!r} has not been sent")
    if send.state in FINISHED:
        raise BroadcastError(f"broadcast {broadcast_id!r} is not being sent ({send.state})")
    if action == "pause" and send.state == SendState.paused:
        raise BroadcastError(f"broadcast {broadcast_id!r} is paused already")
    if action == "resume" and send.state != SendState.paused:
        raise BroadcastError(f"broadcast {broadcast_id!r} is not paused ({send.state})")
    handle: WorkflowHandle[BroadcastWorkflow, object] = client.get_workflow_handle(send.id)
    try:
        await handle.signal(SIGNAL_BROADCAST, BroadcastControl(action=action, by=by))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise BroadcastError(f"send {send.id} is not running") from None
        raise
    if action in ("pause", "resume"):
        # shown at once (the workflow confirms it when the batches in flight end); the note
        # says who, and a resume replaces the pause's
        state = SendState.paused
        if action == "resume":
            status = await handle.query(QUERY_BROADCAST, result_type=BroadcastStatus)
            state = _PHASE_STATES.get(status.phase, SendState.sending)
        note = f"{action}d by {by}" if by else f"{action}d"
        await asyncio.to_thread(_note, engine, send.id, state, note)
    return send


#: the send's state while its workflow is in a phase (a resume shows it again)
_PHASE_STATES = {"start": SendState.scheduled, "testing": SendState.testing}


def _note(engine: Engine, send_id: str, state: SendState, note: str) -> None:
    with session_scope(engine) as session:
        rows_of.set_state(session, send_id, state, note=note)


async def pause_broadcast(
    client: Client, engine: Engine, broadcast_id: str, *, by: str = ""
) -> BroadcastSend:
    """Stop starting batches; those running finish (within one batch)."""
    return await _control(client, engine, broadcast_id, "pause", by)


async def resume_broadcast(
    client: Client, engine: Engine, broadcast_id: str, *, by: str = ""
) -> BroadcastSend:
    return await _control(client, engine, broadcast_id, "resume", by)


async def cancel_broadcast(
    client: Client, engine: Engine, broadcast_id: str, *, by: str = ""
) -> BroadcastSend:
    """No further batches; recipients not reached yet get nothing (for this send)."""
    return await _control(client, engine, broadcast_id, "cancel", by)


@dataclass
class Progress:
    """Where a send is, from its outbox rows (the truth, whichever worker wrote them)."""

    send_id: str
    state: str
    audience: int
    by_state: dict[str, int] = field(default_factory=dict)
    suppressed_by_reason: dict[str, int] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    winner: str | None = None

    @property
    def sent(self) -> int:
        return self.by_state.get("sent", 0)

    @property
    def done(self) -> int:
        """Recipients with a final row: sent, failed, suppressed or interrupted."""
        return sum(n for s, n in self.by_state.items() if s not in ("pending", "sending"))


def progress(engine: Engine, send_id: str) -> Progress:
    """Counted by ``contacts.broadcast_reports`` (the dashboard's figures), on the index that
    answers fastest: a million-recipient send is polled every few seconds while it runs."""
    with session_scope(engine) as session:
        send = rows_of.send_by_id(session, send_id)
        found = send_progress(session, send_id, now=datetime.now(UTC))
        if send is None or found is None:
            raise BroadcastError(f"no send {send_id}")
        return Progress(
            send_id=send_id,
            state=str(send.state),
            audience=send.audience or 0,
            by_state={s: n for s, n in found.by_state.items() if n},
            suppressed_by_reason=found.suppressed_by_reason,
            started_at=send.started_at,
            finished_at=send.finished_at,
            winner=send.winner,
        )


@dataclass
class DryRun:
    """What a send would do now: the audience, who would be skipped and why, a sample."""

    audience: int
    would_send: int
    suppressed_by_reason: dict[str, int]
    sample: list[str]


def dry_run(engine: Engine, workspace: Workspace, broadcast_id: str, sample: int = 5) -> DryRun:
    """Counted in SQL as the snapshot and the batches would decide it now, sending nothing.
    A frequency cap depends on what else is sent meanwhile: it is decided at send time and
    not counted here."""
    plan = _plan(workspace, broadcast_id)
    contacts = SQLModel.metadata.tables["contacts"]
    where: sa.ColumnElement[bool] = (
        to_sql(parse_condition(plan.audience), contacts) if plan.audience else sa.true()
    )
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        in_audience = sa.and_(where, contacts.c.status.in_(rows_of.CONTACT_STATES))
        by_status = rows_of.audience_counts(session, where)
        reasons = {f"contact is {s}": n for s, n in by_status.items() if s != "subscribed"}
        eligible = sa.and_(in_audience, contacts.c.status == "subscribed")
        paused = sa.and_(
            eligible, contacts.c.paused_until.is_not(None), contacts.c.paused_until > now
        )
        count = session.execute(sa.select(sa.func.count()).where(paused)).scalar_one()
        if count:
            reasons["paused"] = int(count)
        eligible = sa.and_(
            eligible, sa.or_(contacts.c.paused_until.is_(None), contacts.c.paused_until <= now)
        )
        if plan.topic:
            left = to_sql(parse_condition(f'has_tag("{TOPIC_LEFT_TAG}{plan.topic}")'), contacts)
            count = session.execute(sa.select(sa.func.count()).where(eligible, left)).scalar_one()
            if count:
                reasons[f"left topic {plan.topic}"] = int(count)
            eligible = sa.and_(eligible, sa.not_(left))
        # a broadcast is marketing: contacts without marketing consent are skipped
        lacking = contacts.c.marketing_consent == MarketingConsent.none.value
        count = session.execute(sa.select(sa.func.count()).where(eligible, lacking)).scalar_one()
        if count:
            reasons[NO_CONSENT] = int(count)
        eligible = sa.and_(eligible, sa.not_(lacking))
        audience = sum(by_status.values())
        would = int(session.execute(sa.select(sa.func.count()).where(eligible)).scalar_one())
        # the suppression lists, by the batches' own check, a page of the audience at a time
        listed = suppressions.tally_audience(
            session, eligible, roles=workspace.config.suppressions.role_addresses, sample=sample
        )
        reasons.update(listed.by_reason)
        would -= listed.by_reason.total()
        emails = listed.sample
    return DryRun(audience=audience, would_send=would, suppressed_by_reason=reasons, sample=emails)
