"""template_sources: the exact email template files a deploy recorded

A deploy now records the sources of every template a campaign uses (its ``.mjml``, the ``.txt``
beside it, its layout and the partials it includes), each stored once under the SHA-256 of its
text. The compiled plan names them by hash (``Plan.templates``), so the plan's version changes
when a template does, and the worker renders a journey's email from its version's sources rather
than from the workspace folder it read at start. Deployment rows from before this table have no
recorded templates; their journeys keep rendering from the workspace files.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 18:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "template_sources",
        sa.Column("hash", sa.String(length=64), primary_key=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("template_sources")
