"""Outgoing event webhooks: dispatch, ordered delivery, retries, and giving up.

Ordering. One ``WebhookLane`` workflow per (endpoint, contact) delivers that pair's events one
after another, fed by signal-with-start (``lane_id``). A per-endpoint sequential loop would
also keep the order, but one receiver's slow or failing answer for one contact would then hold
every other contact's events back for up to a day; lanes keep the order where it matters (a
contact's ``created`` before its ``updated``) and let contacts proceed independently. Events
without a contact (broadcasts) share the lane ``-``.

Dispatch. ``WebhookDispatcher.dispatch_once`` (the worker runs it every few seconds, like the
event sweep) reads undispatched events in insertion order, creates a delivery per matching
enabled endpoint (type and ``filter``), signals each to its lane in that order, then stamps
the events. A crash between the signals and the stamp repeats signals: the lane ignores a
delivery it already holds and the delivery activity skips a delivered one.

Retries. The delivery activity retries with backoff (30 s doubling to an hour) until a day
after the first attempt, then the lane marks the delivery failed and moves on. Time is the
Temporal server's (the attempt's scheduled time), so a day of failures is a day of the
workflow clock; the signature's timestamp is the wall clock, which is what receivers check.
An endpoint whose attempts have failed for a day is disabled and its owner emailed once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError

from campaigns.conditions import ConditionFacts, evaluate, parse_event_filter
from contacts._sql import insert_ignore
from contacts.db import session_scope
from contacts.models import utcnow
from contacts.webhook_endpoints import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    active_secrets,
)
from contacts.webhook_events import WebhookEvent, mark_dispatched, undispatched
from emails.errors import PermanentSendError
from emails.sender import Transport
from workflows.outbound import (
    OutboundPolicy,
    OutboundRefused,
    OutboundRetryable,
    new_client,
    post_signed_body,
)
from workflows.webhook_lane import LaneInput, WebhookLane, lane_id

__all__ = [
    "FAILING_LIMIT",
    "WebhookDispatcher",
    "WebhookOutActivities",
    "resend_delivery",
    "sign",
]

log = logging.getLogger(__name__)

FAILING_LIMIT = timedelta(days=1)
#: signal-with-start calls the dispatcher has in flight at once (one per lane)
SIGNALS_AT_ONCE = 32


def sign(msg_id: str, timestamp: int, body: bytes, secrets: list[str]) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>`` of
    ``id.timestamp.body`` under each secret, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    parts = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(digest).decode())
    return " ".join(parts)


def event_body(event: WebhookEvent) -> bytes:
    """What a receiver gets: the Standard Webhooks envelope (``type``, ``timestamp``, ``data``)
    with the event id and contact."""
    payload = {
        "id": event.id,
        "type": event.type,
        "timestamp": event.occurred_at.isoformat(),
        "contact_id": event.contact_id,
        "data": event.data,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookOutActivities:
    """The delivery activities: one POST per attempt, each attempt recorded."""

    def __init__(
        self,
        *,
        engine: Engine,
        policy: OutboundPolicy,
        transport: Transport | None = None,
        sender: str = "",
    ) -> None:
        self.engine = engine
        #: the worker's outbound policy; each endpoint's own host is what it allows
        self.policy = policy
        self.transport = transport
        self.sender = sender

    def all(self) -> list[Any]:
        return [self.deliver, self.give_up]

    @activity.defn(name="webhooks_out_deliver")
    async def deliver(self, delivery_ids: list[int]) -> None:
        """One attempt of each delivery in order, skipping those delivered already; raises at
        the first failure, to be retried (``WebhookRefused``: no retry can help)."""
        now = activity.info().current_attempt_scheduled_time
        # a lane's deliveries go to one endpoint: its connections are reused in the batch (by
        # host name: an endpoint whose URL changed meanwhile gets connections of its own)
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, httpx.AsyncClient] = {}

            def client_for(host: str) -> httpx.AsyncClient:
                if host not in clients:
                    clients[host] = new_client(self.policy)
                    stack.push_async_callback(clients[host].aclose)
                return clients[host]

            for delivery_id in delivery_ids:
                await self._deliver_one(delivery_id, now, client_for)

    async def _deliver_one(
        self, delivery_id: int, now: datetime, client_for: Callable[[str], httpx.AsyncClient]
    ) -> None:
        loaded = await asyncio.to_thread(self._load, delivery_id)
        if loaded is None:
            return  # delivered already (a repeated signal or a retry after success)
        endpoint, event = loaded
        if not endpoint.enabled:
            raise ApplicationError(
                f"endpoint {endpoint.name} is disabled", type="WebhookRefused", non_retryable=True
            )
        body = event_body(event)
        stamp = int(time.time())
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(event.id, stamp, body, active_secrets(endpoint, now)),
        }
        host = httpx.URL(endpoint.url).host
        policy = replace(self.policy, allowed_hosts=frozenset({host} if host else ()))
        status: int | None = None
        try:
            answer = await post_signed_body(
                endpoint.url, body, headers, policy=policy, client=client_for(host or "")
            )
            status = answer.status
            error = None if answer.ok else (answer.error or f"HTTP {answer.status}")
        except OutboundRefused as exc:
            await asyncio.to_thread(self._record, delivery_id, now, None, str(exc))
            raise ApplicationError(str(exc), type="WebhookRefused", non_retryable=True) from exc
        except OutboundRetryable as exc:
            status, error = exc.status, str(exc)
        disable = await asyncio.to_thread(self._record, delivery_id, now, status, error)
        if disable is not None:
            await self._tell_owner(*disable)
        if error is not None:
            raise ApplicationError(error, type="WebhookFailed")

    @activity.defn(name="webhooks_out_give_up")
    async def give_up(
        self, delivery_ids: list[int], reason: str, at: str, expired: bool
    ) -> list[int]:
        """After a day of retries (``expired``) or a refusal, mark the first undelivered
        delivery of the batch failed, and the endpoint disabled if all its attempts have
        failed for a day; returns the ones after it, still to deliver. ``at`` is the lane's
        clock then."""
        now = datetime.fromisoformat(at)
        pending = await asyncio.to_thread(self._pending, delivery_ids)
        if not pending:
            return []
        disable = await asyncio.to_thread(self._give_up, pending[0], reason, now, expired)
        if disable is not None:
            await self._tell_owner(*disable)
        return pending[1:]

    def _pending(self, delivery_ids: list[int]) -> list[int]:
        with session_scope(self.engine) as s:
            states = dict(
                s.exec(
                    select(WebhookDelivery.id, WebhookDelivery.state).where(
                        col(WebhookDelivery.id).in_(delivery_ids)
                    )
                ).all()
            )
        return [i for i in delivery_ids if states.get(i) == DeliveryState.pending]

    def _load(self, delivery_id: int) -> tuple[WebhookEndpoint, WebhookEvent] | None:
        with session_scope(self.engine) as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.state == DeliveryState.delivered:
                return None
            endpoint = s.get(WebhookEndpoint, delivery.endpoint_id)
            event = s.exec(select(WebhookEvent).where(WebhookEvent.seq == delivery.event_seq)).one()
            if endpoint is None:
                raise ApplicationError(
                    "endpoint deleted", type="WebhookRefused", non_retryable=True
                )
            return endpoint, event

    def _record(
        self, delivery_id: int, now: datetime, status: int | None, error: str | None
    ) -> tuple[str, str] | None:
        """Store the attempt and its outcome; (owner, endpoint name) if this attempt is the
        one that disables the endpoint."""
        with session_scope(self.engine) as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            s.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    attempted_at=now,
                    status=status,
                    ok=error is None,
                    error=error[:500] if error else None,
                )
            )
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.last_status = status
            delivery.last_error = error[:500] if error else None
            endpoint = s.get(WebhookEndpoint, delivery.endpoint_id)
            assert endpoint is not None
            if error is None:
                delivery.state = DeliveryState.delivered.value
                delivery.delivered_at = now
                endpoint.failing_since = None
                s.add(endpoint)
                s.add(delivery)
                return None
            s.add(delivery)
            if endpoint.failing_since is None:
                endpoint.failing_since = now
                s.add(endpoint)
                return None
            return _disable_if_failing(s, endpoint, now, error)

    async def _tell_owner(self, owner: str, name: str) -> None:
        if self.transport is None or not owner:
            log.warning("webhook endpoint %s disabled after a day of failures", name)
            return
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = owner
        message["Subject"] = f"drip: webhook endpoint {name} disabled after a day of failures"
        message["Message-ID"] = make_msgid(
            domain=parseaddr(self.sender)[1].rpartition("@")[2] or None
        )
        message.set_content(
            f"Every delivery to the webhook endpoint {name} has failed for a day, so drip "
            "stopped sending to it. Its failed deliveries are listed in the dashboard "
            "(Webhooks) and by `drip webhooks deliveries`; fix the receiver, enable the "
            "endpoint again and resend them.\n"
        )
        try:
            await self.transport.send(
                sender=parseaddr(self.sender)[1], recipients=[owner], data=bytes(message)
            )
        except PermanentSendError as exc:
            log.warning("could not tell %s that endpoint %s is disabled: %s", owner, name, exc)

    def _give_up(
        self, delivery_id: int, reason: str, now: datetime, expired: bool
    ) -> tuple[str, str] | None:
        with session_scope(self.engine) as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.state != DeliveryState.pending:
                return None
            delivery.state = DeliveryState.failed.value
            delivery.last_error = reason[:500]
            s.add(delivery)
            endpoint = s.get(WebhookEndpoint, delivery.endpoint_id)
            if endpoint is None or endpoint.failing_since is None:
                return None
            # this delivery was retried for a day; if nothing succeeded since its first
            # attempt, the endpoint has failed for that whole day (``now`` itself may fall a
            # hair short of a day after ``failing_since``: the retries end at the day's limit)
            first = s.exec(
                select(sa.func.min(WebhookAttempt.attempted_at)).where(
                    WebhookAttempt.delivery_id == delivery_id
                )
            ).one()
            if expired and first is not None and endpoint.failing_since <= _aware(first):
                now = max(now, endpoint.failing_since + FAILING_LIMIT)
            return _disable_if_failing(s, endpoint, now, reason)


def _aware(moment: datetime) -> datetime:
    """An aggregate over a UTCDateTime column comes back without its type (naive on SQLite)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _disable_if_failing(
    s: Session, endpoint: WebhookEndpoint, now: datetime, error: str
) -> tuple[str, str] | None:
    """Disable ``endpoint`` if it has failed for ``FAILING_LIMIT``; (owner, name) if this call
    disabled it (a conditional UPDATE: of two racing callers, one disables and tells)."""
    since = endpoint.failing_since
    if since is None or now - since < FAILING_LIMIT:
        return None
    changed = s.execute(
        sa.update(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint.id, col(WebhookEndpoint.enabled))
        .values(
            enabled=False,
            disabled_reason=f"failing since {since.isoformat()}: {error}"[:500],
            updated_at=now,
        )
    )
    if not getattr(changed, "rowcount", 0):
        return None
    return endpoint.owner_email, endpoint.name


