"""The contact database's tables: the one definition of a contact, event, message, enrolment.

Every other package imports these; none redefines them. Times are stored as UTC and always come
back timezone-aware, on SQLite as on PostgreSQL.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from contacts._types import UTCDateTime, utcnow

__all__ = [
    "ApiKey",
    "CampaignCounter",
    "CampaignReach",
    "CampaignVersion",
    "Contact",
    "ContactScore",
    "ContactStatus",
    "DashboardSession",
    "Enrolment",
    "EnrolmentState",
    "Event",
    "Hit",
    "LeadAlert",
    "Link",
    "MarketingConsent",
    "Message",
    "MessageState",
    "Role",
    "SalesRep",
    "SalesTeam",
    "ScoreChange",
    "SegmentMember",
    "SplitDecision",
    "StageChange",
    "UTCDateTime",
    "User",
    "WebhookToken",
    "utcnow",
]


class ContactStatus(enum.StrEnum):
    subscribed = "subscribed"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"
    #: signed up on a double opt-in form and not confirmed yet: never enrolled, never emailed
    #: (except the confirmation itself, which the API sends directly)
    pending = "pending"


class MarketingConsent(enum.StrEnum):
    """What drip knows about a contact's consent to marketing email (``contacts.marketing_consent``
    records it, with the record itself in ``consent_source``/``consent_at``/``consent_ip``)."""

    #: a form, a double opt-in confirmation, an import or an API call recorded it
    given = "given"
    #: the events API created the contact in a workspace whose shop collects consent itself
    #: (``consent: {events_api: shop_collects_consent}`` in workspace.yaml)
    implied = "implied"
    #: the events API created the contact and nobody recorded consent since: marketing
    #: campaigns skip it unless they say ``without_consent: allowed``
    none = "none"
    #: it came in without a consent record through a door that does not decide (an operator's
    #: import or API call without a source, or it existed before migration 0020): mailed as
    #: before, shown as unrecorded
    unrecorded = "unrecorded"


class MessageState(enum.StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    suppressed = "suppressed"
    #: the SMTP transaction was cut off (a crash, a dropped connection): the relay may or may
    #: not have the email, so it is not retried; an operator decides (``drip messages resend``)
    interrupted = "interrupted"


class EnrolmentState(enum.StrEnum):
    running = "running"
    completed = "completed"
    #: the campaign's goal was reached: a conversion
    converted = "converted"
    #: an exit rule, an unsubscribe, a bounce or a complaint ended it early
    exited = "exited"
    cancelled = "cancelled"
    failed = "failed"


class Contact(SQLModel, table=True):
    """A person we may email; ``email`` is stored normalised so one address is one contact."""

    __tablename__ = "contacts"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    tags: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    score: int = 0
    status: ContactStatus = Field(default=ContactStatus.subscribed, sa_type=sa.String(16))
    consent_source: str | None = Field(default=None, max_length=200)
    consent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    consent_ip: str | None = Field(default=None, max_length=64)
    #: may it get marketing email (``contacts.marketing_consent``); transactional mail ignores it
    marketing_consent: MarketingConsent = Field(
        default=MarketingConsent.unrecorded,
        sa_type=sa.String(16),
        sa_column_kwargs={"server_default": MarketingConsent.none.value},
    )
    owner: str | None = Field(default=None, max_length=200)
    #: the lifecycle stage (``campaigns.sales.STAGES``); moves are recorded in stage_changes
    stage: str = Field(default="subscriber", max_length=16, index=True)
    #: the contact paused their emails (preference page) until then: sends wait until it passes
    paused_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Event(SQLModel, table=True):
    """Something a contact did or that happened to them; ``dedupe_key`` makes recording idempotent.

    ``routed_at`` stays empty until the event has been delivered to the journeys that can use it,
    so an event recorded while Temporal was unreachable is routed later rather than lost.
    """

    __tablename__ = "events"
    # the analytics page's aggregates (human opens and clicks by hour, bounces and complaints
    # over a window) read only this index: by type, then time, with the contact for joins
    __table_args__ = (
        sa.Index("ix_events_type_occurred_contact", "type", "occurred_at", "contact_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    type: str = Field(max_length=32, index=True)
    name: str = Field(default="", max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    source: str = Field(default="", max_length=200)
    message_id: str | None = Field(default=None, max_length=64, index=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    routed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


class Message(SQLModel, table=True):
    """The outbox: one row per email a journey step sends, written before SMTP is touched.

    ``key`` (journey, step, visit) is unique, so a retried or re-run activity finds the row and
    never sends the same email twice; ``id`` is made inside the workflow and becomes the
    ``Message-ID``, identical across retries.
    """

    __tablename__ = "messages"
    # the frequency cap counts a contact's recent messages on every send
    __table_args__ = (
        sa.Index("ix_messages_contact_created", "contact_id", "created_at"),
        # the analytics page counts the emails sent over the last 30 days from this index alone
        sa.Index("ix_messages_sent_at_state", "sent_at", "state"),
        # a campaign's emails by step and state, and its contacts emailed, from this index alone
        sa.Index(
            "ix_messages_campaign_step_state", "campaign_id", "step_id", "state", "contact_id"
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    key: str = Field(max_length=400, unique=True)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    campaign_id: str = Field(max_length=200)
    campaign_version: str = Field(default="", max_length=80)
    step_id: str = Field(max_length=200)
    workflow_id: str = Field(max_length=400, index=True)
    template: str = Field(max_length=200)
    subject: str = Field(default="", max_length=1000)
    state: MessageState = Field(default=MessageState.pending, sa_type=sa.String(16), index=True)
    header_message_id: str = Field(default="", max_length=300)
    open_token: str = Field(max_length=80, unique=True)
    attempts: int = 0
    error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: an ``interrupted`` email an operator chose to send again: when, and who (at most once)
    resent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    resent_by: str | None = Field(default=None, max_length=200)


class Link(SQLModel, table=True):
    """A tracked link: the token in the email maps to exactly this stored URL and nothing else."""

    __tablename__ = "links"

    token: str = Field(primary_key=True, max_length=80)
    message_id: str = Field(foreign_key="messages.id", index=True, max_length=64)
    position: int
    url: str = Field(max_length=4000)


class Enrolment(SQLModel, table=True):
    """One contact's journey through one campaign version; ``workflow_id`` names its workflow."""

    __tablename__ = "enrolments"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "contact_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(max_length=200, index=True)
    campaign_version: str = Field(max_length=80)
    contact_id: int = Field(foreign_key="contacts.id", index=True)
    number: int = 1
    workflow_id: str = Field(max_length=400, unique=True)
    state: EnrolmentState = Field(default=EnrolmentState.running, sa_type=sa.String(16))
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: why it ended, when not simply at its last step: the goal, the exit rule, who cancelled
    end_reason: str | None = Field(default=None, max_length=500)


