"""analytics: covering indexes for the dashboard's analytics page

Human opens and clicks by hour, bounces and complaints over a window: (type, occurred_at,
contact_id) on events; emails sent over the last 30 days: (sent_at, state) on messages.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:43:19.157047
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_type_occurred_contact", ["type", "occurred_at", "contact_id"], unique=False
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_sent_at_state", ["sent_at", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_sent_at_state")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_type_occurred_contact")
