"""The broadcast's activities: snapshot the audience, send a batch, pick the A/B winner.

A batch (``broadcast_batch``) is about a thousand recipients, done in bulk: one query loads them
with their contacts and any outbox rows an earlier attempt wrote; suppression is decided for all
of them; the emails are rendered from templates compiled once; one transaction writes every
outbox row and tracked link; then the sends share the worker's SMTP pool, many connections at
once, at the batch's share of the broadcast's rate.

Exactly once, as for journeys, from the outbox's state machine: a row turns ``sending`` only
when a connection is ready for it, just before MAIL FROM, and ``sent`` once the relay accepted
it. Those moves go through one group-commit ledger per worker (``_Ledger``): the many sends in
flight share a transaction per turn instead of each committing its own, and a connection's
``sent`` is always written before (or with) its next claim, so a crash leaves at most one row
``sending`` per open connection, the one whose DATA it interrupted (marked ``interrupted`` by
the retry, never resent). A retried batch skips every recipient whose row is final and sends
the rest.

Suppression is checked when the batch starts (status, pause, topic left, frequency cap) and
again in the claim itself, which only turns a row ``sending`` while its contact is subscribed
and not paused: someone who unsubscribes halfway gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, col
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from campaigns.broadcasts import BroadcastPlan
from campaigns.conditions import parse_condition, to_sql
from campaigns.workspace import Workspace
from contacts import broadcasts as rows_of
from contacts import deploys, suppressions
from contacts.broadcast_models import BroadcastSend, SendState, broadcast_campaign_id
from contacts.consent import TOPIC_LEFT_TAG
from contacts.db import session_scope
from contacts.marketing_consent import consent_refusal
from contacts.models import ContactStatus, Event, Message, MessageState, utcnow
from contacts.webhook_events import MESSAGE_SENT
from contacts.webhook_sources import EventRow, emit_rows, message_data
from drip.settings import Settings
from emails import Renderer, domain_of, open_token
from emails.errors import DomainDeferred, PermanentSendError, SendWithdrawn, TransientSendError
from emails.list_headers import broadcast_mailing
from emails.sender import Pace, Transport
from workflows.activities import record_refusal
from workflows.broadcast_render import RenderJob, RenderPool, RenderSpec
from workflows.broadcast_types import (
    BATCH_ACTIVITY,
    PICK_WINNER_ACTIVITY,
    SET_STATE_ACTIVITY,
    SNAPSHOT_ACTIVITY,
    BatchInput,
    BatchResult,
    PickWinnerInput,
    PickWinnerResult,
    SetStateInput,
    SlotRange,
    SnapshotInput,
    SnapshotResult,
)
from workflows.heartbeat import heartbeating
from workflows.metrics import WorkerMetrics
from workflows.router import EventRouter

__all__ = ["BroadcastActivities"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How far ahead a broadcast email may book its domain's pace (the batch heartbeats while it
#: waits); further than that, it is left pending for the broadcast's later round.
_PACE_HORIZON_SECONDS = 300.0

INTERRUPTED = (
    "interrupted during the SMTP transaction; not resent, to avoid a duplicate "
    "(the relay may or may not have accepted it)"
)


@dataclass
class _Send:
    """What a batch needs of its send, read once per worker."""

    plan: BroadcastPlan
    number: int
    spec: RenderSpec
    variants: dict[str, dict[str, str]]


@dataclass
class _Email:
    row: rows_of.BatchRow
    message_id: str
    step: str
    template: str
    subject: str = ""
    data: bytes = b""
    links: list[tuple[str, int, str]] = field(default_factory=list)
    error: str | None = None


class _Ledger:
    """Group commit of the outbox moves of every send in flight on this worker.

    ``claim`` (pending -> sending, only for a subscribed, unpaused contact) is awaited: the
    message goes on its connection only once the claim is committed. ``sent``, ``failed`` and
    ``release`` are queued and written in the next turn, before any claim queued after them,
    so a connection's previous message is never left ``sending`` once its next one is.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ops: list[tuple[str, str, str, asyncio.Future[str] | None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def claim(self, message_id: str) -> str:
        """``""`` when the row is now ``sending`` (send it), else why not: the contact's
        suppression reason (the row is now ``suppressed``) or ``done`` (another attempt
        has or had it)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._put(("claim", message_id, "", future))
        return await future

    def sent(self, message_id: str) -> None:
        self._put(("sent", message_id, "", None))

    def failed(self, message_id: str, error: str) -> None:
        self._put(("failed", message_id, error, None))

    def release(self, message_id: str, error: str) -> None:
        self._put(("release", message_id, error, None))

    def note(self, message_id: str, error: str) -> None:
        self._put(("note", message_id, error, None))

    def _put(self, op: tuple[str, str, str, asyncio.Future[str] | None]) -> None:
        self._ops.append(op)
        self._idle.clear()
        self._wake.set()
        self._start()

    async def flush(self) -> None:
        """Until everything queued so far is written."""
        while self._ops or not self._idle.is_set():
            self._start()
            await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops, self._ops = self._ops, []
            if not ops:
                self._idle.set()
                continue
            try:
                answers = await asyncio.to_thread(self._apply, ops)
            except Exception as exc:
                # The database failed: each waiting claim fails (its send gives up unsent and
                # the batch is retried); the outcomes of sends already made are written again
                # on the next turn, so an accepted email is not left looking interrupted.
                log.warning("broadcast outbox write failed; retrying", exc_info=True)
                for _, _, _, future in ops:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                self._ops[:0] = [op for op in ops if op[3] is None]
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            for (kind, message_id, _, future), answer in zip(ops, answers, strict=True):
                if future is None:
                    continue
                if future.cancelled():
                    if kind == "claim" and answer == "":
                        # claimed for a send that was cancelled meanwhile: nothing went out
                        self.release(message_id, "not sent: cancelled before MAIL FROM")
                    continue
                future.set_result(answer)
            if not self._ops:
                self._idle.set()

    def _apply(self, ops: list[tuple[str, str, str, asyncio.Future[str] | None]]) -> list[str]:
        """One transaction for the turn: the outcomes first, then every claim in one UPDATE
        (RETURNING the rows it took); a claim it did not take is looked at alone. The
        statements are built once (``_Statements``): a turn runs every few milliseconds, and
        building SQLAlchemy expressions cost more than running them."""
        now = utcnow()
        sql = _STATEMENTS
        claims = [m for kind, m, _, _ in ops if kind == "claim"]
        sent = [m for kind, m, _, _ in ops if kind == "sent"]
        taken: set[str] = set()
        with self._engine.begin() as conn:
            if sent:  # and their ``message.sent`` webhook events, in this transaction
                moved = conn.execute(sql.sent, {"ids": sent, "now": now}).all()
                emit_rows(conn, [_sent_event(row, now) for row in moved])
            for kind, message_id, error, _ in ops:
                if kind == "failed":
                    conn.execute(sql.failed, {"mid": message_id, "why": error[:2000]})
                elif kind == "release":
                    conn.execute(sql.release, {"mid": message_id, "why": error[:2000]})
                elif kind == "note":
                    conn.execute(sql.note, {"mid": message_id, "why": error[:2000]})
            if claims:
                taken = set(conn.execute(sql.claim, {"ids": claims, "now": now}).scalars())
            return [
                "" if kind != "claim" or message_id in taken else self._not_taken(conn, message_id)
                for kind, message_id, _, _ in ops
            ]

    @staticmethod
    def _not_taken(conn: sa.Connection, message_id: str) -> str:
        """Why a claim failed: ``done`` (not pending: another attempt has or had it), or the
        contact's suppression reason, with the row now ``suppressed``."""
        found = conn.execute(_STATEMENTS.why, {"mid": message_id}).first()
        if found is None or found[0] != MessageState.pending.value:
            return "done"
        reason = f"contact is {found[1]}" if found[1] != ContactStatus.subscribed else "paused"
        conn.execute(_STATEMENTS.suppress, {"mid": message_id, "why": reason})
        return reason


