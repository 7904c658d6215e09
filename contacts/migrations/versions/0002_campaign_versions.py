"""campaign_versions: deployed campaign plans, one immutable row per deployment

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:03:29.746964
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger_kind", sa.String(length=32), nullable=False),
        sa.Column("trigger_value", sa.String(length=2000), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_campaign_versions_campaign_id", "campaign_versions", ["campaign_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_campaign_versions_campaign_id", table_name="campaign_versions")
    op.drop_table("campaign_versions")
