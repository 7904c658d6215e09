"""clean stored values: repair rows older versions stored that break queries over other rows

Before ``contacts.cleaning`` guarded the doors and the engine, a public ``identify`` could store
``Infinity`` (from ``1e999``), a NUL or a lone surrogate in a contact's fields, and from then on
every query reading that JSON failed for all contacts (SQLite) or every text read of it did
(PostgreSQL). This revision finds such values in the JSON columns of its schema, in the text
columns people write and in addresses stored with a Unicode domain, and repairs them as
``drip db check --repair`` does (``contacts.integrity``): non-finite numbers become null,
control and bidirectional characters are removed, lone surrogates become U+FFFD, domains become
punycode. What it repaired is logged; what it cannot (a value that is not JSON, an address
another contact already has) is logged too and left for ``drip db check``.

The downgrade changes nothing: the repaired values were never valid.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 19:00:00
"""

import logging
from collections.abc import Sequence

from alembic import op

from contacts import integrity

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    findings = integrity.check(op.get_bind(), repair=True, json=integrity.JSON_COLUMNS_0016)
    for finding in findings:
        log.warning("stored value: %s", finding)


def downgrade() -> None:
    pass
