"""The broadcast tables: one row per send, and the audience it snapshotted.

A send (``broadcast_sends``) is one run of a broadcast file: ``id`` is its Temporal workflow
id, ``broadcast:<broadcast id>:<number>``, so starting the same send twice is refused by
Temporal and by the primary key alike. Its audience is fixed when the send starts: one
``broadcast_recipients`` row per contact, numbered densely by ``seq`` in sending order, which
the batches walk by range (keyset), never by loading the audience. Each recipient's email is an
ordinary outbox row (``messages``, key ``<send id>:<contact id>``), so the outbox's state
machine, tracking and reports apply unchanged; a recipient skipped at send time (unsubscribed,
paused, topic left, capped) gets a ``suppressed`` row with the reason.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from contacts._types import UTCDateTime, utcnow
from contacts.broadcast_events import BROADCAST_PREFIX

__all__ = ["BroadcastRecipient", "BroadcastSend", "SendState", "broadcast_campaign_id"]


class SendState(enum.StrEnum):
    #: created; the audience is being snapshotted, or ``send_at`` has not come
    scheduled = "scheduled"
    sending = "sending"
    #: the A/B test's sample is out; waiting to pick the winner
    testing = "testing"
    paused = "paused"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


#: States in which a send is over (another send of the broadcast may start)
FINISHED = frozenset({SendState.completed, SendState.cancelled, SendState.failed})


def broadcast_campaign_id(broadcast_id: str) -> str:
    """The ``campaign_id`` a broadcast's outbox rows, events and rollups are filed under: never
    a campaign's id, since those cannot contain ':' (``contacts.broadcast_events``)."""
    return f"{BROADCAST_PREFIX}{broadcast_id}"


class BroadcastSend(SQLModel, table=True):
    __tablename__ = "broadcast_sends"
    __table_args__ = (sa.UniqueConstraint("broadcast_id", "number"),)

    #: ``broadcast:<broadcast id>:<number>``: the workflow id, and the outbox rows' workflow_id
    id: str = Field(primary_key=True, max_length=300)
    broadcast_id: str = Field(max_length=200, index=True)
    number: int = 1
    name: str = Field(default="", max_length=200)
    version: str = Field(max_length=80)
    #: the compiled plan (``campaigns.broadcasts.BroadcastPlan``) as the send started
    plan: dict[str, Any] = Field(sa_type=sa.JSON)
    state: SendState = Field(default=SendState.scheduled, sa_type=sa.String(16))
    #: recipients in the snapshot (None until it is taken)
    audience: int | None = None
    #: the A/B test's sample size (the first ``sample`` recipients by seq)
    sample: int = 0
    winner: str | None = Field(default=None, max_length=80)
    #: the A/B test's figures per variant when the winner was picked
    ab_figures: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    started_by: str = Field(default="", max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    #: when the first email went (or was due to)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: who paused or cancelled it, and why it failed
    note: str | None = Field(default=None, max_length=500)


class BroadcastRecipient(SQLModel, table=True):
    __tablename__ = "broadcast_recipients"
    # the send's "how far" queries read by (send, contact)
    __table_args__ = (sa.Index("ix_broadcast_recipients_send_contact", "send_id", "contact_id"),)

    send_id: str = Field(primary_key=True, max_length=300)
    seq: int = Field(primary_key=True)
    contact_id: int
    #: the A/B variant of a sample recipient; "" for everyone else (they get the winner)
    variant: str = Field(default="", max_length=80)
    #: when this recipient is due (in their time zone's send_at); None: with the send
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