class WebhookDispatcher:
    """Hands undispatched events to their endpoints' lanes (see the module doc)."""

    def __init__(self, *, client: Client, engine: Engine, task_queue: str) -> None:
        self.client = client
        self.engine = engine
        self.task_queue = task_queue

    async def dispatch_once(self) -> int:
        """One round; the number of events handed over."""
        plan = await asyncio.to_thread(self._plan)
        if plan is None:
            return 0
        seqs, lanes = plan
        # one signal per lane with its deliveries in order; the lanes are signalled at once
        queued: dict[tuple[int, int | None], list[int]] = {}
        for endpoint_id, contact_id, delivery_id in lanes:
            queued.setdefault((endpoint_id, contact_id), []).append(delivery_id)
        gate = asyncio.Semaphore(SIGNALS_AT_ONCE)

        async def signal(lane: tuple[int, int | None], ids: list[int]) -> None:
            async with gate:
                await signal_lane(self.client, self.task_queue, lane[0], lane[1], ids)

        await asyncio.gather(*(signal(lane, ids) for lane, ids in queued.items()))
        await asyncio.to_thread(self._stamp, seqs)
        return len(seqs)

    async def run_forever(self, interval: float = 2.0) -> None:
        while True:
            try:
                while await self.dispatch_once():
                    pass
            except Exception:  # keep going: the next round retries what failed
                log.exception("webhook dispatch failed; retrying in %ss", interval)
            await asyncio.sleep(interval)

    def _plan(self) -> tuple[list[int], list[tuple[int, int | None, int]]] | None:
        with session_scope(self.engine) as s:
            events = undispatched(s)
            if not events:
                return None
            endpoints = s.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.enabled))).all()
            lanes: list[tuple[int, int | None, int]] = []
            for event in events:
                for endpoint in endpoints:
                    if not endpoint.wants(event.type) or not _passes(endpoint, event):
                        continue
                    assert endpoint.id is not None and event.seq is not None
                    insert_ignore(
                        s,
                        WebhookDelivery,
                        {
                            "endpoint_id": endpoint.id,
                            "event_seq": event.seq,
                            "event_id": event.id,
                            "event_type": event.type,
                            "contact_id": event.contact_id,
                            "state": DeliveryState.pending.value,
                            "attempts": 0,
                            "created_at": utcnow(),
                        },
                        ["endpoint_id", "event_seq"],
                    )
                    delivery_id = s.exec(
                        select(WebhookDelivery.id).where(
                            WebhookDelivery.endpoint_id == endpoint.id,
                            WebhookDelivery.event_seq == event.seq,
                        )
                    ).one()
                    assert delivery_id is not None
                    lanes.append((endpoint.id, event.contact_id, delivery_id))
            return [e.seq for e in events if e.seq is not None], lanes

    def _stamp(self, seqs: list[int]) -> None:
        with session_scope(self.engine) as s:
            mark_dispatched(s, seqs, utcnow())


