"""The campaign language: what a marketer may write in a campaign, form or workspace file.

The models forbid unknown keys so a typo is an error with a hint, not a silently ignored line.
A step is a mapping with an ``id``, exactly one kind key (``send_email``, ``wait`` ...) and an
optional ``next``; without ``next`` a step continues with the one below it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from campaigns._base import Duration as Duration
from campaigns._base import Identifier as Identifier
from campaigns._base import Strict
from campaigns.consent import ConsentConfig
from campaigns.deliverability import Deliverability
from campaigns.webhooks_out import WebhookEndpointConfig

__all__ = [
    "FORM_RESERVED_NAMES",
    "STEP_KINDS",
    "TRIGGER_KINDS",
    "AutoWinner",
    "Branch",
    "Campaign",
    "Case",
    "Condition",
    "Duration",
    "ExitStep",
    "FormDefinition",
    "FormField",
    "FrequencyCap",
    "Goal",
    "Goto",
    "NotifySales",
    "Reentry",
    "SalesConfig",
    "SendEmail",
    "SendWindow",
    "Split",
    "Step",
    "Topic",
    "Trigger",
    "UpdateContact",
    "Variant",
    "Wait",
    "WaitFor",
    "Webhook",
    "WorkspaceConfig",
]

_Strict = Strict


Condition = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="a condition, e.g. 'contact.score >= 50 and has_tag(\"vip\")'",
    ),
]
EventName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
FieldName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# infinity and NaN are not values a marketer means, and JSON cannot store them
FieldValue = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool


def _exactly_one(model: BaseModel, names: tuple[str, ...], what: str) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise PydanticCustomError(
            what,
            "give exactly one of {names} (found {found})",
            {"names": ", ".join(repr(n) for n in names), "found": ", ".join(given) or "none"},
        )


TRIGGER_KINDS = ("form", "event", "tag_added", "field_changed", "segment_entered", "manual")


class Trigger(_Strict):
    """What enrols a contact: exactly one kind. ``manual: true`` means only the API, the CLI or
    a bulk import enrols (the other kinds may be enrolled manually too)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"oneOf": [{"required": [k]} for k in TRIGGER_KINDS]},
    )

    form: Identifier | None = None
    event: EventName | None = None
    where: Condition | None = Field(
        default=None, description="with event: a filter on the event, e.g. 'properties.total > 50'"
    )
    tag_added: Identifier | None = None
    field_changed: FieldName | None = None
    segment_entered: Condition | None = Field(
        default=None, description="a condition on the contact; entering means it became true"
    )
    manual: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        _exactly_one(self, TRIGGER_KINDS, "trigger")
        if self.where is not None and self.event is None:
            raise PydanticCustomError("trigger_where", "'where' filters an 'event' trigger only")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in TRIGGER_KINDS if getattr(self, k) is not None)


class SendEmail(_Strict):
    template: Identifier
    subject: str = Field(min_length=1, max_length=300)
    preheader: str = Field(default="", max_length=300)
    from_: str | None = Field(
        default=None, alias="from", min_length=3, description="default: the workspace's sender"
    )
    reply_to: str | None = Field(default=None, min_length=3)
    track: bool = Field(default=True, description="open pixel and click tracking")


TimeOfDay = Annotated[
    str,
    Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="24-hour HH:MM", examples=["09:00"]),
]


class Wait(_Strict):
    """Pause: for a duration, until a time of day or a date, or relative to a date field of the
    contact (``until_field: webinar_at`` with ``before: 1h``)."""

    duration: Duration | None = None
    until_time: TimeOfDay | None = Field(
        default=None, description="the next time this time of day comes, in the contact's zone"
    )
    until_date: datetime | None = Field(default=None, description="ISO 8601 with a time zone")
    until_field: FieldName | None = Field(
        default=None, description="a contact field holding an ISO 8601 date-time"
    )
    before: Duration | None = None
    after: Duration | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Wait:
        _exactly_one(self, ("duration", "until_time", "until_date", "until_field"), "wait")
        if (self.before is not None or self.after is not None) and self.until_field is None:
            raise PydanticCustomError("wait_offset", "'before'/'after' go with 'until_field'")
        if self.before is not None and self.after is not None:
            raise PydanticCustomError("wait_offset", "give 'before' or 'after', not both")
        if self.until_date is not None and self.until_date.tzinfo is None:
            raise PydanticCustomError(
                "wait_tz", "until_date needs a time zone, e.g. 2026-12-01T09:00:00+01:00"
            )
        return self


