"""webhook deliveries by event: the retention prune finds an event's deliveries by event_seq

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 02:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the unique (endpoint_id, event_seq) index cannot answer "the deliveries of this event"
    op.create_index("ix_webhook_deliveries_event_seq", "webhook_deliveries", ["event_seq"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_event_seq", table_name="webhook_deliveries")
