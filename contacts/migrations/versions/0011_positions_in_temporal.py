"""enrolments.current_step goes: a running journey's step is recorded in Temporal

Journeys now record the step they dwell at as the search attributes ``DripCampaign`` and
``DripStep`` on their own workflow (``workflows.positions``), which the dashboard counts and the
API reads. Nothing wrote this column any more, so it goes rather than sit there NULL beside the
real answer. The downgrade brings it back empty.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enrolments") as batch:
        batch.drop_column("current_step")


def downgrade() -> None:
    with op.batch_alter_table("enrolments") as batch:
        batch.add_column(sa.Column("current_step", sa.String(length=200), nullable=True))
