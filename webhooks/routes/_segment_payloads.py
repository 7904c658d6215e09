"""Segment's message shapes, and how each maps onto drip's contacts and events.

Kept apart from the routes so the mapping (names, purchase amounts, identities) reads on its own
and can be tested without HTTP. Field names follow Segment's HTTP Tracking API spec; unknown
fields (``integrations``, ``channel``, ``_metadata`` ...) are accepted and ignored, as Segment
does.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)
from pydantic.config import JsonDict

__all__ = [
    "AnyMessage",
    "Batch",
    "Identify",
    "Ignored",
    "IgnoredCall",
    "Page",
    "Track",
    "dedupe_key",
    "drip_event_name",
    "normalise_properties",
    "occurred_at",
]

_Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
#: Segment names a user by a string; some libraries send numbers, which we read as text. The
#: number is strict: a string too long for ``_Id`` must not pass as the number it spells.
_UserId = _Id | Annotated[int, Strict()]


def _date_time_text(value: object) -> object:
    """Segment's times are ISO 8601 strings; pydantic would read a number (``sentAt: 0``) as
    seconds since 1970, which no library sends and the OpenAPI document does not allow."""
    if isinstance(value, str | datetime):
        return value
    raise ValueError("must be an ISO 8601 date-time string")


_DateTime = Annotated[datetime, BeforeValidator(_date_time_text)]
#: the rule ``_Message._someone`` enforces, in the OpenAPI document too
_SOMEONE: JsonDict = {
    "anyOf": [
        {"required": ["userId"], "properties": {"userId": {"not": {"type": "null"}}}},
        {"required": ["anonymousId"], "properties": {"anonymousId": {"not": {"type": "null"}}}},
    ]
}


class Context(BaseModel):
    """Segment's ``context``: ``traits`` (for the email) and ``ip`` (an implied consent's)."""

    model_config = ConfigDict(extra="allow")
    traits: dict[str, Any] = {}


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, json_schema_extra=_SOMEONE)

    userId: _UserId | None = None
    anonymousId: _UserId | None = None
    messageId: _Id | None = None
    timestamp: _DateTime | None = None
    sentAt: _DateTime | None = None
    context: Context = Context()
    writeKey: str | None = None

    @model_validator(mode="after")
    def _someone(self) -> _Message:
        if self.userId is None and self.anonymousId is None:
            raise ValueError("either userId or anonymousId is required")
        return self

    @property
    def user_id(self) -> str | None:
        return None if self.userId is None else str(self.userId)

    @property
    def anonymous_id(self) -> str | None:
        return None if self.anonymousId is None else str(self.anonymousId)


class Track(_Message):
    """Something the user did: becomes an ``event`` named after ``event`` (see
    ``drip_event_name``)."""

    type: Literal["track"] = "track"
    event: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    properties: dict[str, Any] = {}


class Identify(_Message):
    """Who the user is: ``traits.email`` creates or updates the contact."""

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = {}


class Page(_Message):
    """A page view (``page``) or an app screen (``screen``): recorded as that event type."""

    type: Literal["page", "screen"] = "page"
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    category: Annotated[str, StringConstraints(max_length=200)] | None = None
    properties: dict[str, Any] = {}


class Ignored(_Message):
    """``group`` and ``alias``: accepted, so libraries do not retry them, and not stored."""

    type: Literal["group", "alias"]


class IgnoredCall(_Message):
    """A ``group`` or ``alias`` posted on its own (``/v1/group``, ``/v1/alias``; analytics.js's
    ``/v1/g``, ``/v1/a``): accepted and not stored, like ``Ignored`` in a batch."""

    type: Literal["group", "alias"] | None = None


AnyMessage = Annotated[Track | Identify | Page | Ignored, Field(discriminator="type")]


class Batch(BaseModel):
    """Many messages in one call; each keeps its own ``type`` and ``messageId``."""

    model_config = ConfigDict(extra="allow")
    batch: list[AnyMessage]
    writeKey: str | None = None
    sentAt: _DateTime | None = None
    context: Context = Context()


# --- the mapping ---------------------------------------------------------------------------

#: Segment ecommerce spec names that drip campaigns know by another name.
EVENT_ALIASES = {"Order Completed": "purchase"}
#: What a campaign may name (campaigns/_condition_tree ``_EVENT_NAME``).
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.:-]+")
_AMOUNT_FROM = ("total", "revenue", "value", "subtotal")


def drip_event_name(segment_event: str) -> str:
    """The event's name in drip: ``Order Completed`` is ``purchase``; a name campaigns could
    not write (spaces, accents) becomes snake case: ``Cart Abandoned`` -> ``cart_abandoned``."""
    name = EVENT_ALIASES.get(segment_event.strip(), segment_event.strip())
    if _EVENT_NAME.match(name):
        return name
    return _NOT_NAME.sub("_", name).strip("_").lower()[:200] or "event"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def normalise_properties(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A ``purchase``'s properties with ``amount`` (from ``total``, ``revenue``, ``value``,
    ``subtotal``, else the sum of the products), ``items`` (Segment's ``products``) and, when
    every product has the same one, ``category``; so ``where: properties.amount > 100`` and the
    examples' ``properties.category == "tents"`` work with Segment's ecommerce events. What the
    shop sent is kept; other events are stored as sent."""
    if name != "purchase":
        return properties
    out = dict(properties)
    products = [p for p in out.get("products") or [] if isinstance(p, dict)]
    if _number(out.get("amount")) is None:
        found = next((n for k in _AMOUNT_FROM if (n := _number(out.get(k))) is not None), None)
        if found is None and products:
            prices = [(_number(p.get("price")), _number(p.get("quantity", 1))) for p in products]
            if all(price is not None and qty is not None for price, qty in prices):
                found = round(sum(price * qty for price, qty in prices if price and qty), 2)
        if found is not None:
            out["amount"] = found
    else:
        out["amount"] = _number(out.get("amount"))
    if "items" not in out and isinstance(out.get("products"), list):
        out["items"] = out["products"]
    categories = {p.get("category") for p in products}
    if "category" not in out and len(categories) == 1:
        [category] = categories
        if isinstance(category, str) and category:
            out["category"] = category
    return out


def dedupe_key(message_id: str) -> str:
    """The event's idempotency key: Segment's ``messageId`` (hashed when long)."""
    if len(message_id) <= 150:
        return f"segment:{message_id}"
    return "segment:sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def occurred_at(message: _Message, batch_sent_at: datetime | None, now: datetime) -> datetime:
    """When it happened, corrected for the device's clock as Segment does: ``timestamp`` moved
    by how far ``sentAt`` is from our clock; no ``timestamp``: now. Never in the future."""
    try:
        timestamp = _aware(message.timestamp)
        if timestamp is None:
            return now
        sent_at = _aware(message.sentAt or batch_sent_at)
        if sent_at is not None:
            timestamp += now - sent_at
    except OverflowError:  # e.g. year 1 sent in year 9999: no usable time, take ours
        return now
    return min(timestamp, now)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
