"""Retention of outgoing webhook events, deliveries and attempts.

Every broadcast email, tracking hit and contact change writes an event whether or not an
endpoint wants it, so without a prune ``webhook_events`` grows by the size of the audience
with every broadcast. Two kinds of rows go, each in batches of ``batch`` events per
transaction (a million-row backlog is never one long transaction holding locks):

- events that are dispatched and have no delivery: no enabled endpoint wanted them when the
  dispatcher read them, nothing lists them and nothing can resend them, so they go at once;
- events dispatched before the retention whose every delivery is finished (delivered or
  failed) with its last attempt before the retention too, with those deliveries and their
  attempts. Counting from the last attempt, not from the event, gives a failed delivery (or
  one resent later) the whole retention to be resent after it last failed.

Never pruned: an undispatched event (the dispatcher has yet to read it), and any event with a
pending delivery (being retried, or resent). A resend that reopens a delivery while a batch
runs keeps it: the deletes re-check the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from contacts.db import session_scope
from contacts.webhook_endpoints import DeliveryState, WebhookAttempt, WebhookDelivery
from contacts.webhook_events import WebhookEvent

__all__ = ["PRUNE_BATCH", "PruneResult", "prune_webhook_history"]

#: events per transaction: their deliveries and attempts go in the same one
PRUNE_BATCH = 1000
FINISHED = (DeliveryState.delivered.value, DeliveryState.failed.value)


@dataclass
class PruneResult:
    #: dispatched events no endpoint wanted
    unwanted: int = 0
    #: events past the retention, with their finished deliveries
    expired: int = 0
    deliveries: int = 0
    attempts: int = 0
    #: transactions used (each at most ``batch`` events)
    batches: int = 0


def prune_webhook_history(
    engine: Engine,
    *,
    retention: timedelta,
    now: datetime,
    batch: int = PRUNE_BATCH,
    on_batch: Callable[[], None] | None = None,
) -> PruneResult:
    """Delete what the module doc says, ``batch`` events per transaction, until none is left.
    ``on_batch`` (a callable, e.g. an activity heartbeat) runs after each transaction."""
    result = PruneResult()
    cutoff = now - retention
    no_delivery = ~sa.exists().where(col(WebhookDelivery.event_seq) == col(WebhookEvent.seq))
    unwanted = (
        select(WebhookEvent.seq)
        .where(col(WebhookEvent.dispatched_at).is_not(None), no_delivery)
        .order_by(col(WebhookEvent.seq))
        .limit(batch)
    )
    after = 0
    while seqs := _seqs(engine, unwanted.where(col(WebhookEvent.seq) > after)):
        after = seqs[-1]
        with session_scope(engine) as s:
            result.unwanted += _delete_events(s, seqs)
        result.batches += 1
        if on_batch is not None:
            on_batch()
    kept = sa.exists().where(
        col(WebhookDelivery.event_seq) == col(WebhookEvent.seq),
        sa.or_(
            col(WebhookDelivery.state).not_in(FINISHED),
            col(WebhookDelivery.last_attempt_at) >= cutoff,
        ),
    )
    expired = (
        select(WebhookEvent.seq)
        .where(col(WebhookEvent.dispatched_at) < cutoff, ~kept)
        .order_by(col(WebhookEvent.seq))
        .limit(batch)
    )
    after = 0
    while seqs := _seqs(engine, expired.where(col(WebhookEvent.seq) > after)):
        after = seqs[-1]
        with session_scope(engine) as s:
            finished = (
                select(WebhookDelivery.id)
                .where(col(WebhookDelivery.event_seq).in_(seqs))
                .where(col(WebhookDelivery.state).in_(FINISHED))
                .scalar_subquery()
            )
            result.attempts += _rowcount(
                s.execute(
                    sa.delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(finished))
                )
            )
            result.deliveries += _rowcount(
                s.execute(
                    sa.delete(WebhookDelivery).where(
                        col(WebhookDelivery.event_seq).in_(seqs),
                        col(WebhookDelivery.state).in_(FINISHED),
                    )
                )
            )
            result.expired += _delete_events(s, seqs)
        result.batches += 1
        if on_batch is not None:
            on_batch()
    return result


def _seqs(engine: Engine, query: SelectOfScalar[int] | SelectOfScalar[None]) -> list[int]:
    with session_scope(engine) as s:
        return [seq for seq in s.exec(query).all() if seq is not None]


def _delete_events(s: Session, seqs: list[int]) -> int:
    """Delete the events of ``seqs`` that have no delivery left (one reopened meanwhile keeps
    its event)."""
    left = sa.exists().where(col(WebhookDelivery.event_seq) == col(WebhookEvent.seq))
    return _rowcount(
        s.execute(sa.delete(WebhookEvent).where(col(WebhookEvent.seq).in_(seqs), ~left))
    )


def _rowcount(outcome: object) -> int:
    return int(getattr(outcome, "rowcount", 0) or 0)