class WaitFor(_Strict):
    """Wait until the contact opens or clicks an earlier email, or an event arrives; or time out."""

    open: Identifier | None = Field(default=None, description="id of a send_email step")
    click: Identifier | None = Field(default=None, description="id of a send_email step")
    event: EventName | None = None
    where: Condition | None = Field(default=None, description="with event: a filter on it")
    timeout: Duration
    on_event: Identifier
    on_timeout: Identifier

    @model_validator(mode="after")
    def _one_kind(self) -> WaitFor:
        _exactly_one(self, ("open", "click", "event"), "wait_for")
        if self.where is not None and self.event is None:
            raise PydanticCustomError("wait_for_where", "'where' filters an 'event' wait only")
        return self


class Case(_Strict):
    when: Condition
    goto: Identifier


class Branch(_Strict):
    """The first case whose condition holds decides; none does: ``else``."""

    cases: list[Case] = Field(min_length=1, max_length=50)
    else_: Identifier = Field(alias="else")


class Variant(_Strict):
    name: Identifier
    percent: int = Field(ge=1, le=100)
    goto: Identifier


class AutoWinner(_Strict):
    """After ``after``, send everyone still to come down the variant with the best ``metric``."""

    metric: Literal["open_rate", "click_rate", "conversion_rate"]
    after: Duration
    min_sample: int = Field(default=100, ge=1)


class Split(_Strict):
    """A/B/n: each contact lands in one variant, the same one every time (hash of contact and
    step), in proportion to ``percent``."""

    variants: list[Variant] = Field(min_length=2, max_length=10)
    auto_winner: AutoWinner | None = None


