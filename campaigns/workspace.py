"""A workspace: ``workspace.yaml``, ``forms/*.yaml``, ``campaigns/*.yaml``, ``broadcasts/*.yaml``
and ``emails/*.mjml``.

Loading validates everything and reports every problem of every file at once, so ``drip dev`` and
``drip campaigns validate`` refuse a broken workspace before anything is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from campaigns.broadcast_check import load_broadcasts
from campaigns.broadcasts import Broadcast, BroadcastPlan, compile_broadcast
from campaigns.compile import compile_campaign
from campaigns.errors import CampaignError, Problem
from campaigns.hosts import host_allowed
from campaigns.loader import load_model, load_yaml
from campaigns.plan import Plan
from campaigns.sales import SalesPlan, check_sales_plan
from campaigns.schema import Campaign, FormDefinition, WorkspaceConfig
from campaigns.templates import TemplateSources
from campaigns.validate import check_campaign

__all__ = ["Workspace", "load_workspace"]


@dataclass
class Workspace:
    root: Path
    config: WorkspaceConfig
    forms: dict[str, FormDefinition] = field(default_factory=dict)
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    templates: dict[str, Path] = field(default_factory=dict)
    #: ``sales.yaml``: scoring, stages, teams, follow-up (empty when the file is absent)
    sales: SalesPlan = field(default_factory=SalesPlan)
    #: the text of every template file the plans name, by hash (what a deploy stores)
    template_texts: dict[str, str] = field(default_factory=dict)
    #: ``broadcasts/*.yaml`` by id, and their compiled plans (what a send starts with)
    broadcasts: dict[str, Broadcast] = field(default_factory=dict)
    broadcast_plans: dict[str, BroadcastPlan] = field(default_factory=dict)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def load_workspace(root: Path) -> Workspace:
    """Load and validate a whole workspace; raise CampaignError listing every problem found."""
    if not root.is_dir():
        raise CampaignError(
            [Problem(str(root), 0, 0, "", "no such workspace folder (set DRIP_WORKSPACE)")]
        )
    problems: list[Problem] = []
    config_path = root / "workspace.yaml"
    config: WorkspaceConfig | None = None
    try:
        config = load_model(
            load_yaml(config_path, display=_display(config_path, root)), WorkspaceConfig
        )
    except CampaignError as exc:
        problems += exc.problems

    templates = {p.stem: p for p in sorted((root / "emails").glob("*.mjml"))}

    sales = SalesPlan()
    sales_path = root / "sales.yaml"
    if sales_path.exists():
        try:
            sales_doc = load_yaml(sales_path, display=_display(sales_path, root))
            sales = load_model(sales_doc, SalesPlan)
            problems += check_sales_plan(sales_doc, sales)
        except CampaignError as exc:
            problems += exc.problems
    if config is not None:
        problems += _check_sales_hosts(config, config_path, root)

    forms: dict[str, FormDefinition] = {}
    for path in sorted((root / "forms").glob("*.yaml")):
        try:
            doc = load_yaml(path, display=_display(path, root))
            form = load_model(doc, FormDefinition)
        except CampaignError as exc:
            problems += exc.problems
            continue
        if form.id != path.stem:
            problems.append(
                Problem(
                    doc.file,
                    *doc.position(("id",)),
                    "id",
                    f"form id '{form.id}' must match the file name '{path.stem}'",
                )
            )
        if form.redirect is not None and config is not None:
            host = (urlsplit(form.redirect).hostname or "").lower()
            if host not in {h.lower() for h in config.form_redirect_hosts}:
                allowed = ", ".join(config.form_redirect_hosts) or "none yet"
                problems.append(
                    Problem(
                        doc.file,
                        *doc.position(("redirect",)),
                        "redirect",
                        f"host '{host}' is not in workspace.yaml form_redirect_hosts "
                        f"(allowed: {allowed})",
                    )
                )
        forms[form.id] = form

    campaigns: dict[str, Campaign] = {}
    for path in sorted((root / "campaigns").glob("*.yaml")):
        try:
            doc = load_yaml(path, display=_display(path, root))
            campaign = load_model(doc, Campaign)
        except CampaignError as exc:
            problems += exc.problems
            continue
        found = check_campaign(
            doc,
            campaign,
            templates=templates,
            forms=forms,
            webhook_hosts=config.webhook_hosts if config else (),
        )
        if campaign.id in campaigns:
            found.append(
                Problem(
                    doc.file,
                    *doc.position(("id",)),
                    "id",
                    f"campaign id '{campaign.id}' is used by another file",
                )
            )
        if found:
            problems += found
            continue
        campaigns[campaign.id] = campaign

    broadcasts, found = load_broadcasts(
        root,
        templates=templates,
        topics=[t.id for t in config.topics] if config is not None else None,
        display=lambda path: _display(path, root),
    )
    problems += found

    sources = TemplateSources(root / "emails", config.layout if config is not None else None)
    files: dict[str, dict[str, str]] = {}
    for name in sorted(
        {s.send_email.template for c in campaigns.values() for s in c.steps if s.send_email}
        | {name for b in broadcasts.values() for name in b.templates()}
    ):
        try:
            files[name] = sources.files(name)
        except (OSError, UnicodeDecodeError) as exc:
            path = templates.get(name, root / "emails" / f"{name}.mjml")
            problems.append(
                Problem(_display(path, root), 0, 0, "", f"cannot read template {name}: {exc}")
            )

    if problems or config is None:
        raise CampaignError(problems)
    return Workspace(
        root=root,
        config=config,
        forms=forms,
        campaigns=campaigns,
        plans={cid: compile_campaign(c, files) for cid, c in campaigns.items()},
        templates=templates,
        sales=sales,
        template_texts=sources.texts,
        broadcasts=broadcasts,
        broadcast_plans={bid: compile_broadcast(b, files) for bid, b in broadcasts.items()},
    )


def _check_sales_hosts(config: WorkspaceConfig, path: Path, root: Path) -> list[Problem]:
    """The sales chat and CRM webhooks may only go to hosts the workspace allowlists."""
    problems = []
    for name in ("chat_webhook", "crm_webhook"):
        url = getattr(config.sales, name)
        if url is None:
            continue
        host = (urlsplit(str(url)).hostname or "").lower()
        if not host_allowed(host, config.webhook_hosts):
            doc = load_yaml(path, display=_display(path, root))
            problems.append(
                Problem(
                    doc.file,
                    *doc.position(("sales", name)),
                    f"sales.{name}",
                    f"host '{host}' is not in webhook_hosts "
                    f"(allowed: {', '.join(config.webhook_hosts) or 'none yet'})",
                )
            )
    return problems
