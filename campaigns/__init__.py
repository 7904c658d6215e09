"""The campaign language: YAML -> validated model -> compiled plan.

Pure: no I/O beyond reading workspace files, and no imports of other drip packages.
"""

from campaigns.compile import compile_campaign
from campaigns.errors import (
    CampaignError,
    CampaignReferenceError,
    CampaignSchemaError,
    CampaignSyntaxError,
    Problem,
)
from campaigns.plan import Plan, PlanStep
from campaigns.schema import Campaign, FormDefinition, WorkspaceConfig
from campaigns.workspace import Workspace, load_workspace

__all__ = [
    "Campaign",
    "CampaignError",
    "CampaignReferenceError",
    "CampaignSchemaError",
    "CampaignSyntaxError",
    "FormDefinition",
    "Plan",
    "PlanStep",
    "Problem",
    "Workspace",
    "WorkspaceConfig",
    "compile_campaign",
    "load_workspace",
]
