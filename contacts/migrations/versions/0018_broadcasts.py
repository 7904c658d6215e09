"""broadcasts: one row per send of a broadcast, and the audience each send snapshotted

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broadcast_sends",
        sa.Column("id", sa.String(length=300), nullable=False),
        sa.Column("broadcast_id", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=80), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("audience", sa.Integer(), nullable=True),
        sa.Column("sample", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(length=80), nullable=True),
        sa.Column("ab_figures", sa.JSON(), nullable=False),
        sa.Column("started_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("broadcast_id", "number"),
    )
    with op.batch_alter_table("broadcast_sends", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_broadcast_sends_broadcast_id"), ["broadcast_id"], unique=False
        )
    op.create_table(
        "broadcast_recipients",
        sa.Column("send_id", sa.String(length=300), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=80), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("send_id", "seq"),
    )
    with op.batch_alter_table("broadcast_recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_broadcast_recipients_send_contact", ["send_id", "contact_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("broadcast_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_broadcast_recipients_send_contact")
    op.drop_table("broadcast_recipients")
    with op.batch_alter_table("broadcast_sends", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcast_sends_broadcast_id"))
    op.drop_table("broadcast_sends")
