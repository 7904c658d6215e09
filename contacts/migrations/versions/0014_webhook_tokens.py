"""webhook_tokens: ESP signature tokens already used, so a signed request is honoured once

Mailgun signs ``timestamp + token``, not the body, so a signed request reposted within the
freshness window with other event data used to verify. Each accepted token is now remembered
under a unique key (``contacts.webhook_tokens``) and a second request with it is refused; rows
whose signed time is older than ``DRIP_ESP_MAX_AGE_SECONDS`` are pruned (such a request is
refused as stale anyway).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 18:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_tokens",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("token", sa.String(length=100), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "token"),
    )
    with op.batch_alter_table("webhook_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_tokens_signed_at"), ["signed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_tokens_signed_at"))
    op.drop_table("webhook_tokens")
