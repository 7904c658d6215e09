"""forms: double opt-in and subscription preferences (filled in by the forms work)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the preference page's "pause for 30 days"; double opt-in needs no column: a contact
    # waiting for confirmation has status "pending" (a string column, no enum to alter)
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("paused_until")
