"""marketing consent: whether each contact may get marketing email, and why

``contacts.marketing_consent`` says what drip knows about a contact's consent to marketing
email: ``given`` (a form, a double opt-in confirmation, an import or API call naming its
source: ``consent_source``/``consent_at``/``consent_ip`` hold the record), ``implied`` (the
events API created the contact in a workspace whose shop collects consent itself), ``none``
(the events API created it and nobody has recorded consent since: marketing campaigns skip it,
transactional ones do not) or ``unrecorded`` (it came in without a consent record through a
door that does not decide, an operator's import or API call without a source).

Existing contacts: one with a consent record (``consent_at`` set) becomes ``given``, the record
it already has; a ``pending`` one (double opt-in not confirmed yet) ``none``, as its
confirmation records consent. Every other one becomes ``unrecorded``, not ``none`` and not
``given``: drip mailed them until now, and stopping marketing mail to a whole list on upgrade,
without anyone deciding it, would be a surprise nobody asked for; claiming they consented would
invent a record nobody made. ``unrecorded`` is mailed as before and shown as such (contact page,
API), so an operator can find them and record the consent they hold (an import with a consent
source, ``POST /api/contacts/{id}/consent``). The contacts the events API had created before
this migration are among them: nothing in the database tells them apart from an import with
certainty (they have no event of their creation), so this migration does not guess.

The column's server default is ``none``: a row written by a path that does not set it is never
taken for consent.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 00:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column(
                "marketing_consent",
                sa.String(length=16),
                nullable=False,
                server_default="none",
            )
        )
    contacts = sa.table(
        "contacts",
        sa.column("marketing_consent", sa.String()),
        sa.column("consent_at", sa.DateTime(timezone=True)),
        sa.column("status", sa.String()),
    )
    op.execute(
        contacts.update()
        .where(contacts.c.consent_at.is_not(None))
        .values(marketing_consent="given")
    )
    op.execute(
        contacts.update()
        .where(contacts.c.consent_at.is_(None), contacts.c.status != "pending")
        .values(marketing_consent="unrecorded")
    )


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite 3.35+ has it): batch mode would copy and drop the contacts
    # table, which SQLite refuses while events and messages point at it
    op.drop_column("contacts", "marketing_consent")