class UpdateContact(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

    add_tags: list[Identifier] = Field(default_factory=list)
    remove_tags: list[Identifier] = Field(default_factory=list)
    set_fields: dict[FieldName, FieldValue] = Field(default_factory=dict)
    unset_fields: list[FieldName] = Field(default_factory=list)
    add_score: int | None = Field(default=None, ge=-1000, le=1000)

    @model_validator(mode="after")
    def _not_empty(self) -> UpdateContact:
        if not (
            self.add_tags
            or self.remove_tags
            or self.set_fields
            or self.unset_fields
            or self.add_score
        ):
            raise PydanticCustomError("update_contact", "nothing to update")
        return self


def _https(value: str) -> str:
    if not re.fullmatch(r"https://[^\s/]+(/\S*)?", value):
        raise PydanticCustomError("webhook_url", "must be an https:// URL")
    return value


HttpsUrl = Annotated[str, Field(max_length=2000), AfterValidator(_https)]

Channel = Literal["email", "chat"]


def _email_only() -> list[Channel]:
    return ["email"]


class NotifySales(_Strict):
    """Tell sales about this contact now (email and/or chat), assigning an owner if it has none."""

    message: str = Field(min_length=1, max_length=1000)
    via: list[Channel] = Field(default_factory=_email_only, min_length=1)


class Webhook(_Strict):
    """POST the contact and journey to a URL whose host the workspace allowlists."""

    url: HttpsUrl = Field(examples=["https://hooks.example.com/drip"])

    body: dict[str, FieldValue] = Field(default_factory=dict)


class Goto(_Strict):
    """Jump to another step; ``max_times`` stops a loop (after it, the journey carries on below)."""

    step: Identifier
    max_times: int = Field(default=3, ge=1, le=100)


class ExitStep(_Strict):
    """Ends the journey here."""

    reason: str = Field(default="", max_length=200)


STEP_KINDS = (
    "send_email",
    "wait",
    "wait_for",
    "branch",
    "split",
    "update_contact",
    "notify_sales",
    "webhook",
    "goto",
    "exit",
)


class Step(_Strict):
    # Editors learn "exactly one kind" too, through JSON Schema.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"oneOf": [{"required": [k]} for k in STEP_KINDS]},
    )

    id: Identifier
    next: Identifier | None = None
    send_email: SendEmail | None = None
    wait: Wait | None = None
    wait_for: WaitFor | None = None
    branch: Branch | None = None
    split: Split | None = None
    update_contact: UpdateContact | None = None
    notify_sales: NotifySales | None = None
    webhook: Webhook | None = None
    goto: Goto | None = None
    exit: ExitStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _exit_may_be_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and "exit" in data and data["exit"] is None:
            data = {**data, "exit": {}}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise PydanticCustomError(
                "step_kind",
                "a step needs exactly one of {kinds} (found {found})",
                {"kinds": ", ".join(STEP_KINDS), "found": ", ".join(kinds) or "none"},
            )
        if self.next is not None and kinds[0] in ("wait_for", "branch", "split", "goto", "exit"):
            raise PydanticCustomError(
                "step_next",
                "a {kind} step decides where to go itself; remove 'next'",
                {"kind": kinds[0]},
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


class Reentry(_Strict):
    after: Duration


class Goal(_Strict):
    """Reaching the goal ends the journey early and counts as a conversion."""

    event: EventName | None = None
    where: Condition | None = None
    when: Condition | None = Field(default=None, description="a condition on the contact")

    @model_validator(mode="after")
    def _one_kind(self) -> Goal:
        _exactly_one(self, ("event", "when"), "goal")
        if self.where is not None and self.event is None:
            raise PydanticCustomError("goal_where", "'where' filters an 'event' goal only")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class SendWindow(_Strict):
    """Emails go out only on these days between these hours, in the contact's time zone (field
    ``timezone``) or else the workspace's; a send that falls outside waits for the next window."""

    days: list[Weekday] = Field(default_factory=_weekdays, min_length=1)
    start: TimeOfDay = "09:00"
    end: TimeOfDay = "17:00"

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise PydanticCustomError("send_window", "'start' must be before 'end'")
        return self


class FrequencyCap(_Strict):
    """At most ``max`` marketing emails per contact per ``per``, counting every campaign."""

    max: int = Field(ge=1, le=1000)
    per: Duration


class Utm(_Strict):
    """UTM parameters appended to the campaign's links, so web analytics credits the visits to
    it. Parameters a link already has are kept as the author wrote them."""

    source: str = Field(default="drip", min_length=1, max_length=100)
    medium: str = Field(default="email", min_length=1, max_length=100)
    campaign: str | None = Field(default=None, max_length=100, description="default: its id")
    content: str | None = Field(
        default=None, max_length=100, description="default: the id of the sending step"
    )
    term: str | None = Field(default=None, max_length=100)
    domains: list[str] = Field(
        default_factory=list,
        description="only links to these hosts (and their subdomains); default: every web link",
    )

    def plan_values(self, default_campaign: str) -> dict[str, Any]:
        """As a compiled plan keeps them: ``campaign`` defaults to the campaign's (or
        broadcast's) id; an empty ``content`` means the sending step's (or variant's) id."""
        return {
            "source": self.source,
            "medium": self.medium,
            "campaign": self.campaign or default_campaign,
            "content": self.content or "",
            "term": self.term or "",
            "domains": [d.lower() for d in self.domains],
        }


class Campaign(_Strict):
    """A campaign file: who enters (trigger, audience) and what happens to them (steps, top to
    bottom), when it ends early (goal, exit_when) and how politely it sends (window, cap)."""

    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    tags: list[Identifier] = Field(default_factory=list)
    status: Literal["active", "paused", "draft", "archived"] = "active"
    kind: Literal["marketing", "transactional"] = Field(
        default="marketing",
        description="marketing email goes only to contacts with marketing consent (contacts "
        "the events API created have none until it is recorded); transactional email (an "
        "order confirmation, a receipt: what the contact asked for) needs none",
    )
    without_consent: Literal["allowed"] | None = Field(
        default=None,
        description="'allowed': this marketing campaign may also email contacts without "
        "marketing consent (a deliberate decision: say why in a comment)",
    )
    trigger: Trigger
    audience: Condition | None = Field(
        default=None, description="only contacts for whom this holds may enter"
    )
    reentry: Literal["never", "always"] | Reentry = Field(
        default="never", description="may a contact enter again: never, always, or {after: 90d}"
    )
    goal: Goal | None = None

    @field_validator("reentry", mode="before")
    @classmethod
    def _reentry(cls, value: object) -> object:
        # One clear message instead of one per member of the union.
        if value in ("never", "always") or isinstance(value, dict):
            return value
        raise PydanticCustomError("reentry", "must be never, always or {after: <duration>}")

    exit_when: list[Condition] = Field(
        default_factory=list,
        description="conditions that end the journey (unsubscribed, bounced: always)",
    )
    send_window: SendWindow | None = None
    frequency_cap: FrequencyCap | None = None
    utm: Utm | None = Field(default=None, description="UTM parameters on its links")
    steps: list[Step] = Field(min_length=1, max_length=500)


class FormField(_Strict):
    name: Identifier
    label: str = Field(min_length=1)
    type: Literal["email", "text", "tel"] = "text"
    required: bool = False
    max_length: int = Field(default=200, ge=1, le=2000)


class FormDefinition(_Strict):
    """A public web form: its fields, its consent text and what the visitor sees afterwards."""

    id: Identifier
    title: str = Field(min_length=1)
    intro: str = ""
    fields: list[FormField] = Field(min_length=1)
    consent: str = Field(min_length=1, description="the consent text shown next to the button")
    submit: str = "Subscribe"
    thank_you: str = "Thank you! Please check your inbox."
    hidden: dict[Identifier, Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict,
        description="hidden fields: name -> default value, stored on the contact; the page "
        "takes a value from its query string (?utm_source=...), so never trust them",
    )
    double_opt_in: bool = Field(
        default=False,
        description="send a confirmation email first; the contact is subscribed and the "
        "form's campaigns start only when the link in it is confirmed",
    )
    redirect: HttpsUrl | None = Field(
        default=None,
        description="where a browser goes after a successful post instead of the thank-you "
        "page; its host must be in the workspace's form_redirect_hosts",
    )

    @model_validator(mode="after")
    def _has_email(self) -> FormDefinition:
        if not any(f.name == "email" and f.type == "email" for f in self.fields):
            raise PydanticCustomError("form_email", "a form needs a field 'email' of type email")
        names = [f.name for f in self.fields] + list(self.hidden)
        for name in names:
            if name in FORM_RESERVED_NAMES or names.count(name) > 1:
                raise PydanticCustomError(
                    "form_field_name",
                    "field name {name!r} is used twice or reserved ({reserved})",
                    {"name": name, "reserved": ", ".join(sorted(FORM_RESERVED_NAMES))},
                )
        return self


#: Names a form posts besides its fields: the consent box, the honeypot and the redirect.
FORM_RESERVED_NAMES = frozenset({"consent", "website", "redirect"})


class Topic(_Strict):
    """A subject a contact can choose on the preference page; stored as the tag ``topic:<id>``,
    and one left unticked there as ``topic-left:<id>`` (a broadcast to the topic skips them)."""

    id: Identifier
    label: str = Field(min_length=1, max_length=200)


class SalesConfig(_Strict):
    """Where lead alerts reach the sales team (owners and teams are in ``sales.yaml``)."""

    email: str | None = Field(
        default=None, min_length=3, description="the team's inbox: alerts for leads without owner"
    )
    chat_webhook: HttpsUrl | None = Field(
        default=None,
        description="a Slack-compatible incoming webhook; its host must be in webhook_hosts",
    )
    crm_webhook: HttpsUrl | None = Field(
        default=None,
        description="a CRM endpoint that gets each alert as HMAC-signed JSON (Drip-Signature); "
        "its host must be in webhook_hosts",
    )


class SuppressionConfig(_Strict):
    """What is suppressed besides the addresses and domains on the list (``drip suppressions``)."""

    role_addresses: bool = Field(
        default=True,
        description="no marketing email to role addresses (abuse@, postmaster@, noreply@ ...); "
        "transactional email still reaches them",
    )


class WorkspaceConfig(_Strict):
    """``workspace.yaml``: who the emails come from and the postal address every email carries."""

    name: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=3)
    reply_to: str | None = None
    postal_address: str = Field(min_length=5, description="required in every marketing email")
    unsubscribe_mailto: str | None = None
    timezone: str = Field(default="UTC", description="for send windows and times of day")
    webhook_hosts: list[str] = Field(
        default_factory=list,
        description="hosts a webhook step may POST to ('*.example.com' for subdomains)",
    )
    sales: SalesConfig = Field(default_factory=SalesConfig)
    form_redirect_hosts: list[str] = Field(
        default_factory=list,
        description="hosts a form may redirect a browser to after a post (exact host names)",
    )
    form_origins: list[str] = Field(
        default_factory=list,
        description="sites allowed to post forms (https://shop.example.com), checked against "
        "the browser's Origin or Referer; empty: any site may embed the forms",
    )
    topics: list[Topic] = Field(
        default_factory=list, description="topics contacts can choose on the preference page"
    )
    layout: Identifier | None = Field(
        default=None,
        description="the default email layout: emails/layouts/NAME.mjml (default: built in)",
    )
    suppressions: SuppressionConfig = Field(default_factory=SuppressionConfig)
    deliverability: Deliverability = Field(
        default_factory=Deliverability,
        description="pacing by receiving domain, deferral backoff and warm-up",
    )
    consent: ConsentConfig = Field(
        default_factory=ConsentConfig,
        description="what contacts created by the events API get: marketing consent or not",
    )
    webhooks: list[WebhookEndpointConfig] = Field(
        default_factory=list,
        description="receivers of drip's events (outgoing webhooks), synced at each deploy",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "timezone", "unknown time zone {zone!r} (e.g. Europe/Berlin)", {"zone": value}
            ) from None
        return value
