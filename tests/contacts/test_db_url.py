"""A database URL with URL-encoded parts (a password with a ``%``, a ``search_path`` option)
reaches Alembic intact: its ini parser would read ``%`` as interpolation and refuse the URL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from contacts.db import create_db_engine, migrate
from tests.postgres import postgres_url


@pytest.mark.postgres
def test_migrations_run_on_a_url_with_an_encoded_search_path(
    request: pytest.FixtureRequest,
) -> None:
    base = postgres_url(request)
    admin = sa.create_engine(base)
    with admin.begin() as c:
        c.exec_driver_sql("CREATE SCHEMA tenant_a")
    url = sa.make_url(base).update_query_dict({"options": "-csearch_path=tenant_a"})
    rendered = url.render_as_string(hide_password=False)
    assert "%3D" in rendered  # the option is URL-encoded
    engine = create_db_engine(rendered)
    try:
        migrate(engine)
        with admin.connect() as c:
            tables = c.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'tenant_a'"
                " AND table_name IN ('contacts', 'campaign_reach', 'alembic_version')"
            ).scalar_one()
        assert tables == 3
    finally:
        engine.dispose()
        admin.dispose()
