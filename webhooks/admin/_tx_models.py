"""The bodies of the transactional API (``webhooks.admin.messages_tx``), and what they answer.

Kept apart from the routes so each file reads in one sitting. Every limit here is in the
OpenAPI document (lengths, counts, patterns), so a client learns it from the schema rather
than from a refusal; what no schema can say (the template exists, ``data`` has what the
template reads, the address is one) is checked by the route and answered with a 422 problem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from webhooks.admin._common import OneLine, Problem
from webhooks.admin.contacts import Fields

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_BATCH",
    "AttachmentIn",
    "AttachmentPublic",
    "BatchAccepted",
    "BatchRecipient",
    "BatchRequest",
    "BatchResult",
    "MessageAccepted",
    "MessageEvent",
    "MessagePublic",
    "MessageRequest",
    "Recipient",
]

#: recipients of one batch
MAX_BATCH = 500
#: files of one message
MAX_ATTACHMENTS = 10

TemplateName = Annotated[str, StringConstraints(min_length=1, max_length=200), OneLine]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=300), OneLine]
Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320),
    Field(json_schema_extra={"format": "email"}),
]
#: the template's values: any JSON object (``{{ data.order_id }}``), at most 100 keys
Data = Annotated[dict[str, Any], Field(max_length=100)]


class Recipient(BaseModel):
    """Who gets the email: a contact by id, or an address (a new one becomes a contact without
    marketing consent: this email is not marketing, and it is no permission for marketing)."""

    model_config = ConfigDict(extra="forbid")

    contact_id: Annotated[int, Field(ge=1, le=2**62)] | None = None
    email: Email | None = None
    #: fields stored on the contact when ``email`` is given (merged into an existing contact's)
    fields: Fields = {}

    @model_validator(mode="after")
    def _one_way(self) -> Recipient:
        if (self.contact_id is None) == (self.email is None):
            raise ValueError("give exactly one of contact_id and email")
        if self.fields and self.email is None:
            raise ValueError("fields go with email, not with contact_id")
        return self


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, StringConstraints(min_length=1, max_length=255), OneLine]
    content_type: Annotated[
        str,
        StringConstraints(
            max_length=255,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
        ),
    ] = "application/octet-stream"
    #: the file's bytes, base64 (RFC 4648, padded); their total is capped by
    #: ``DRIP_TX_ATTACHMENTS_MAX_BYTES``
    content: Annotated[str, Field(min_length=1, json_schema_extra={"contentEncoding": "base64"})]


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: a template of the workspace (``emails/NAME.mjml``)
    template: TemplateName
    to: Recipient
    #: a Jinja line like a campaign step's subject: it may read ``contact`` and ``data``
    subject: Subject
    data: Data = {}
    attachments: Annotated[list[AttachmentIn], Field(max_length=MAX_ATTACHMENTS)] = []
    #: open pixel and tracked links; false for an email whose links must stay as written
    track: bool = True
    reply_to: Email | None = None


class BatchRecipient(Recipient):
    #: this recipient's values for the template
    data: Data = {}


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: TemplateName
    subject: Subject
    recipients: Annotated[list[BatchRecipient], Field(min_length=1, max_length=MAX_BATCH)]
    track: bool = True
    reply_to: Email | None = None


class MessageAccepted(BaseModel):
    """A message accepted for sending: it goes out through the worker, moments later."""

    id: str
    contact_id: int
    #: ``pending`` until the worker sends it (``GET /api/messages/{id}`` follows it)
    state: Literal["pending"] = "pending"


class BatchResult(BaseModel):
    #: the recipient's position in ``recipients``
    index: int
    #: 202: accepted, ``id`` names the message; else the status a single send would have
    #: answered, and ``problem`` says why
    status: int
    id: str | None = None
    contact_id: int | None = None
    problem: Problem | None = None


class BatchAccepted(BaseModel):
    accepted: int
    rejected: int
    #: one per recipient, in order
    results: list[BatchResult]


class AttachmentPublic(BaseModel):
    filename: str
    content_type: str
    size: int
    sha256: str


class MessageEvent(BaseModel):
    """What happened to the message after it left: ``open``, ``click``, ``bounce``,
    ``complaint``, ``unsubscribe``... (``bot`` names the machine a flagged hit came from)."""

    id: int
    type: str
    name: str
    occurred_at: datetime
    properties: dict[str, Any]


class MessagePublic(BaseModel):
    id: str
    contact_id: int
    template: str
    subject: str
    #: ``pending``, ``sending``, ``sent``, ``failed``, ``suppressed`` or ``interrupted``
    state: str
    error: str | None
    created_at: datetime
    sent_at: datetime | None
    attachments: list[AttachmentPublic]
    events: list[MessageEvent]
