"""What an event about a broadcast email says about its broadcast.

A broadcast's emails are ordinary outbox rows filed under the campaign id ``broadcast:<id>``
(``contacts.broadcast_models.broadcast_campaign_id``), with the A/B variant (or ``email``) as
their step and the send (``broadcast:<id>:<n>``, a ``BroadcastWorkflow``) as their workflow.
Every event recorded about such a message (an open or click from the hit consumer; a bounce,
complaint or delivery from an ESP webhook or the SMTP refusal; a one-click unsubscribe from the
email's link) carries ``properties.broadcast`` (the broadcast id) and ``properties.variant``,
so the condition language reads them where it reads an event's properties: a campaign trigger
``{event: click, where: 'properties.broadcast == "black-friday"'}``, a scoring rule's
``where``. Opens and clicks of a broadcast are also *named* after it (``Event.name`` =
``broadcast:<id>``, where a journey's carry the step id), so a scoring rule's ``name:`` can
pick one broadcast as it picks a form or a page.

Why properties and not a column: events are the contact's history, read by conditions that only
see ``properties.*``; a column would need the language to learn a new field, a migration, and
every reader to join it. The values are ours (from the outbox row), never the sender's.

Why these emails are never routed like a journey's: the message's ``workflow_id`` names the
send's ``BroadcastWorkflow``, which has no journey signal; signalling it would grow one
workflow's history by one event per open of a million-recipient mailing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BROADCAST_PREFIX",
    "broadcast_id_of",
    "broadcast_properties",
    "event_name",
    "is_broadcast",
    "with_broadcast",
]

#: How the outbox files a broadcast's emails: ``campaign_id`` = ``broadcast:<broadcast id>``.
#: No campaign id can contain ':', so the prefix never names a campaign.
BROADCAST_PREFIX = "broadcast:"


def is_broadcast(campaign_id: str) -> bool:
    """Whether an outbox row (by its ``campaign_id``) is a broadcast's email, not a journey's."""
    return campaign_id.startswith(BROADCAST_PREFIX)


def broadcast_id_of(campaign_id: str) -> str | None:
    """The broadcast id of a broadcast's ``campaign_id``; None for a journey's."""
    return campaign_id[len(BROADCAST_PREFIX) :] if is_broadcast(campaign_id) else None


def broadcast_properties(campaign_id: str, step_id: str) -> dict[str, str]:
    """``{"broadcast": id, "variant": step}`` for a broadcast's message, ``{}`` for a journey's.
    ``variant`` is the A/B variant id, or ``email`` for a broadcast without a test."""
    broadcast = broadcast_id_of(campaign_id)
    return {} if broadcast is None else {"broadcast": broadcast, "variant": step_id}


def with_broadcast(
    properties: Mapping[str, Any] | None, campaign_id: str, step_id: str
) -> dict[str, Any]:
    """The event's properties with its message's broadcast added; ours win over a provider's
    fields of the same name, so nobody outside can file an event under another broadcast."""
    return {**(properties or {}), **broadcast_properties(campaign_id, step_id)}


def event_name(campaign_id: str, step_id: str) -> str:
    """The ``name`` of an open or click of a message: the step of a journey's email, the
    campaign id ``broadcast:<id>`` of a broadcast's (its variant is in the properties)."""
    return campaign_id if is_broadcast(campaign_id) else step_id
