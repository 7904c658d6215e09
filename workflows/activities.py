"""Activities: every piece of I/O a journey does, each idempotent and given ids, not payloads.

Retry policies live with the workflow (``workflows.journey``): sends retry forever with backoff
(an SMTP outage delays mail, it never drops it); database writes likewise. Permanent failures
are recorded on the outbox row and returned, not raised, so one bad address cannot wedge a journey.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from campaigns.conditions import evaluate, parse_condition
from campaigns.workspace import Workspace
from contacts import outbox, repository, splits, suppressions
from contacts.attachments import attachments_of, drop_contents
from contacts.db import session_scope
from contacts.erasure import is_erased
from contacts.marketing_consent import consent_refusal
from contacts.models import (
    Contact,
    ContactStatus,
    EnrolmentState,
    Message,
    MessageState,
    SplitDecision,
    utcnow,
)
from drip.settings import Settings
from emails import Renderer, TemplateError, build_message, domain_of, open_token
from emails.deployed import DeployedTemplates
from emails.errors import (
    DomainDeferred,
    PermanentSendError,
    SendWithdrawn,
    TransientSendError,
)
from emails.list_headers import campaign_mailing
from emails.sender import Transport
from workflows.facts import contact_facts
from workflows.heartbeat import heartbeating
from workflows.metrics import WorkerMetrics
from workflows.router import EventRouter
from workflows.types import (
    BranchInput,
    BranchResult,
    ContactTimeInput,
    ContactTimeResult,
    FinishJourneyInput,
    SendEmailInput,
    SendEmailResult,
    SplitWinnerInput,
    SplitWinnerResult,
    UpdateContactInput,
    UpdateContactResult,
)

__all__ = ["JourneyActivities", "record_refusal"]

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERRUPTED = (
    "interrupted during the SMTP transaction; not resent, to avoid a duplicate "
    "(the relay may or may not have accepted it)"
)
#: on an outbox row handed back unsent because its send was cancelled before MAIL FROM
NOT_STARTED = "not sent: cancelled before the message went on a connection"


class _AlreadyDone(SendEmailResult):
    """What an earlier attempt of the same send did, reported again: the same payload, but
    not counted again in ``drip_worker_sends_total``."""


class _RelayDeferred(SendEmailResult):
    """The relay deferred the send for its domain (``421 4.7.0``): the journey waits for the
    domain's backoff like any postponed send, but it is counted as the relay's deferral."""


@dataclass
class _Claim:
    """What this attempt found when its connection was ready: the row claimed (it sends), or
    the answer of the attempt that has it (``taken``)."""

    claimed: bool = False
    taken: SendEmailResult | None = None


@dataclass(frozen=True)
class _Composed:
    """A rendered email, ready for SMTP: its bytes, envelope sender, tracked links and the
    subject as the person receives it (what the outbox row keeps)."""

    data: bytes
    sender: str
    links: list[tuple[str, int, str]]
    subject: str = ""


class JourneyActivities:
    """Holds the shared resources (engine, renderer, transport) the activities need."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        workspace: Workspace,
        transport: Transport,
        router: EventRouter | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.workspace = workspace
        self.renderer = Renderer(workspace, settings)
        #: the template files each campaign version deployed, which its emails render from
        self.deployed = DeployedTemplates(engine)
        self.transport = transport
        self.secret = settings.secret()
        #: routes the events a contact update records (a tag added starts its campaigns) at
        #: once; without it the worker's sweep routes them within seconds
        self.router = router
        #: sends by outcome and their timing, served on the worker's metrics port
        self.metrics = metrics or WorkerMetrics()
        #: activities defined in sibling modules (sales alerts, webhooks, splits), registered
        #: with the worker together with these
        self.extra: list[Callable[..., object]] = []

    def all(self) -> list[Callable[..., object]]:
        return [
            self.send_email,
            self.update_contact,
            self.evaluate_branch,
            self.contact_time,
            self.split_winner,
            self.finish_journey,
            *self.extra,
        ]

    async def _db(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    @activity.defn(name="send_email")
    async def send_email(self, inp: SendEmailInput) -> SendEmailResult:
        """Send one journey email at most once: the outbox row is claimed before SMTP."""
        async with heartbeating(every=2.0):
            try:
                result = await self._observed(inp)
            except SendWithdrawn as exc:
                # A stopping worker handed the send back before MAIL FROM, the row still
                # ``pending``: the retry (any worker) sends it. Benign, so a stop with many
                # queued sends is one summary line (``workflows.worker``), not a traceback each.
                raise ApplicationError(
                    str(exc), type="SendWithdrawn", category=ApplicationErrorCategory.BENIGN
                ) from exc
            if inp.attachments and result.state != "deferred":
                # the files are in the message now; only their names, sizes and hashes stay
                message_id = inp.message_id
                await self._db(lambda: self._drop_attachments(message_id))
            return result

    def _drop_attachments(self, message_id: str) -> None:
        with session_scope(self.engine) as session:
            drop_contents(session, message_id)

    async def _observed(self, inp: SendEmailInput) -> SendEmailResult:
        """``_send_email``, counted and timed by outcome (``workflows.metrics``); a failed or
        deferred send is logged with its reason."""
        info = activity.info() if activity.in_activity() else None
        attempt = info.attempt if info is not None and info.activity_type == "send_email" else 1
        started = time.monotonic()
        try:
            result = await self._send_email(inp)
        except SendWithdrawn:  # a stopping worker handed it back unsent: its own summary line
            self.metrics.send_ended(inp, "withdrawn", time.monotonic() - started, attempt=attempt)
            raise
        except TransientSendError as exc:
            self.metrics.send_ended(
                inp, "deferred", time.monotonic() - started, attempt=attempt, reason=str(exc)
            )
            # That WARNING line is the log of a deferral. Benign keeps the SDK from adding a
            # traceback of its own (with the relay's words, addresses and all) to every one;
            # Temporal retries it all the same.
            raise ApplicationError(
                str(exc), type="TransientSendError", category=ApplicationErrorCategory.BENIGN
            ) from exc
        except asyncio.CancelledError:  # a stop or a lost heartbeat: the next attempt counts
            raise
        except Exception:
            self.metrics.send_ended(inp, "error", time.monotonic() - started, attempt=attempt)
            raise
        if isinstance(result, _AlreadyDone) or result.message_id != inp.message_id:
            outcome = "already_done"
        elif isinstance(result, _RelayDeferred):
            outcome = "deferred"
        elif result.state == "deferred":  # paused, a full cap, its domain's wait: not the relay
            outcome = "postponed"
        else:
            outcome = result.state
        self.metrics.send_ended(
            inp, outcome, time.monotonic() - started, attempt=attempt, reason=result.error or ""
        )
        return result

    async def _send_email(self, inp: SendEmailInput) -> SendEmailResult:
        reserved = await self._db(lambda: self._reserve(inp))
        if isinstance(reserved, SendEmailResult):
            return reserved
        # Rendering happens between two short transactions, never inside one: SQLite has one
        # writer, and holding its lock through MJML and MIME would serialise every send.
        composed = await asyncio.to_thread(self._compose, inp, reserved)
        claimed = await self._db(lambda: self._claim(inp, composed))
        if claimed is not None:
            return claimed
        assert isinstance(composed, _Composed)
        claim = _Claim()
        try:
            # The row turns ``sending`` in ``_hand_over``, once a connection is ready for this
            # message and just before MAIL FROM, not while the send waits for one (a stopping
            # worker hands those back unsent). From then until it says ``sent``, a crash
            # leaves it ``sending``: the retry then refuses to send (at most once), because the
            # relay may already have accepted it.
            await self.transport.send(
                sender=composed.sender,
                recipients=[reserved.email],
                data=composed.data,
                on_connection=lambda: self._hand_over(inp.message_id, claim),
                when=_moment(inp.now) if inp.now else None,
            )
        except SendWithdrawn:
            if claim.taken is not None:  # another attempt of this send has it, or it is done
                return claim.taken
            raise
        except DomainDeferred as exc:
            # the recipient's domain holds it back (backoff, pace, warm-up): back to pending,
            # and the journey sleeps until ``retry_at`` instead of Temporal retrying at once
            why = str(exc)
            await self._db(lambda: self._release(inp.message_id, why, claimed=claim.claimed))
            answer = _RelayDeferred if exc.code is not None else SendEmailResult
            return answer(
                message_id=inp.message_id,
                state="deferred",
                error=exc.reason,
                retry_at=exc.retry_at.isoformat(),
            )
        except TransientSendError as exc:
            reason = str(exc)
            await self._db(lambda: self._release(inp.message_id, reason, claimed=claim.claimed))
            raise
        except PermanentSendError as exc:
            error = exc
            await self._route(await self._db(lambda: self._refused(inp, error)))
            return SendEmailResult(message_id=inp.message_id, state="failed", error=str(exc))
        await self._db(lambda: self._finish(inp.message_id, MessageState.sent, None))
        return SendEmailResult(message_id=inp.message_id, state="sent")

    def _reserve(self, inp: SendEmailInput) -> SendEmailResult | Contact:
        """Check the frequency cap, reserve the outbox row and check suppression: the contact
        to send to, or the final answer (deferred, suppressed, already done)."""
        with session_scope(self.engine) as session:
            contact = repository.get_contact(session, inp.contact_id, lock=inp.cap_max > 0)
            paused = contact.paused_until
            # a pause on the preference page is about marketing; a receipt goes out now
            if paused is not None and paused > _moment(inp.now) and not inp.transactional:
                # paused on the preference page: the journey waits and sends when it ends
                return SendEmailResult(
                    message_id=inp.message_id, state="deferred", retry_at=paused.isoformat()
                )
            if inp.cap_max and contact.status == ContactStatus.subscribed:
                full_until = outbox.cap_full_until(
                    session,
                    contact_id=inp.contact_id,
                    key=inp.key,
                    limit=inp.cap_max,
                    per=timedelta(seconds=inp.cap_seconds),
                    now=_moment(inp.now),
                )
                if full_until is not None:
                    return SendEmailResult(
                        message_id=inp.message_id,
                        state="deferred",
                        retry_at=full_until.isoformat(),
                    )
            row = outbox.reserve_message(
                session,
                Message(
                    id=inp.message_id,
                    key=inp.key,
                    contact_id=inp.contact_id,
                    campaign_id=inp.campaign_id,
                    campaign_version=inp.campaign_version,
                    step_id=inp.step_id,
                    workflow_id=inp.workflow_id,
                    template=inp.template,
                    subject=inp.subject,
                    created_at=_moment(inp.now),
                    open_token=open_token(self.secret, inp.message_id),
                    header_message_id=f"<{inp.message_id}@{domain_of(self.workspace.config.from_)}>",
                ),
            )
            if row.id != inp.message_id:
                # Same key, other id: only possible if the workflow's history was reset.
                return SendEmailResult(message_id=row.id, state=str(row.state))
            if row.state == MessageState.sending:
                # its own state, so operators can list, count and resend these on purpose
                outbox.finish_send(session, row.id, MessageState.interrupted, INTERRUPTED)
                log.warning("message %s: %s", row.id, INTERRUPTED)
                return SendEmailResult(message_id=row.id, state="interrupted", error=INTERRUPTED)
            if row.state != MessageState.pending:
                return _AlreadyDone(message_id=row.id, state=str(row.state), error=row.error)
            stopped = _stopped(contact, transactional=inp.transactional)
            if stopped is not None:
                outbox.finish_send(session, row.id, MessageState.suppressed, stopped)
                return SendEmailResult(message_id=row.id, state="suppressed")
            refused = consent_refusal(
                contact.marketing_consent,
                marketing=inp.marketing,
                consent_required=inp.consent_required,
            )
            if refused is not None:
                outbox.finish_send(session, row.id, MessageState.suppressed, refused)
                return SendEmailResult(message_id=row.id, state="suppressed", error=refused)
            # the suppression lists: an address or domain on them stops every email; a role
            # address (abuse@, noreply@ ...) only marketing mail, unless the workspace says not
            listed = suppressions.reason_for(
                session,
                contact.email,
                roles=inp.marketing and self.workspace.config.suppressions.role_addresses,
            )
            if listed is not None:
                outbox.finish_send(session, row.id, MessageState.suppressed, listed)
                return SendEmailResult(message_id=row.id, state="suppressed", error=listed)
            return contact

    def _compose(self, inp: SendEmailInput, contact: Contact) -> str | _Composed:
        """The MIME bytes, envelope sender and tracked links; or the template's error."""
        try:
            # a transactional email has no campaign version: the workspace's current template
            deployed = (
                None
                if inp.transactional
                else self.deployed.get(inp.campaign_id, inp.campaign_version, inp.template)
            )
            rendered = self.renderer.render(
                template=inp.template,
                subject=inp.subject,
                preheader=inp.preheader,
                contact=contact,
                message_id=inp.message_id,
                campaign_id=inp.campaign_id,
                step_id=inp.step_id,
                track=inp.track,
                utm=inp.utm,
                deployed=deployed,
                data=inp.data if inp.transactional else None,
            )
        except TemplateError as exc:
            return str(exc)
        if inp.transactional:
            # No one-click List-Unsubscribe: it would end marketing mail, not receipts, so
            # offering it on one misleads (the template may still link the preference page).
            rendered = replace(rendered, unsubscribe_url="")
        files = self._attachments(inp) if inp.attachments else []
        if isinstance(files, str):
            return files
        config = self.workspace.config
        sender = inp.from_addr or config.from_
        domain = domain_of(config.from_)
        # List-Id (marketing only) and Feedback-ID: which stream this is, for receivers
        mailing = campaign_mailing(config.name, domain, inp.campaign_id, marketing=inp.marketing)
        data = build_message(
            rendered,
            from_addr=sender,
            to_addr=contact.email,
            reply_to=inp.reply_to or config.reply_to,
            message_id=inp.message_id,
            domain=domain,
            unsubscribe_mailto=config.unsubscribe_mailto,
            list_id=mailing.list_id,
            feedback_id=mailing.feedback_id(inp.step_id),
            attachments=files,
        )
        return _Composed(
            data=data, sender=_address(sender), links=rendered.links, subject=rendered.subject
        )

    def _attachments(self, inp: SendEmailInput) -> list[tuple[str, str, bytes]] | str:
        """The message's stored attachments as (filename, content type, bytes); or why it
        cannot go (fewer rows than the send expects, or bytes that no longer match their
        SHA-256): failed, never sent without a file the caller attached or with another."""
        with session_scope(self.engine) as session:
            rows = attachments_of(session, inp.message_id)
        if len(rows) != inp.attachments:
            return f"attachments: {len(rows)} stored, {inp.attachments} expected"
        for row in rows:
            if hashlib.sha256(row.content).hexdigest() != row.sha256:
                return f"attachments: {row.filename!r} does not match its SHA-256"
        return [(row.filename, row.content_type, row.content) for row in rows]

    def _claim(self, inp: SendEmailInput, composed: str | _Composed) -> SendEmailResult | None:
        """Store the links and subject and count the attempt (None: go ahead and send), unless
        the template failed or the contact unsubscribed while the email was being built."""
        with session_scope(self.engine) as session:
            if isinstance(composed, str):
                outbox.finish_send(
                    session, inp.message_id, MessageState.failed, f"template: {composed}"
                )
                return SendEmailResult(message_id=inp.message_id, state="failed", error=composed)
            contact = repository.get_contact(session, inp.contact_id)
            stopped = _stopped(contact, transactional=inp.transactional)
            if stopped is not None:
                outbox.finish_send(session, inp.message_id, MessageState.suppressed, stopped)
                return SendEmailResult(message_id=inp.message_id, state="suppressed")
            outbox.store_links(session, inp.message_id, composed.links)
            outbox.record_subject(session, inp.message_id, composed.subject)
            outbox.count_attempt(session, inp.message_id)
            return None

    async def _hand_over(self, message_id: str, claim: _Claim) -> bool:
        """Take the right to talk to SMTP, with a connection ready (the transport's
        ``on_connection``): True sends; False (the answer put in ``claim``) if another attempt
        has it or it is done.

        A cancel while the row is being claimed (a stop out of time, a cancelled journey) lets
        the claim settle, hands the row back to ``pending`` (nothing was sent) and then goes
        through; shielded, so a second cancel cannot leave the row ``sending``."""
        claiming = asyncio.ensure_future(self._db(lambda: self._begin(message_id)))
        try:
            answer = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.ensure_future(self._give_back(claiming, message_id)))
            raise
        if answer is not None:
            claim.taken = answer
            return False
        claim.claimed = True
        return True

    async def _give_back(
        self, claiming: asyncio.Future[SendEmailResult | None], message_id: str
    ) -> None:
        try:
            if await claiming is None:
                await self._db(lambda: self._release(message_id, NOT_STARTED))
        except Exception:  # left ``sending``: the retry marks it interrupted, never sends twice
            log.exception("message %s: cannot hand the outbox row back", message_id)

    def _begin(self, message_id: str) -> SendEmailResult | None:
        with session_scope(self.engine) as session:
            if outbox.begin_send(session, message_id, counted=True):
                return None
            current = outbox.get_message(session, message_id)
            return _AlreadyDone(
                message_id=message_id, state=str(current.state) if current else "failed"
            )

    def _refused(self, inp: SendEmailInput, exc: PermanentSendError) -> list[int]:
        """The relay refused for good: the message failed, and a hard or soft bounce is counted
        (``repository.record_bounce``: a hard one, or the ``soft_bounce_limit``-th soft one,
        marks the contact bounced). Returns the bounce event to route: once the contact is
        bounced, the router ends its running journeys, this one included."""
        recorded: list[int] = []
        with session_scope(self.engine) as session:
            outbox.finish_send(session, inp.message_id, MessageState.failed, str(exc))
            record_refusal(
                session,
                contact_id=inp.contact_id,
                message_id=inp.message_id,
                exc=exc,
                soft_limit=self.settings.soft_bounce_limit,
                recorded=recorded,
            )
        return recorded

    def _release(self, message_id: str, error: str, *, claimed: bool = True) -> None:
        """Back to ``pending`` with the reason, if this attempt claimed the row; if it failed
        before (no connection), the reason only, and never another attempt's claim."""
        with session_scope(self.engine) as session:
            if claimed:
                outbox.release_send(session, message_id, error)
            else:
                outbox.note_failure(session, message_id, error)

    def _finish(self, message_id: str, state: MessageState, error: str | None) -> None:
        with session_scope(self.engine) as session:
            outbox.finish_send(session, message_id, state, error)

    @activity.defn(name="update_contact")
    async def update_contact(self, inp: UpdateContactInput) -> UpdateContactResult:
        """Apply tag, field and score changes (set semantics and a score key make a retry
        harmless), then say whether they met the journey's goal or one of its exit rules."""

        recorded: list[int] = []

        def work() -> UpdateContactResult:
            recorded.clear()  # a retried transaction records (and reports) again
            with session_scope(self.engine) as session:
                contact = repository.update_contact(
                    session,
                    inp.contact_id,
                    add_tags=inp.add_tags,
                    remove_tags=inp.remove_tags,
                    set_fields=inp.set_fields,
                    unset_fields=inp.unset_fields,
                    add_score=inp.add_score,
                    score_key=inp.key,
                    recorded=recorded,
                )
                rules = [inp.goal_when, *inp.exit_when]
                if not any(rules):
                    return UpdateContactResult()
                facts = contact_facts(
                    session, contact, with_events=any("event(" in r for r in rules)
                )
            if inp.goal_when and evaluate(parse_condition(inp.goal_when), facts):
                return UpdateContactResult(ends="goal", reason="goal")
            for rule in inp.exit_when:
                if evaluate(parse_condition(rule), facts):
                    return UpdateContactResult(ends="exit", reason=rule)
            return UpdateContactResult()

        result = await self._db(work)
        await self._route(recorded)
        return result

    async def _route(self, event_ids: list[int]) -> None:
        if self.router is None:
            return
        for event_id in event_ids:
            try:
                await self.router.route(event_id)
            except Exception:  # the change is stored; the sweep routes it
                log.warning("event %s left for the sweep", event_id, exc_info=True)

    @activity.defn(name="evaluate_branch")
    async def evaluate_branch(self, inp: BranchInput) -> BranchResult:
        """Which case of a branch holds now. An activity, not workflow code, because the facts
        (fields, tags, score, recent events) live in the database; its recorded result keeps the
        journey deterministic on replay."""

        def work() -> BranchResult:
            with session_scope(self.engine) as session:
                contact = repository.get_contact(session, inp.contact_id)
                facts = contact_facts(
                    session,
                    contact,
                    opened=inp.opened,
                    clicked=inp.clicked,
                    with_events=any("event(" in c for c in inp.conditions),
                )
            for index, text in enumerate(inp.conditions):
                if evaluate(parse_condition(text), facts):
                    return BranchResult(index=index)
            return BranchResult(index=-1)

        return await self._db(work)

    @activity.defn(name="split_winner")
    async def split_winner(self, inp: SplitWinnerInput) -> SplitWinnerResult:
        """The split's winner once it can be called, else "" (keep assigning by hash). Decided
        once and stored, so the figures moving later never flips the winner."""
        return await self._db(lambda: self._split_winner(inp))

    def _split_winner(self, inp: SplitWinnerInput) -> SplitWinnerResult:
        with session_scope(self.engine) as session:
            decided = session.get(SplitDecision, (inp.campaign_id, inp.step_id))
            if decided is not None:
                return SplitWinnerResult(goto=decided.winner)
            figures = splits.variant_figures(session, inp.campaign_id, inp.variant_steps)
            first = min((f.first_sent for f in figures if f.first_sent), default=None)
            now = _moment(inp.now)
            if first is None or now < first + timedelta(seconds=inp.after_seconds):
                return SplitWinnerResult()
            if any(f.sent < inp.min_sample for f in figures):
                return SplitWinnerResult()
            best = max(figures, key=lambda f: f.rate(inp.metric))  # ties: the first variant
            winner = splits.decide(
                session,
                campaign_id=inp.campaign_id,
                step_id=inp.step_id,
                metric=inp.metric,
                winner=best.step_id,
                figures={f.step_id: f.as_dict() for f in figures},
                now=now,
            )
            log.info("split %s/%s: %s wins on %s", inp.campaign_id, inp.step_id, winner, inp.metric)
            return SplitWinnerResult(goto=winner)

    @activity.defn(name="contact_time")
    async def contact_time(self, inp: ContactTimeInput) -> ContactTimeResult:
        """A date-time field of the contact (``webinar_at``), for waits relative to it. A value
        that is missing, not ISO 8601 or without a time zone gives "" and the journey does not
        wait: guessing a zone would send a reminder at the wrong hour."""

        def work() -> ContactTimeResult:
            with session_scope(self.engine) as session:
                value = repository.get_contact(session, inp.contact_id).fields.get(inp.field)
            if not isinstance(value, str):
                return ContactTimeResult()
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return ContactTimeResult()
            return ContactTimeResult(value=moment.isoformat() if moment.tzinfo else "")

        return await self._db(work)

    @activity.defn(name="finish_journey")
    async def finish_journey(self, inp: FinishJourneyInput) -> None:
        """Close the enrolment; a goal reached is also recorded as a ``conversion`` event of
        the contact (once per journey), which reports and A/B winners count."""

        def work() -> None:
            with session_scope(self.engine) as session:
                repository.end_enrolment(
                    session, inp.workflow_id, EnrolmentState(inp.state), inp.reason
                )
                if inp.state == EnrolmentState.converted and inp.contact_id:
                    repository.record_event(
                        session,
                        contact_id=inp.contact_id,
                        type="conversion",
                        name=inp.campaign_id,
                        dedupe_key=f"conversion:{inp.workflow_id}",
                        properties={"workflow_id": inp.workflow_id},
                        source="journey",
                    )

        await self._db(work)


