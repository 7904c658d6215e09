"""The workspace's ``deliverability:`` section: how fast each receiving domain may be mailed.

Gmail, Microsoft and Yahoo each limit how fast they accept mail from one sender and answer an
excess with a deferral (``421 4.7.0 Try again later``). So mail is paced by the *receiving*
domain, in groups that share one mail system (gmail.com and googlemail.com are one Google), with
a limit per group for the whole deployment: every worker process books its sends against the
same limit in the database (``contacts.pacing``).

A group not named falls in ``default``. The built-in groups below apply unless the workspace
names a group of the same name, which replaces it; a workspace adds its own groups beside them
(a corporate domain that takes little mail, say). ``per_second: 0`` or ``connections: 0`` means
no limit of that kind.

A deferral slows only its group: the group waits ``backoff.first`` (doubling with each deferral
in a row, up to ``backoff.max``), then its pace, halved (down to ``backoff.slowest`` of the
limit), climbs back to the full limit over ``backoff.recover``; a group without a limit resumes
at ``backoff.resume_per_second`` and speeds up until, ``recover`` later, it has none again.
``warmup`` caps what each group gets per day while a new sending domain or IP builds its
reputation.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from campaigns._base import Duration, Identifier, Strict

__all__ = ["BUILT_IN_GROUPS", "Backoff", "Deliverability", "DomainLimit", "Warmup"]

DomainName = Annotated[
    str,
    Field(
        min_length=3,
        max_length=253,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$",
        description="a receiving domain in lower case, e.g. gmail.com",
    ),
]


class DomainLimit(Strict):
    """One group of receiving domains and the most it may be sent, shared by all workers."""

    domains: list[DomainName] = Field(
        default_factory=list, description="the domains of this group (none for default)"
    )
    per_second: float = Field(
        default=0, ge=0, le=100_000, description="messages a second at most; 0: no limit"
    )
    connections: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="SMTP transactions to this group at once, across all workers; 0: no limit",
    )


#: The big mailbox providers, each one group so a deferral from one slows all its domains and
#: none of the others. No limits by default: what each takes depends on the sender's standing
#: (set ``per_second`` and ``connections`` for them in the workspace); a deferral still makes
#: the group wait and resume slowly (``Backoff``).
BUILT_IN_GROUPS: dict[str, DomainLimit] = {
    "google": DomainLimit(domains=["gmail.com", "googlemail.com"]),
    "microsoft": DomainLimit(
        domains=["outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "live.co.uk"]
    ),
    "yahoo": DomainLimit(
        domains=["yahoo.com", "ymail.com", "aol.com", "yahoo.co.uk", "yahoo.fr", "rocketmail.com"]
    ),
    "default": DomainLimit(),
}


class Backoff(Strict):
    """What a deferral does to its group."""

    first: Duration = Field(
        default=timedelta(minutes=1), description="the wait after a first deferral"
    )
    max: Duration = Field(
        default=timedelta(minutes=30), description="the longest wait, after deferrals in a row"
    )
    recover: Duration = Field(
        default=timedelta(minutes=10),
        description="how long the pace takes to climb from its slowest back to the limit",
    )
    slowest: float = Field(
        default=0.1, gt=0, le=1, description="the slowest pace, as a fraction of the limit"
    )
    resume_per_second: float = Field(
        default=5.0,
        gt=0,
        le=100_000,
        description="a group without a per_second limit resumes at this pace after the wait, "
        "and speeds up until, after recover, it has no limit again",
    )


class Warmup(Strict):
    """A new sending domain or IP: at most ``per_day[N-1]`` messages on day N, per group."""

    start: date = Field(description="day 1 of the warm-up, in the workspace's time zone")
    per_day: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1,
        description="the cap of each day from day 1; after the last day there is none",
    )

    def cap(self, day: date) -> int | None:
        """Day ``day``'s cap per group, or None (before the start there is no sending history
        to protect, after the last day the warm-up is over)."""
        index = (day - self.start).days
        if index < 0 or index >= len(self.per_day):
            return None
        return self.per_day[index]


class Deliverability(Strict):
    """``deliverability:`` in workspace.yaml."""

    domains: dict[Identifier, DomainLimit] = Field(
        default_factory=dict,
        description="limits per group of receiving domains; replaces a built-in group of the "
        "same name (google, microsoft, yahoo, default)",
    )
    backoff: Backoff = Field(default_factory=Backoff)
    warmup: Warmup | None = None

    @field_validator("domains")
    @classmethod
    def _default_has_no_domains(cls, value: dict[str, DomainLimit]) -> dict[str, DomainLimit]:
        if "default" in value and value["default"].domains:
            raise PydanticCustomError(
                "default_domains", "the default group takes every domain not named elsewhere"
            )
        return value

    @model_validator(mode="after")
    def _one_group_per_domain(self) -> Deliverability:
        seen: dict[str, str] = {}
        for name, group in self.groups().items():
            for domain in group.domains:
                if domain in seen:
                    raise PydanticCustomError(
                        "domain_twice",
                        "{domain} is in two groups: {first} and {second}",
                        {"domain": domain, "first": seen[domain], "second": name},
                    )
                seen[domain] = name
        return self

    def groups(self) -> dict[str, DomainLimit]:
        """Every group: the built-in ones, replaced or added to by the workspace's."""
        return {**BUILT_IN_GROUPS, **self.domains}
