"""The broadcast language: one email to a whole audience, written as ``broadcasts/NAME.yaml``.

A broadcast is not a journey: there is no trigger and no steps, only who (``audience``,
``topic``), what (``email``, or an A/B test of subjects and templates), when (``send_at``,
optionally at that local time for each contact) and how fast (``rate``). ``compile_broadcast``
turns the model into a ``BroadcastPlan``: plain JSON-able values the engine
(``workflows.broadcast``) interprets, with the template files named by content hash like a
campaign plan's, so a send renders the wording it started with.

The model refuses what one file can see is wrong, at the field's own position (not at the top
of the file); ``campaigns.broadcast_check`` loads the folder and checks what needs the rest of
the workspace.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from campaigns.loader import Loc
from campaigns.schema import (
    Condition,
    Duration,
    FrequencyCap,
    Identifier,
    SendEmail,
    Utm,
    _Strict,
)

__all__ = [
    "NO_VARIANT",
    "ABTest",
    "Broadcast",
    "BroadcastPlan",
    "BroadcastVariant",
    "compile_broadcast",
    "plan_version",
]

#: The outbox ``step_id`` (and UTM ``content``) of a broadcast's email when it has no A/B test;
#: a variant may not take this id, or its figures could not be told from a plain send's.
NO_VARIANT = "email"
#: What ``send_at`` may look like besides ``now``, for editors (pydantic parses it).
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"


def _refuse(loc: Loc, kind: str, message: str, value: object) -> ValidationError:
    """A model-level refusal reported at the field it is about, not at the top of the file."""
    error = PydanticCustomError(kind, message)
    return ValidationError.from_exception_data(
        "Broadcast", [InitErrorDetails(type=error, loc=loc, input=value)]
    )


class BroadcastVariant(_Strict):
    """One arm of an A/B test: what differs from ``email`` (a subject, a template, or both)."""

    id: Identifier
    subject: str | None = Field(default=None, min_length=1, max_length=300)
    template: Identifier | None = None
    preheader: str | None = Field(default=None, max_length=300)

    @model_validator(mode="after")
    def _differs(self) -> BroadcastVariant:
        if self.id == NO_VARIANT:
            raise _refuse(
                ("id",),
                "variant_id",
                f"'{NO_VARIANT}' names the email without a test; give the variant another id",
                self.id,
            )
        if self.subject is None and self.template is None and self.preheader is None:
            raise PydanticCustomError(
                "variant_empty", "a variant changes 'subject', 'template' or 'preheader'"
            )
        return self


class ABTest(_Strict):
    """Send each variant to an equal part of ``sample`` percent of the audience, wait, then send
    the variant with the most unique human opens (or clicks) to everyone else."""

    variants: list[BroadcastVariant] = Field(min_length=2, max_length=5)
    sample: int = Field(ge=2, le=50, description="per cent of the audience in the test")
    metric: Literal["opens", "clicks"] = Field(
        default="opens", description="unique human opens or clicks (machine hits never count)"
    )
    wait: Duration = Field(description="how long after the test the winner is picked")

    @model_validator(mode="after")
    def _distinct(self) -> ABTest:
        seen: set[str] = set()
        for n, variant in enumerate(self.variants):
            if variant.id in seen:
                raise _refuse(
                    ("variants", n, "id"),
                    "variant_ids",
                    f"variant id '{variant.id}' is used by an earlier variant",
                    variant.id,
                )
            seen.add(variant.id)
        return self


class Broadcast(_Strict):
    """A broadcast file: the email, who gets it, when and how fast."""

    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    email: SendEmail
    audience: Condition | None = Field(
        default=None, description="who gets it (default: every subscribed contact)"
    )
    topic: Identifier | None = Field(
        default=None,
        description="a workspace topic: contacts who left it on the preference page are skipped",
    )
    send_at: Literal["now"] | datetime = Field(
        default="now",
        description="'now', or an ISO 8601 time: with a zone (2026-11-27T09:00:00+01:00), or "
        "without one together with in_contact_timezone",
        # not JSON Schema's date-time format, which editors hold to RFC 3339 (a zone required)
        json_schema_extra={
            "anyOf": [{"const": "now", "type": "string"}, {"type": "string", "pattern": _ISO_TIME}]
        },
    )
    in_contact_timezone: bool = Field(
        default=False,
        description="send at send_at's wall-clock time in each contact's time zone",
    )
    rate: float | None = Field(
        default=None, gt=0, le=100_000, description="emails per second, across all workers"
    )
    frequency_cap: FrequencyCap | None = Field(
        default=None, description="skip contacts who got this many emails in this period"
    )
    ab_test: ABTest | None = None
    utm: Utm | None = Field(default=None, description="UTM parameters on its links")

    @field_validator("send_at", mode="wrap")
    @classmethod
    def _send_at(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # One clear message instead of one per member of the union.
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "send_at", "must be 'now' or an ISO 8601 time, e.g. 2026-11-27T09:00:00+01:00"
            ) from None

    @model_validator(mode="after")
    def _coherent(self) -> Broadcast:
        local = self.in_contact_timezone
        if local and self.send_at == "now":
            raise _refuse(
                ("in_contact_timezone",),
                "send_at_local",
                "needs a send_at time (2026-11-27T09:00:00), not 'now'",
                local,
            )
        if local and isinstance(self.send_at, datetime) and self.send_at.tzinfo is not None:
            raise _refuse(
                ("send_at",),
                "send_at_local",
                "with in_contact_timezone, send_at is a wall-clock time without a zone "
                "(2026-11-27T09:00:00): each contact's own zone applies",
                str(self.send_at),
            )
        if local and self.ab_test is not None:
            raise _refuse(
                ("ab_test",),
                "ab_local",
                "an A/B test cannot be sent in each contact's time zone: the winner would "
                "be picked before most zones received the test",
                "ab_test",
            )
        if not local and isinstance(self.send_at, datetime) and self.send_at.tzinfo is None:
            raise _refuse(
                ("send_at",),
                "send_at_tz",
                "needs a time zone (2026-11-27T09:00:00+01:00), or in_contact_timezone: true",
                str(self.send_at),
            )
        return self

    def templates(self) -> list[str]:
        """Every template it may send: the email's and the variants', without repeats."""
        names = [self.email.template]
        if self.ab_test is not None:
            names += [v.template for v in self.ab_test.variants if v.template is not None]
        return list(dict.fromkeys(names))


@dataclass
class BroadcastPlan:
    """A compiled broadcast, as the engine gets it (JSON-able, small: template texts are in
    the database by hash)."""

    broadcast_id: str
    name: str
    #: content hash of everything below (and of the template files): what a send recorded
    version: str
    template: str
    subject: str
    preheader: str = ""
    from_addr: str = ""
    reply_to: str = ""
    track: bool = True
    #: the audience condition's text; empty: every contact
    audience: str = ""
    topic: str = ""
    #: ISO 8601; empty: at once. With ``local_time`` the wall-clock time in each contact's zone
    send_at: str = ""
    local_time: bool = False
    #: emails per second across all workers; 0: as fast as the relay takes them
    rate: float = 0.0
    cap_max: int = 0
    cap_seconds: float = 0.0
    #: [{"id", "subject", "template", "preheader"}] with every key filled in (the email's own
    #: values where the variant does not change them); empty: no A/B test
    variants: list[dict[str, str]] = field(default_factory=list)
    ab_sample_percent: int = 0
    ab_metric: str = ""
    ab_wait_seconds: float = 0.0
    #: {source, medium, campaign, content, term, domains}; empty: links are left as written
    utm: dict[str, Any] = field(default_factory=dict)
    #: template name -> {path under emails/: SHA-256}, for every template it may send
    templates: dict[str, dict[str, str]] = field(default_factory=dict)

    def utm_for(self, variant: str = "") -> dict[str, Any]:
        """The UTM parameters of the links in one variant's email (``content`` defaults to the
        variant id, or ``email`` without a test); empty when the broadcast asks for none."""
        if not self.utm:
            return {}
        return {**self.utm, "content": self.utm.get("content") or variant or NO_VARIANT}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BroadcastPlan:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def plan_version(values: dict[str, Any]) -> str:
    """A short content hash: equal plans have equal versions."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _utm(broadcast: Broadcast) -> dict[str, Any]:
    return broadcast.utm.plan_values(broadcast.id) if broadcast.utm is not None else {}