def record_refusal(
    session: Session,
    *,
    contact_id: int,
    message_id: str,
    exc: PermanentSendError,
    soft_limit: int,
    recorded: list[int],
) -> None:
    """Count a relay's permanent refusal of one email against its contact, if it was about the
    address (a hard or soft bounce; ``repository.record_bounce`` decides the suppression), once
    per email. Journey and broadcast sends alike."""
    if exc.bounce is None:
        return
    repository.record_bounce(
        session,
        contact_id=contact_id,
        kind=exc.bounce,
        message_id=message_id,
        source="smtp",
        properties={"code": exc.code, "status": exc.status, "reason": exc.reason, "during": "smtp"},
        dedupe_key=f"bounce:{message_id}",
        soft_limit=soft_limit,
        recorded=recorded,
    )


def _stopped(contact: Contact, *, transactional: bool) -> str | None:
    """Why the contact's status stops this email (the outbox row's reason), or None.

    Marketing and journey mail goes to subscribed contacts only. A transactional email (a
    receipt, a password reset) has its own category: an unsubscribe from marketing, or a
    double opt-in not confirmed yet, does not stop it; a bounced or complained address does,
    and so does an erased contact (erasure makes it ``unsubscribed`` with a tombstone address)."""
    if contact.status == ContactStatus.subscribed:
        return None
    if not transactional:
        return f"contact is {contact.status}"
    if is_erased(contact):
        return "contact is erased"
    if contact.status in (ContactStatus.bounced, ContactStatus.complained):
        return f"contact is {contact.status}"
    return None


def _moment(iso: str) -> datetime:
    """The journey's clock if it sent one, else this machine's."""
    return datetime.fromisoformat(iso) if iso else utcnow()


def _address(header_value: str) -> str:
    """The bare address of a ``Name <addr>`` header, for the SMTP envelope."""
    return parseaddr(header_value)[1]
