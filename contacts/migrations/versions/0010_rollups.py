"""rollups: campaign reach and counters, filled from the events and hits already recorded

The campaign list recounted every campaign's unique openers and clickers from the events and
its machine hits from the tracking hits on each view (seconds on a million events). These
tables keep those figures as they are recorded (``contacts.rollups``); this migration fills
them once from what is there. The composite messages index lets a campaign's emails be counted
by step and state, and its contacts emailed, from the index alone; it starts with
``campaign_id``, so the single-column index on it goes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REACH = """
INSERT INTO campaign_reach (campaign_id, kind, step_id, contact_id)
SELECT m.campaign_id, e.type, m.step_id, e.contact_id
  FROM events e JOIN messages m ON m.id = e.message_id WHERE e.type IN ('open', 'click')
UNION
SELECT m.campaign_id, e.type, '', e.contact_id
  FROM events e JOIN messages m ON m.id = e.message_id WHERE e.type IN ('open', 'click')
"""
_COUNTERS = """
INSERT INTO campaign_counters (campaign_id, metric, n)
SELECT m.campaign_id, 'bot_' || h.kind, count(*)
  FROM hits h JOIN messages m ON m.id = h.message_id WHERE h.bot_reason IS NOT NULL
 GROUP BY m.campaign_id, h.kind
"""


def upgrade() -> None:
    op.create_table(
        "campaign_reach",
        sa.Column("campaign_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "kind", "step_id", "contact_id"),
    )
    with op.batch_alter_table("campaign_reach", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaign_reach_contact_id"), ["contact_id"], unique=False
        )
    op.create_table(
        "campaign_counters",
        sa.Column("campaign_id", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "metric"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_campaign_step_state",
            ["campaign_id", "step_id", "state", "contact_id"],
            unique=False,
        )
        batch_op.drop_index("ix_messages_campaign_id")
    op.execute(_REACH)
    op.execute(_COUNTERS)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_campaign_id", ["campaign_id"], unique=False)
        batch_op.drop_index("ix_messages_campaign_step_state")
    op.drop_table("campaign_counters")
    with op.batch_alter_table("campaign_reach", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_reach_contact_id"))
    op.drop_table("campaign_reach")
