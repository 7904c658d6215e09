"""webhook events: the transactional outbox of outgoing webhook events

Each source writes its event in the transaction of the change it reports
(``contacts.webhook_events.emit``); the dispatcher hands undispatched rows to the endpoints.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_webhook_events_type", "webhook_events", ["type"])
    op.create_index("ix_webhook_events_contact_id", "webhook_events", ["contact_id"])
    op.create_index("ix_webhook_events_dispatched_at", "webhook_events", ["dispatched_at"])


def downgrade() -> None:
    op.drop_table("webhook_events")