def compile_broadcast(
    broadcast: Broadcast, templates: dict[str, dict[str, str]] | None = None
) -> BroadcastPlan:
    """The plan of ``broadcast``; ``templates`` maps each template it names to its files'
    hashes (``campaigns.templates.TemplateSources.files``), as a workspace load finds them."""
    email = broadcast.email
    variants = []
    if broadcast.ab_test is not None:
        for v in broadcast.ab_test.variants:
            variants.append(
                {
                    "id": v.id,
                    "subject": v.subject if v.subject is not None else email.subject,
                    "template": v.template if v.template is not None else email.template,
                    "preheader": v.preheader if v.preheader is not None else email.preheader,
                }
            )
    send_at = ""
    if isinstance(broadcast.send_at, datetime):
        send_at = broadcast.send_at.isoformat()
    cap = broadcast.frequency_cap
    known = templates or {}
    values: dict[str, Any] = {
        "broadcast_id": broadcast.id,
        "name": broadcast.name,
        "version": "",
        "template": email.template,
        "subject": email.subject,
        "preheader": email.preheader,
        "from_addr": email.from_ or "",
        "reply_to": email.reply_to or "",
        "track": email.track,
        "audience": broadcast.audience or "",
        "topic": broadcast.topic or "",
        "send_at": send_at,
        "local_time": broadcast.in_contact_timezone,
        "rate": float(broadcast.rate or 0.0),
        "cap_max": cap.max if cap else 0,
        "cap_seconds": cap.per.total_seconds() if cap else 0.0,
        "variants": variants,
        "ab_sample_percent": broadcast.ab_test.sample if broadcast.ab_test else 0,
        "ab_metric": broadcast.ab_test.metric if broadcast.ab_test else "",
        "ab_wait_seconds": broadcast.ab_test.wait.total_seconds() if broadcast.ab_test else 0.0,
        "utm": _utm(broadcast),
        "templates": {
            name: dict(known[name]) for name in sorted(broadcast.templates()) if name in known
        },
    }
    values["version"] = plan_version(values)
    return BroadcastPlan(**values)
