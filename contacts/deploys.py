"""Deployed campaign versions: what new enrolments get.

Plans are stored as the JSON the campaigns package produced; this package does not interpret
them (it sits below ``campaigns`` in nothing and beside it in the import graph), it only keeps
the history and answers "what is live for this trigger". The email template files a plan names
by hash are stored beside them (``template_sources``), once per distinct text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from contacts._sql import insert_ignore
from contacts.models import CampaignVersion, TemplateSource

__all__ = [
    "current_versions",
    "find_version",
    "live_for_trigger",
    "record_deployment",
    "record_template_sources",
    "template_sources",
    "version_history",
]


def _latest() -> SelectOfScalar[CampaignVersion]:
    """The latest deployment row of each campaign."""
    latest = (
        select(col(CampaignVersion.campaign_id), sa.func.max(CampaignVersion.id).label("id"))
        .group_by(col(CampaignVersion.campaign_id))
        .subquery()
    )
    return select(CampaignVersion).join(latest, col(CampaignVersion.id) == latest.c.id)


def current_versions(session: Session) -> dict[str, CampaignVersion]:
    """The latest deployment of every campaign ever deployed, by campaign id."""
    return {row.campaign_id: row for row in session.exec(_latest()).all()}


def record_deployment(
    session: Session,
    *,
    campaign_id: str,
    version: str,
    status: str,
    trigger_kind: str,
    trigger_value: str,
    plan: Mapping[str, Any],
    source: str = "",
) -> CampaignVersion | None:
    """Add a deployment row unless the latest one already has this version and status; returns
    the new row, or None when nothing changed (so deploying twice is a no-op)."""
    # Serialise deploys of one campaign: a row lock on its latest deployment (PostgreSQL); SQLite
    # writers are serialised anyway.
    current = session.exec(
        select(CampaignVersion)
        .where(CampaignVersion.campaign_id == campaign_id)
        .order_by(col(CampaignVersion.id).desc())
        .limit(1)
        .with_for_update()
    ).first()
    if current is not None and (current.version, current.status) == (version, status):
        return None
    row = CampaignVersion(
        campaign_id=campaign_id,
        version=version,
        status=status,
        trigger_kind=trigger_kind,
        trigger_value=trigger_value,
        plan=dict(plan),
        source=source,
    )
    session.add(row)
    session.flush()
    return row


def live_for_trigger(session: Session, kind: str, value: str) -> Sequence[CampaignVersion]:
    """Active campaigns whose latest deployment is triggered by ``kind``/``value``, by id.

    On the path of every form post and event, so the database filters: only the matching plans'
    JSON is read, however many campaigns are deployed."""
    return session.exec(
        _latest()
        .where(
            CampaignVersion.status == "active",
            CampaignVersion.trigger_kind == kind,
            CampaignVersion.trigger_value == value,
        )
        .order_by(col(CampaignVersion.campaign_id))
    ).all()


def version_history(session: Session, campaign_id: str) -> Sequence[CampaignVersion]:
    """Every deployment of one campaign, newest first."""
    return session.exec(
        select(CampaignVersion)
        .where(CampaignVersion.campaign_id == campaign_id)
        .order_by(col(CampaignVersion.id).desc())
    ).all()


def find_version(session: Session, campaign_id: str, version: str) -> CampaignVersion | None:
    """The deployment row of one plan version (a running journey's), newest if redeployed."""
    return session.exec(
        select(CampaignVersion)
        .where(CampaignVersion.campaign_id == campaign_id, CampaignVersion.version == version)
        .order_by(col(CampaignVersion.id).desc())
        .limit(1)
    ).first()


def record_template_sources(session: Session, texts: Mapping[str, str]) -> int:
    """Store template texts by their hash (computed by the caller, ``campaigns.templates``);
    a text already stored is left alone, so deploys racing each other agree. Returns how many
    were new."""
    return sum(
        insert_ignore(session, TemplateSource, {"hash": key, "source": text}, ["hash"])
        for key, text in sorted(texts.items())
    )


def template_sources(session: Session, hashes: Iterable[str]) -> dict[str, str]:
    """The stored texts of ``hashes`` (those not stored are absent from the answer)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = session.exec(select(TemplateSource).where(col(TemplateSource.hash).in_(wanted))).all()
    return {row.hash: row.source for row in rows}
