"""hits: the rows of unknown tokens go; such requests are now counted, not stored

Every request to ``/t/o/...`` or ``/t/c/...`` used to be stored, and one whose token names no
message or link was kept as a hit flagged ``unknown_token``: anyone could grow the table without
limit. Such requests are now counted (``drip_tracking_unknown_tokens_total``) and never stored,
so the rows stored before are junk, and they go. Nothing counted them: the campaign rollups,
their recount (``drip db rollups --check``) and the dashboard join hits to their message, and
these rows have none, so no figure changes. The downgrade cannot bring them back.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 19:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM hits WHERE bot_reason = 'unknown_token'")


def downgrade() -> None:
    """Junk deleted stays deleted; the schema did not change."""
