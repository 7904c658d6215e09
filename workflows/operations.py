"""Operators' controls over running journeys: pause, resume or cancel one, many or a campaign.

Signals go out with bounded concurrency; a campaign-wide action records the campaign's new
status first, so the router starts no new journey while the running ones are being told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from contacts import deploys, repository
from contacts.db import session_scope
from contacts.models import EnrolmentState
from workflows.bulk import BulkError, CampaignNotLive
from workflows.client import control_journey

__all__ = ["control_campaign", "control_many"]


async def control_many(
    client: Client,
    workflow_ids: Iterable[str],
    action: str,
    reason: str = "",
    *,
    concurrency: int = 20,
) -> dict[str, bool | str]:
    """Signal ``action`` (pause, resume, cancel) to each journey, ``concurrency`` at a time:
    True when signalled, False when it had already finished, else the error."""
    limit = asyncio.Semaphore(max(1, concurrency))
    out: dict[str, bool | str] = {}

    async def one(workflow_id: str) -> None:
        async with limit:
            try:
                out[workflow_id] = await control_journey(client, workflow_id, action, reason)
            except Exception as exc:
                out[workflow_id] = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(one(w) for w in dict.fromkeys(workflow_ids)))
    return out


#: the campaign status each campaign-wide action records
_STATUS_AFTER = {"pause": "paused", "resume": "active", "cancel": "paused"}


def _set_status(engine: Engine, campaign_id: str, action: str, source: str) -> list[str]:
    """Record the campaign's new status (same plan) and return its running journeys."""
    with session_scope(engine) as session:
        row = deploys.current_versions(session).get(campaign_id)
        if row is None:
            raise CampaignNotLive(f"campaign '{campaign_id}' is not deployed")
        if action == "resume" and row.status not in ("paused", "active"):
            raise CampaignNotLive(
                f"campaign '{campaign_id}' is {row.status}, not paused; deploy it with "
                "`status: active` to bring it back"
            )
        status = _STATUS_AFTER[action]
        if row.status != "active" and action == "cancel":
            status = row.status  # cancel stops new journeys; an archived campaign stays archived
        deploys.record_deployment(
            session,
            campaign_id=campaign_id,
            version=row.version,
            status=status,
            trigger_kind=row.trigger_kind,
            trigger_value=row.trigger_value,
            plan=row.plan,
            source=source,
        )
        return _running(session, campaign_id)


def _running(session: Session, campaign_id: str) -> list[str]:
    return [
        e.workflow_id
        for e in repository.list_enrolments(session, campaign_id=campaign_id)
        if e.state == EnrolmentState.running
    ]


async def control_campaign(
    client: Client,
    engine: Engine,
    campaign_id: str,
    action: str,
    reason: str = "",
    *,
    source: str = "",
    concurrency: int = 20,
) -> dict[str, bool | str]:
    """Pause, resume or cancel a whole campaign: its status first (paused: the router starts no
    new journey; resume: active), then the signal to every running journey.

    A journey whose enrolment was recorded just before the status changed may not have started
    yet when it is listed; a second listing catches those the first one missed."""
    if action not in _STATUS_AFTER:
        raise BulkError(f"unknown action {action!r}")
    running = await asyncio.to_thread(_set_status, engine, campaign_id, action, source)
    out = await control_many(client, running, action, reason, concurrency=concurrency)

    def again() -> list[str]:
        with session_scope(engine) as session:
            return [w for w in _running(session, campaign_id) if w not in out]

    if late := await asyncio.to_thread(again):
        out.update(await control_many(client, late, action, reason, concurrency=concurrency))
    return out
