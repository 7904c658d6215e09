"""The campaign language: what a marketer may write in a campaign, form or workspace file.

The models forbid unknown keys so a typo is an error with a hint, not a silently ignored line.
A step is a mapping with an ``id``, exactly one kind key (``send_email``, ``wait`` ...) and an
optional ``next``; without ``next`` a step continues with the one below it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator
from pydantic_core import PydanticCustomError

from campaigns.durations import DurationError, format_duration, parse_duration

__all__ = [
    "STEP_KINDS",
    "Campaign",
    "Duration",
    "ExitStep",
    "FormDefinition",
    "FormField",
    "SendEmail",
    "Step",
    "Trigger",
    "UpdateContact",
    "Wait",
    "WaitFor",
    "WorkspaceConfig",
]

Identifier = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_-]{0,79}$",
        description="lower-case letters, digits, '-' and '_', starting with a letter",
    ),
]


def _duration(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    Field(json_schema_extra={"type": "string", "examples": ["2d", "36h", "P2D"]}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """What enrols a contact: exactly one of a form submission or a named event."""

    form: Identifier | None = None
    event: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        if (self.form is None) == (self.event is None):
            raise PydanticCustomError("trigger", "give exactly one of 'form' or 'event'")
        return self


class SendEmail(_Strict):
    template: Identifier
    subject: str = Field(min_length=1, max_length=300)
    preheader: str = Field(default="", max_length=300)
    track: bool = Field(default=True, description="open pixel and click tracking")


class Wait(_Strict):
    duration: Duration


class WaitFor(_Strict):
    """Wait until the contact opens or clicks an earlier email, or an event arrives; or time out."""

    open: Identifier | None = Field(default=None, description="id of a send_email step")
    click: Identifier | None = Field(default=None, description="id of a send_email step")
    event: str | None = Field(default=None, min_length=1, max_length=200)
    timeout: Duration
    on_event: Identifier
    on_timeout: Identifier

    @model_validator(mode="after")
    def _one_kind(self) -> WaitFor:
        given = [k for k in ("open", "click", "event") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError("wait_for", "give exactly one of 'open', 'click' or 'event'")
        return self


class UpdateContact(_Strict):
    add_tags: list[Identifier] = Field(default_factory=list)
    remove_tags: list[Identifier] = Field(default_factory=list)
    set_fields: dict[str, str | int | float | bool] = Field(default_factory=dict)
    unset_fields: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> UpdateContact:
        if not (self.add_tags or self.remove_tags or self.set_fields or self.unset_fields):
            raise PydanticCustomError("update_contact", "nothing to update")
        return self


class ExitStep(_Strict):
    """Ends the journey here."""


STEP_KINDS = ("send_email", "wait", "wait_for", "update_contact", "exit")


class Step(_Strict):
    id: Identifier
    next: Identifier | None = None
    send_email: SendEmail | None = None
    wait: Wait | None = None
    wait_for: WaitFor | None = None
    update_contact: UpdateContact | None = None
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
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


class Campaign(_Strict):
    """A campaign file: who enters (trigger) and what happens to them (steps, top to bottom)."""

    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    status: Literal["active", "paused", "draft"] = "active"
    trigger: Trigger
    steps: list[Step] = Field(min_length=1)


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

    @model_validator(mode="after")
    def _has_email(self) -> FormDefinition:
        if not any(f.name == "email" and f.type == "email" for f in self.fields):
            raise PydanticCustomError("form_email", "a form needs a field 'email' of type email")
        return self


class WorkspaceConfig(_Strict):
    """``workspace.yaml``: who the emails come from and the postal address every email carries."""

    name: str = Field(min_length=1)
    from_: str = Field(alias="from", min_length=3)
    reply_to: str | None = None
    postal_address: str = Field(min_length=5, description="required in every marketing email")
    unsubscribe_mailto: str | None = None
