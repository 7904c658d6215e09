"""workspace.yaml's ``webhooks:``: outgoing event webhook endpoints kept with the campaigns.

Each deploy makes the database's workspace endpoints what this list says (by ``name``);
endpoints registered by the API or CLI are not touched. A secret never goes in the YAML (it
would end up in git): ``secret_env`` names the environment variable of the deploying process
that holds the ``whsec_`` secret; without it drip generates one, which ``drip webhooks rotate``
replaces and prints. Event type names are checked at deploy against the ones drip emits.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from campaigns._base import Identifier, Strict
from campaigns.conditions import ConditionError, parse_event_filter

__all__ = ["WebhookEndpointConfig"]

_ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,99}$"


class WebhookEndpointConfig(Strict):
    """One receiver of drip's events."""

    name: Identifier
    url: str = Field(pattern=r"^https://[^\s@/]+(/\S*)?$", max_length=2000)
    events: list[Annotated[str, Field(max_length=40)]] = Field(
        min_length=1, description="event types (message.sent, contact.created, ...) or '*'"
    )
    owner: str = Field(
        min_length=3, max_length=320, description="emailed if the endpoint is disabled"
    )
    filter: str | None = Field(
        default=None, description="a condition on the event's data: properties.NAME ..."
    )
    secret_env: str | None = Field(
        default=None, pattern=_ENV_NAME, description="environment variable with the secret"
    )

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_event_filter(value)
        except ConditionError as exc:
            raise ValueError(str(exc)) from None
        return value
