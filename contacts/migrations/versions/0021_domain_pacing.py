"""domain pacing: each group of receiving domains' pace, transaction slots and warm-up counts

Shared by every worker process (``contacts.pacing``): the next free send time, the pace and
wait after deferrals, leases of the allowed transactions at once, and the sends of each day of
a warm-up.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "domain_pace",
        sa.Column("domain_group", sa.String(length=80), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("factor", sa.Float(), nullable=False),
        sa.Column("deferred_until", sa.Float(), nullable=False),
        sa.Column("strikes", sa.Integer(), nullable=False),
        sa.Column("recover_from", sa.Float(), nullable=False),
        sa.Column("deferrals", sa.Integer(), nullable=False),
        sa.Column("last_reply", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("domain_group"),
    )
    op.create_table(
        "domain_slots",
        sa.Column("domain_group", sa.String(length=80), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=80), nullable=True),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("domain_group", "slot"),
    )
    op.create_table(
        "domain_days",
        sa.Column("domain_group", sa.String(length=80), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("domain_group", "day"),
    )


def downgrade() -> None:
    op.drop_table("domain_days")
    op.drop_table("domain_slots")
    op.drop_table("domain_pace")