def _passes(endpoint: WebhookEndpoint, event: WebhookEvent) -> bool:
    if not endpoint.filter:
        return True
    tree = parse_event_filter(endpoint.filter)
    return evaluate(tree, ConditionFacts(now=event.occurred_at, properties=event.data))


async def signal_lane(
    client: Client,
    task_queue: str,
    endpoint_id: int,
    contact_id: int | None,
    delivery_ids: list[int],
) -> None:
    handle: WorkflowHandle[Any, Any] = await client.start_workflow(
        WebhookLane.run,
        LaneInput(endpoint_id, contact_id),
        id=lane_id(endpoint_id, contact_id),
        task_queue=task_queue,
        start_signal="enqueue",
        start_signal_args=[delivery_ids],
    )
    del handle


def _reopen(engine: Engine, delivery_id: int) -> tuple[int, int | None]:
    with session_scope(engine) as s:
        delivery = s.get(WebhookDelivery, delivery_id)
        if delivery is None:
            raise LookupError(f"webhook delivery {delivery_id}")
        delivery.state = DeliveryState.pending.value
        delivery.delivered_at = None
        s.add(delivery)
        return delivery.endpoint_id, delivery.contact_id


async def resend_delivery(
    client: Client, engine: Engine, task_queue: str, delivery_id: int
) -> None:
    """Deliver ``delivery_id`` again (failed or not): pending again, queued on its lane.
    LookupError if there is no such delivery."""
    endpoint_id, contact_id = await asyncio.to_thread(_reopen, engine, delivery_id)
    await signal_lane(client, task_queue, endpoint_id, contact_id, [delivery_id])