class CampaignVersion(SQLModel, table=True):
    """One deployment of a compiled campaign plan. Rows are never changed: a deploy adds a row
    when the plan (its content-hash version) or the campaign's status differs from the latest
    one, and the latest row per campaign is what new enrolments get. Running journeys carry
    their own plan, so they are not affected."""

    __tablename__ = "campaign_versions"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(max_length=200, index=True)
    version: str = Field(max_length=80)
    status: str = Field(max_length=16)
    trigger_kind: str = Field(max_length=32)
    trigger_value: str = Field(max_length=2000)
    plan: dict[str, Any] = Field(sa_type=sa.JSON)
    source: str = Field(default="", max_length=1000)
    deployed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TemplateSource(SQLModel, table=True):
    """One email template file's exact text as a deploy recorded it, stored once under the
    SHA-256 of that text. Deployed plans name their templates' files by these hashes, so a
    journey renders the templates of its own version and a new template needs no worker
    restart. Rows are never changed (the same text always has the same key)."""

    __tablename__ = "template_sources"

    hash: str = Field(primary_key=True, max_length=64)
    source: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SplitDecision(SQLModel, table=True):
    """The winner of an A/B split with ``auto_winner``, decided once and then kept, so every
    contact after the decision goes down the same variant however the figures move later."""

    __tablename__ = "split_decisions"

    campaign_id: str = Field(primary_key=True, max_length=200)
    step_id: str = Field(primary_key=True, max_length=200)
    metric: str = Field(max_length=32)
    winner: str = Field(max_length=200)
    figures: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SegmentMember(SQLModel, table=True):
    """Who is inside a ``segment_entered`` campaign's segment as of the last evaluation: a
    contact *enters* when it matches and has no row, and leaves (row deleted) when it stops
    matching, so it can enter again later."""

    __tablename__ = "segment_members"

    campaign_id: str = Field(primary_key=True, max_length=200)
    contact_id: int = Field(primary_key=True, foreign_key="contacts.id")
    entered_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiKey(SQLModel, table=True):
    """A key for the admin API (``contacts.apikeys``). Only a SHA-256 hash of the key is kept, so
    a leaked database leaks no usable key; ``prefix`` (the first characters, shown in listings)
    lets an operator tell keys apart. A revoked key keeps its row, for the audit trail."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=64, unique=True)
    scopes: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Hit(SQLModel, table=True):
    """One request to the open pixel or a click link, stored before anything is decided.

    The API writes hits in batches (``webhooks/hits.py``), only those whose token names a
    message or link (requests with any other token are counted, not stored); the consumer then
    fills in what the hit was: ``message_id``, ``bot_reason`` (``None`` for a human open or
    click, else why it looks like a machine: ``user_agent:<name>``, ``head_request``,
    ``too_soon_after_send``, ``apple_mpp``, ``all_links_at_once``, ``trap_link``) and
    ``consumed_at``. A human hit becomes an ``open`` or ``click`` event whose ``dedupe_key`` is
    ``<kind>:hit:<hit id>``; flagged hits are kept for reporting and never drive a branch.
    """

    __tablename__ = "hits"

    id: int | None = Field(default=None, primary_key=True)
    #: ``open`` or ``click``
    kind: str = Field(max_length=8)
    token: str = Field(max_length=80)
    method: str = Field(default="GET", max_length=8)
    user_agent: str = Field(default="", max_length=500)
    ip: str = Field(default="", max_length=64)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    consumed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    message_id: str | None = Field(default=None, max_length=64, index=True)
    link_position: int | None = None
    bot_reason: str | None = Field(default=None, max_length=200)


# the sales tables live in their own module; importing it here puts them on the metadata
# (so do the dashboard's users and sessions)
from contacts.attachments import MessageAttachment  # noqa: E402, F401
from contacts.broadcast_models import BroadcastRecipient, BroadcastSend  # noqa: E402, F401
from contacts.dashboard_models import DashboardSession, Role, User  # noqa: E402
from contacts.idempotency import IdempotencyKey  # noqa: E402, F401
from contacts.pacing import DomainDay, DomainPace, DomainSlot  # noqa: E402, F401
from contacts.ratelimits import RateLimitCounter  # noqa: E402, F401
from contacts.rollup_models import CampaignCounter, CampaignReach  # noqa: E402
from contacts.sales_models import (  # noqa: E402
    ContactScore,
    LeadAlert,
    SalesRep,
    SalesTeam,
    ScoreChange,
    StageChange,
)
from contacts.suppressions import Suppression  # noqa: E402, F401
from contacts.webhook_endpoints import WebhookAttempt, WebhookDelivery, WebhookEndpoint  # noqa: E402, F401
from contacts.webhook_events import WebhookEvent  # noqa: E402, F401
from contacts.webhook_tokens import WebhookToken  # noqa: E402