class _Statements:
    """The ledger's statements, built once per process."""

    def __init__(self) -> None:
        messages = SQLModel.metadata.tables["messages"]
        contacts = SQLModel.metadata.tables["contacts"]
        m = messages.c
        state = m.state
        by_id = m.id == sa.bindparam("mid")
        error: sa.BindParameter[str] = sa.bindparam("why", type_=sa.String())
        now = sa.bindparam("now", type_=messages.c.sent_at.type)
        email = sa.select(contacts.c.email).where(contacts.c.id == m.contact_id)
        self.sent = (
            messages.update()
            .where(m.id.in_(sa.bindparam("ids", expanding=True)), state == "sending")
            .values(state=MessageState.sent.value, sent_at=now, error=None)
            .returning(m.id, m.contact_id, m.campaign_id, m.step_id, email.scalar_subquery())
        )
        self.failed = (
            messages.update().where(by_id).values(state=MessageState.failed.value, error=error)
        )
        self.release = (
            messages.update()
            .where(by_id, state == MessageState.sending.value)
            .values(state=MessageState.pending.value, error=error)
        )
        self.note = (
            messages.update().where(by_id, state == MessageState.pending.value).values(error=error)
        )
        eligible = sa.exists().where(
            contacts.c.id == m.contact_id,
            contacts.c.status == ContactStatus.subscribed.value,
            sa.or_(contacts.c.paused_until.is_(None), contacts.c.paused_until <= now),
        )
        self.claim = (
            messages.update()
            .where(
                m.id.in_(sa.bindparam("ids", expanding=True)),
                state == MessageState.pending.value,
                eligible,
            )
            .values(state=MessageState.sending.value, attempts=m.attempts + 1)
            .returning(m.id)
        )
        self.why = (
            sa.select(state, contacts.c.status)
            .select_from(messages.join(contacts, contacts.c.id == m.contact_id))
            .where(by_id)
        )
        self.suppress = (
            messages.update().where(by_id).values(state=MessageState.suppressed.value, error=error)
        )


