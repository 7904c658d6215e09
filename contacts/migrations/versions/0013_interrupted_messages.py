"""interrupted messages: their own outbox state, and who resent them when

An email whose SMTP transaction was cut off (the worker died, the connection dropped after DATA)
is not sent again by itself: the relay may already have accepted it. Such a row used to end
``failed`` with a reason text, so an operator could find them only by matching that text. It now
ends ``interrupted``, which is counted and listed by state (``drip messages interrupted``, the
dashboard's Delivery page, ``drip_messages_interrupted`` in ``/metrics``), until an operator
resends it on purpose (``drip messages resend``); ``resent_at`` and ``resent_by`` record that
decision, and make sure it is taken once. Rows already marked by the reason text are moved to
the new state here.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: how ``workflows.activities`` worded the reason of an interrupted send before this state
_REASON = "interrupted during the SMTP transaction%"


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("resent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resent_by", sa.String(length=200), nullable=True))
    messages = sa.table(
        "messages", sa.column("state", sa.String()), sa.column("error", sa.String())
    )
    op.execute(
        messages.update()
        .where(messages.c.state == "failed", messages.c.error.like(_REASON))
        .values(state="interrupted")
    )


def downgrade() -> None:
    messages = sa.table("messages", sa.column("state", sa.String()))
    op.execute(messages.update().where(messages.c.state == "interrupted").values(state="failed"))
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("resent_by")
        batch.drop_column("resent_at")
