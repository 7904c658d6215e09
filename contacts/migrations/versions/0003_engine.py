"""engine: enrolment end reasons, A/B split decisions, segment membership

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrolments") as batch:
        batch.add_column(sa.Column("end_reason", sa.String(length=500), nullable=True))
    op.create_table(
        "split_decisions",
        sa.Column("campaign_id", sa.String(length=200), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("winner", sa.String(length=200), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "step_id"),
    )
    op.create_table(
        "segment_members",
        sa.Column("campaign_id", sa.String(length=200), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"]),
        sa.PrimaryKeyConstraint("campaign_id", "contact_id"),
    )
    op.create_index(
        "ix_messages_contact_created", "messages", ["contact_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_messages_contact_created", table_name="messages")
    op.drop_table("segment_members")
    op.drop_table("split_decisions")
    with op.batch_alter_table("enrolments") as batch:
        batch.drop_column("end_reason")