_STATEMENTS = _Statements()


def _sent_event(row: Sequence[Any], now: datetime) -> EventRow:
    """The ``message.sent`` event of one row the ledger's ``sent`` UPDATE moved."""
    message_id, contact_id, campaign_id, step_id, email = row
    data = message_data(
        message_id=message_id,
        contact_id=contact_id,
        email=email,
        campaign_id=campaign_id,
        step_id=step_id,
    )
    return (MESSAGE_SENT, contact_id, {**data, "sent_at": now.isoformat()})


class BroadcastActivities:
    """The broadcast activities of one worker, sharing its SMTP pool and renderer."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        workspace: Workspace,
        transport: Transport,
        renderer: Renderer,
        router: EventRouter | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        #: recipients by outcome and batches by ending, on the worker's metrics port
        self.metrics = metrics or WorkerMetrics()
        self.engine = engine
        self.workspace = workspace
        self.transport = transport
        self.renderer = renderer
        self.router = router
        self.secret = settings.secret()
        self._sends: dict[str, _Send] = {}
        self._ledger: _Ledger | None = None
        #: the Message-ID domain, parsed once (an address parse per email shows in profiles)
        self.domain = domain_of(workspace.config.from_)
        #: renders the emails: in render processes beside the worker, or in its event loop
        self.render = RenderPool(settings, workspace, renderer, settings.broadcast_render_processes)
        #: sends this worker may have in flight at once (its SMTP pool's connections)
        self.connections = max(1, settings.smtp_max_connections)

    def all(self) -> list[Callable[..., object]]:
        return [self.snapshot, self.batch, self.pick_winner, self.set_state]

    @property
    def ledger(self) -> _Ledger:
        if self._ledger is None:
            self._ledger = _Ledger(self.engine)
        return self._ledger

    async def _db(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    # -- snapshot -------------------------------------------------------------------------

    @activity.defn(name=SNAPSHOT_ACTIVITY)
    async def snapshot(self, inp: SnapshotInput) -> SnapshotResult:
        """Fix the audience (once: a retry returns what the first attempt recorded)."""
        async with heartbeating(every=5.0):
            return await self._db(lambda: self._snapshot(inp.send_id))

    def _snapshot(self, send_id: str) -> SnapshotResult:
        with session_scope(self.engine) as session:
            send = session.get(BroadcastSend, send_id)
            if send is None:
                raise ApplicationError(f"no broadcast send {send_id}", non_retryable=True)
            plan = BroadcastPlan.from_dict(send.plan)
            contacts = SQLModel.metadata.tables["contacts"]
            where: sa.ColumnElement[bool] = (
                to_sql(parse_condition(plan.audience), contacts) if plan.audience else sa.true()
            )
            due_by_zone: dict[str | None, datetime] | None = None
            default_due: datetime | None = None
            if plan.local_time and plan.send_at:
                local = datetime.fromisoformat(plan.send_at).replace(tzinfo=None)
                fallback = _zone(self.workspace.config.timezone) or UTC
                default_due = local.replace(tzinfo=fallback).astimezone(UTC)
                due_by_zone = {}
                for name in rows_of.recipient_zones(session, where):
                    zone = _zone(name)
                    if zone is not None:
                        due_by_zone[name] = local.replace(tzinfo=zone).astimezone(UTC)
            salt = int.from_bytes(hashlib.sha256(send_id.encode()).digest()[:4], "big")
            audience, sample = rows_of.snapshot(
                session,
                send_id=send_id,
                where=where,
                salt=salt,
                sample=plan.ab_sample_percent / 100 if plan.variants else 0.0,
                variants=[v["id"] for v in plan.variants],
                due_by_zone=due_by_zone,
                default_due=default_due,
            )
            session.flush()
            slots = rows_of.slots(session, send_id)
            ranges = [
                SlotRange(
                    first=s.first, last=s.last, due=s.due.isoformat() if s.due is not None else ""
                )
                for s in slots
            ]
        return SnapshotResult(audience=audience, sample=sample, slots=ranges)

    # -- state and winner -----------------------------------------------------------------

    @activity.defn(name=SET_STATE_ACTIVITY)
    async def set_state(self, inp: SetStateInput) -> None:
        def work() -> None:
            with session_scope(self.engine) as session:
                rows_of.set_state(session, inp.send_id, SendState(inp.state), note=inp.note)

        await self._db(work)

    @activity.defn(name=PICK_WINNER_ACTIVITY)
    async def pick_winner(self, inp: PickWinnerInput) -> PickWinnerResult:
        """The variant with the highest share of unique human opens (or clicks) among the
        sample's emails sent; a tie goes to the first listed. Decided once: a retry or a
        replay gets the recorded winner."""
        return await self._db(lambda: self._pick_winner(inp.send_id))

    def _pick_winner(self, send_id: str) -> PickWinnerResult:
        with session_scope(self.engine) as session:
            send = session.get(BroadcastSend, send_id)
            if send is None:
                raise ApplicationError(f"no broadcast send {send_id}", non_retryable=True)
            if send.winner:
                return PickWinnerResult(winner=send.winner)
            plan = BroadcastPlan.from_dict(send.plan)
            kind = "click" if plan.ab_metric == "clicks" else "open"
            figures: dict[str, Any] = {}
            for variant in plan.variants:
                sent = session.execute(
                    sa.select(sa.func.count())
                    .select_from(Message)
                    .where(
                        col(Message.workflow_id) == send_id,
                        col(Message.step_id) == variant["id"],
                        col(Message.state) == MessageState.sent.value,
                    )
                ).scalar_one()
                unique = session.execute(
                    sa.select(sa.func.count(sa.distinct(col(Event.contact_id))))
                    .select_from(Event)
                    .join(Message, col(Message.id) == col(Event.message_id))
                    .where(
                        col(Message.workflow_id) == send_id,
                        col(Message.step_id) == variant["id"],
                        col(Event.type) == kind,
                    )
                ).scalar_one()
                figures[variant["id"]] = {
                    "sent": int(sent),
                    kind + "s": int(unique),
                    "rate": (int(unique) / int(sent)) if sent else 0.0,
                }
            winner = max(
                (v["id"] for v in plan.variants),
                key=lambda v: (figures[v]["rate"], -list(figures).index(v)),
            )
            send.winner = winner
            send.ab_figures = {"metric": plan.ab_metric, "variants": figures}
            session.add(send)
        return PickWinnerResult(winner=winner)

    # -- a batch --------------------------------------------------------------------------

    @activity.defn(name=BATCH_ACTIVITY)
    async def batch(self, inp: BatchInput) -> BatchResult:
        """Send recipients ``inp.first``..``inp.last`` their email, each at most once."""
        try:
            return await self._counted(inp)
        except SendWithdrawn as exc:
            raise ApplicationError(
                str(exc), type="SendWithdrawn", category=ApplicationErrorCategory.BENIGN
            ) from exc
        except TransientSendError as exc:
            # the relay is not taking mail now: the retry (with backoff) sends the rest
            log.warning(
                "broadcast %s batch %d-%d deferred: %s", inp.send_id, inp.first, inp.last, exc
            )
            raise ApplicationError(
                str(exc), type="TransientSendError", category=ApplicationErrorCategory.BENIGN
            ) from exc

    async def _counted(self, inp: BatchInput) -> BatchResult:
        async with heartbeating(every=5.0):
            result = BatchResult()
            try:
                await self._batch(inp, result)
                self.metrics.broadcast_batches.labels("done").inc()
                return result
            except (SendWithdrawn, TransientSendError):
                self.metrics.broadcast_batches.labels("deferred").inc()
                raise
            finally:
                for outcome in ("sent", "failed", "suppressed", "interrupted"):
                    if count := getattr(result, outcome):
                        self.metrics.broadcast_emails.labels(outcome).inc(count)

    async def _batch(self, inp: BatchInput, result: BatchResult) -> None:
        send = await self._send(inp.send_id)
        now = utcnow()
        plan = send.plan

        def load() -> tuple[list[rows_of.BatchRow], dict[int, int]]:
            with session_scope(self.engine) as session:
                batch = rows_of.load_batch(session, inp.send_id, inp.first, inp.last)
                counts: dict[int, int] = {}
                if plan.cap_max:
                    counts = rows_of.recent_counts(
                        session,
                        (r.contact_id for r in batch if r.message_state is None),
                        since=now - timedelta(seconds=plan.cap_seconds),
                        exclude_prefix=f"{inp.send_id}:",
                    )
                # the suppression lists: one query for the batch's addresses and their domains
                listed = suppressions.reasons_for(
                    session,
                    (r.email for r in batch if r.message_state is None),
                    roles=self.workspace.config.suppressions.role_addresses,
                )
                for r in batch:
                    r.suppressed = listed.get(r.email)
                return batch, counts

        batch, counts = await self._db(load)
        interrupted: list[str] = []
        todo: list[_Email] = []
        skipped: list[_Email] = []
        for row in batch:
            message_id = rows_of.message_id_for(inp.send_id, row.contact_id)
            state = row.message_state
            if state == MessageState.sending.value:
                interrupted.append(message_id)
                continue
            if state is not None and state != MessageState.pending.value:
                result.already += 1
                continue
            variant = row.variant or inp.variant
            chosen = send.variants.get(variant)
            email = _Email(
                row=row,
                message_id=message_id,
                step=variant or "email",
                template=chosen["template"] if chosen else plan.template,
            )
            row.skip = None if state is not None else self._skip(row, plan, now, counts)
            (skipped if row.skip else todo).append(email)
        jobs = []
        for email in todo:
            chosen = send.variants.get(email.step)
            jobs.append(
                RenderJob(
                    message_id=email.message_id,
                    contact_id=email.row.contact_id,
                    email=email.row.email,
                    fields=email.row.fields,
                    step=email.step,
                    template=email.template,
                    subject=chosen["subject"] if chosen else plan.subject,
                    preheader=chosen["preheader"] if chosen else plan.preheader,
                )
            )
        for email, rendered in zip(todo, await self.render.compose(send.spec, jobs), strict=True):
            email.subject = rendered.subject
            email.data = rendered.data
            email.links = rendered.links
            email.error = rendered.error
        await self._db(lambda: self._record(inp.send_id, send, todo, skipped, interrupted, now))
        result.suppressed += len(skipped)
        result.interrupted += len(interrupted)
        result.failed += sum(1 for e in todo if e.error)
        await self._deliver(inp, [e for e in todo if not e.error], result)

    def _skip(
        self, row: rows_of.BatchRow, plan: BroadcastPlan, now: datetime, counts: dict[int, int]
    ) -> str | None:
        if row.status != ContactStatus.subscribed.value:
            return f"contact is {row.status}"
        if row.paused_until is not None and row.paused_until > now:
            return "paused"
        if plan.topic and f"{TOPIC_LEFT_TAG}{plan.topic}" in row.tags:
            return f"left topic {plan.topic}"
        if refused := consent_refusal(row.marketing_consent, marketing=True):
            return refused
        if row.suppressed:
            return row.suppressed
        if plan.cap_max and counts.get(row.contact_id, 0) >= plan.cap_max:
            return "frequency cap"
        return None

    def _record(
        self,
        send_id: str,
        send: _Send,
        todo: list[_Email],
        skipped: list[_Email],
        interrupted: list[str],
        now: datetime,
    ) -> None:
        """Every outbox row and link of the batch, in one transaction."""
        campaign_id = broadcast_campaign_id(send.plan.broadcast_id)
        domain = self.domain
        messages: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for email in (*todo, *skipped):
            if email.row.message_state is not None:
                continue  # written by an earlier attempt (still pending): sent below
            state = MessageState.pending
            error = None
            if email.row.skip:
                state, error = MessageState.suppressed, email.row.skip
            elif email.error:
                state, error = MessageState.failed, email.error[:2000]
            messages.append(
                {
                    "id": email.message_id,
                    "key": rows_of.message_key(send_id, email.row.contact_id),
                    "contact_id": email.row.contact_id,
                    "campaign_id": campaign_id,
                    "campaign_version": str(send.number),
                    "step_id": email.step,
                    "workflow_id": send_id,
                    "template": email.template,
                    "subject": email.subject[:1000],
                    "state": state.value,
                    "header_message_id": f"<{email.message_id}@{domain}>",
                    "open_token": open_token(self.secret, email.message_id),
                    "attempts": 0,
                    "error": error,
                    "created_at": now,
                }
            )
            links.extend(
                {"token": t, "message_id": email.message_id, "position": p, "url": u}
                for t, p, u in email.links
            )
        with session_scope(self.engine) as session:
            rows_of.insert_messages(session, messages, links)
            for email in todo:
                if email.error and email.row.message_state is not None:
                    session.execute(
                        sa.update(Message)
                        .where(
                            col(Message.id) == email.message_id,
                            col(Message.state) == MessageState.pending.value,
                        )
                        .values(state=MessageState.failed.value, error=email.error[:2000])
                    )
            if interrupted:
                session.execute(
                    sa.update(Message)
                    .where(
                        col(Message.id).in_(interrupted),
                        col(Message.state) == MessageState.sending.value,
                    )
                    .values(state=MessageState.interrupted.value, error=INTERRUPTED)
                )
        for message_id in interrupted:
            log.warning("message %s: %s", message_id, INTERRUPTED)

    async def _deliver(self, inp: BatchInput, emails: list[_Email], result: BatchResult) -> None:
        """Hand the emails to the SMTP pool, ``connections`` at a time; stops starting new ones
        at the first sign the relay is not taking mail, or that the worker is stopping."""
        if not emails:
            return
        ledger = self.ledger
        pace = Pace(inp.rate)  # this batch's share of the broadcast's rate; 0: no limit
        never = asyncio.Event()  # the pace's stop: a batch is stopped by its trouble instead
        queue = iter(emails)
        trouble: list[BaseException] = []
        bounces: list[tuple[_Email, PermanentSendError]] = []
        plan = (await self._send(inp.send_id)).plan
        sender = parseaddr(plan.from_addr or self.workspace.config.from_)[1]
        pacer = getattr(self.transport, "pacer", None)
        paced: set[asyncio.Future[None]] = set()

        async def one(email: _Email) -> None:
            answer: list[str] = []

            async def on_connection() -> bool:
                answer.append(await ledger.claim(email.message_id))
                return answer[-1] == ""

            try:
                await self.transport.send(
                    sender=sender,
                    recipients=[email.row.email],
                    data=email.data,
                    on_connection=on_connection,
                    horizon=_PACE_HORIZON_SECONDS,
                )
            except DomainDeferred as exc:
                # its domain holds it back: the row stays pending for the broadcast's later
                # round (``retry_at``), and the batch goes on with the other domains
                if answer and answer[-1] == "":
                    ledger.release(email.message_id, str(exc))
                else:
                    ledger.note(email.message_id, str(exc))
                result.deferred += 1
                at = exc.retry_at.isoformat()
                result.retry_at = min(result.retry_at or at, at)
                return
            except SendWithdrawn as exc:
                if not answer:  # the worker is stopping: the row stays pending for the retry
                    trouble.append(exc)
                elif answer[-1] == "done":
                    result.already += 1
                else:
                    result.suppressed += 1
                return
            except TransientSendError as exc:
                if answer and answer[-1] == "":
                    ledger.release(email.message_id, str(exc))
                else:
                    ledger.note(email.message_id, str(exc))
                trouble.append(exc)
                return
            except PermanentSendError as exc:
                ledger.failed(email.message_id, str(exc))
                result.failed += 1
                if exc.bounce is not None:
                    bounces.append((email, exc))
                return
            ledger.sent(email.message_id)
            result.sent += 1

        async def lane() -> None:
            while not trouble:
                email = next(queue, None)
                if email is None:
                    return
                await pace.wait(never)
                if trouble:
                    return
                if pacer is not None and pacer.books(email.row.email):
                    # waits for its domain's booked slot beside the lanes, not in one: mail
                    # to other domains is not held up behind it
                    paced.add(asyncio.ensure_future(one(email)))
                    continue
                await one(email)

        lanes = [asyncio.ensure_future(lane()) for _ in range(min(self.connections, len(emails)))]
        try:
            await asyncio.gather(*lanes)
            await asyncio.gather(*paced)
        finally:
            for task in (*lanes, *paced):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*lanes, *paced, return_exceptions=True)
            await asyncio.shield(ledger.flush())
        if bounces:
            await self._bounces(bounces)
        if trouble:
            first = next((t for t in trouble if isinstance(t, SendWithdrawn)), trouble[0])
            raise first

    async def _bounces(self, bounces: list[tuple[_Email, PermanentSendError]]) -> None:
        """Count the relay's refusals against the contacts, as journey sends do; the bounce
        events are routed (a bounced contact's journeys end)."""

        def record() -> list[int]:
            recorded: list[int] = []
            with session_scope(self.engine) as session:
                for email, exc in bounces:
                    record_refusal(
                        session,
                        contact_id=email.row.contact_id,
                        message_id=email.message_id,
                        exc=exc,
                        soft_limit=self.settings.soft_bounce_limit,
                        recorded=recorded,
                    )
            return recorded

        for event_id in await self._db(record):
            if self.router is not None:
                try:
                    await self.router.route(event_id)
                except Exception:  # stored: the sweep routes it
                    log.warning("event %s left for the sweep", event_id, exc_info=True)

    async def _send(self, send_id: str) -> _Send:
        known = self._sends.get(send_id)
        if known is not None:
            return known

        def load() -> _Send:
            with session_scope(self.engine) as session:
                row = session.get(BroadcastSend, send_id)
                if row is None:
                    raise ApplicationError(f"no broadcast send {send_id}", non_retryable=True)
                plan = BroadcastPlan.from_dict(row.plan)
                hashes = {h for files in plan.templates.values() for h in files.values() if h}
                texts = deploys.template_sources(session, hashes)
                number = row.number
            templates: dict[str, dict[str, str | None]] = {}
            for name, files in plan.templates.items():
                missing = sorted(p for p, h in files.items() if h and h not in texts)
                if missing:
                    raise ApplicationError(
                        f"template files {', '.join(missing)} of {name} not in the database",
                        non_retryable=True,
                    )
                templates[name] = {p: texts[h] if h else None for p, h in files.items()}
            variants = {v["id"]: v for v in plan.variants}
            config = self.workspace.config
            spec = RenderSpec(
                campaign_id=broadcast_campaign_id(plan.broadcast_id),
                track=plan.track,
                utm=plan.utm,
                from_addr=plan.from_addr or config.from_,
                reply_to=plan.reply_to or config.reply_to,
                domain=self.domain,
                unsubscribe_mailto=config.unsubscribe_mailto,
                templates=templates,
                mailing=broadcast_mailing(config.name, self.domain, plan.broadcast_id),
            )
            return _Send(plan=plan, number=number, spec=spec, variants=variants)

        found = await self._db(load)
        self._sends[send_id] = found
        return found


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
