"""The workspace's ``consent:`` section: what contacts created by the events API may be sent.

A shop's events (``identify``, ``Order Completed``, ``Cart Abandoned``) create contacts who
never ticked a box on one of our forms, so by default they get no marketing consent: only
transactional campaigns, and marketing ones that say ``without_consent: allowed``, email them
until consent is recorded (a form, an import naming its source, the API). A shop that asks for
consent at its own checkout, and sends only those who agreed, says so here, and its contacts
are created with consent *implied* (recorded as such, with the time and the caller's IP).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EVENTS_API_CONSENT", "ConsentConfig"]

#: what ``consent.events_api`` may say
EVENTS_API_CONSENT = ("no_consent", "shop_collects_consent")


class ConsentConfig(BaseModel):
    """``consent:`` in workspace.yaml."""

    # as strict as the language's other models: a typo is an error, not an ignored line
    model_config = ConfigDict(extra="forbid", frozen=True)

    events_api: Literal["no_consent", "shop_collects_consent"] = Field(
        default="no_consent",
        description="contacts the events API creates: no_consent (marketing campaigns skip "
        "them until consent is recorded) or shop_collects_consent (the shop asks for consent "
        "itself and sends only contacts who gave it: their consent is recorded as implied)",
    )
