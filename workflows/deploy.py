"""Deploying a workspace: its compiled plans become the versions new enrolments get.

Deploy is explicit (``drip campaigns deploy``; ``drip dev`` deploys on start), so editing a YAML
file or an email template on a production machine changes nothing until someone decides it
should, and every deployment stays on record. A deployment records the exact template files its
emails are built from (the plan names them by hash, the texts go to ``template_sources``), so
journeys already running keep the plan and the templates they started with, and a template that
is new in this deploy sends at once, without restarting a worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from campaigns.diff import Change, diff_plans
from campaigns.plan import Plan, plan_from_dict
from campaigns.workspace import Workspace
from contacts import deploys
from contacts.db import session_scope
from contacts.errors import InvalidValue
from contacts.models import CampaignVersion
from contacts.webhook_endpoints import sync_workspace_endpoints

__all__ = ["Deployment", "deploy_workspace", "live_plans", "plan_of"]


@dataclass(frozen=True)
class Deployment:
    campaign_id: str
    old_version: str | None
    new_version: str
    old_status: str | None
    new_status: str
    changes: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return (self.old_version, self.old_status) != (self.new_version, self.new_status)


def plan_of(row: CampaignVersion) -> Plan:
    return plan_from_dict(row.plan)


def _pending(session: Session, workspace: Workspace) -> list[Deployment]:
    current = deploys.current_versions(session)
    out = []
    for campaign_id, plan in sorted(workspace.plans.items()):
        row = current.get(campaign_id)
        old = plan_of(row) if row is not None else None
        out.append(
            Deployment(
                campaign_id=campaign_id,
                old_version=row.version if row else None,
                new_version=plan.version,
                old_status=row.status if row else None,
                new_status=workspace.campaigns[campaign_id].status,
                changes=diff_plans(old, plan),
            )
        )
    return out


def deploy_workspace(
    engine: Engine, workspace: Workspace, *, dry_run: bool = False, source: str = ""
) -> list[Deployment]:
    """Deploy every campaign whose plan or status differs from what is live; with ``dry_run``
    only say what would change. Campaigns deleted from the workspace are not undeployed: set
    ``status: archived`` to stop new enrolments, so removing a file is never a silent stop."""
    with session_scope(engine) as session:
        pending = _pending(session, workspace)
        if not dry_run:
            sync_workspace_endpoints(session, webhook_entries(workspace))
            for d in pending:
                if d.changed:
                    plan = workspace.plans[d.campaign_id]
                    # the template files first: a worker that reads the row finds its files
                    deploys.record_template_sources(
                        session,
                        {
                            digest: workspace.template_texts[digest]
                            for files in plan.templates.values()
                            for digest in files.values()
                            if digest in workspace.template_texts
                        },
                    )
                    deploys.record_deployment(
                        session,
                        campaign_id=d.campaign_id,
                        version=plan.version,
                        status=d.new_status,
                        trigger_kind=plan.trigger_kind,
                        trigger_value=plan.trigger_value,
                        plan=plan.to_dict(),
                        source=source,
                    )
    return pending


def webhook_entries(workspace: Workspace) -> list[dict[str, Any]]:
    """workspace.yaml's ``webhooks:`` as ``sync_workspace_endpoints`` takes them, each secret
    read from its ``secret_env`` (missing there: a deploy error, not a generated secret the
    receiver does not know)."""
    entries = []
    for hook in workspace.config.webhooks:
        secret = None
        if hook.secret_env is not None:
            secret = os.environ.get(hook.secret_env)
            if not secret:
                raise InvalidValue(
                    f"webhooks.{hook.name}.secret_env", f"{hook.secret_env} is not set"
                )
        entries.append(
            {
                "name": hook.name,
                "url": hook.url,
                "events": hook.events,
                "owner": hook.owner,
                "filter": hook.filter,
                "secret": secret,
            }
        )
    return entries


def live_plan(session: Session, campaign_id: str) -> Plan | None:
    """The plan a new enrolment in ``campaign_id`` gets, or None if it is not deployed active."""
    row = deploys.current_versions(session).get(campaign_id)
    return plan_of(row) if row is not None and row.status == "active" else None


def live_plans(session: Session, kind: str, value: str) -> list[Plan]:
    """The plans new enrolments get for a trigger: the latest active deployments."""
    return [plan_of(row) for row in deploys.live_for_trigger(session, kind, value)]
