"""Junk tracking requests are counted, not stored, on SQLite and PostgreSQL.

Anyone can request ``/t/o/<anything>`` and ``/t/c/<anything>``; each used to become a stored
``unknown_token`` hit, so anyone could grow the ``hits`` table without limit. Now the pixel
still answers the GIF and a bad click the 404 page, the request is counted in
``drip_tracking_unknown_tokens_total{kind}``, and nothing is stored; the migration deletes the
rows stored before, which no figure counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from alembic import command
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlmodel import select

from campaigns.workspace import Workspace
from contacts import rollups
from contacts.db import alembic_config, migrate, session_scope
from contacts.hits import NewHit, insert_hits
from contacts.models import Hit, utcnow
from drip.settings import Settings
from tests.support import MAIL_CLIENT
from tests.webhooks.test_tracking import URLS, Api, _message, _tokens
from webhooks.main import create_app
from webhooks.routes.tracking import GIF

#: well-shaped but unknown, not token-shaped, too long, an open-redirect attempt
JUNK = ["A" * 24, "garbage", "x" * 300, "https:%2F%2Fevil.example"]


@pytest.fixture
async def api(settings: Settings, workspace: Workspace, any_engine: Engine) -> AsyncIterator[Api]:
    app = create_app(settings, workspace, engine=any_engine)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"user-agent": MAIL_CLIENT},
    ) as http:
        yield Api(app, http)
    app.state.hits.close()


def _hits(engine: Engine) -> list[Hit]:
    with session_scope(engine) as s:
        return list(s.exec(select(Hit).order_by(Hit.id)))  # type: ignore[arg-type]


async def _unknown_counted(api: Api) -> dict[str, float]:
    r = await api.http.get("/metrics")
    assert r.status_code == 200
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
        if sample.name == "drip_tracking_unknown_tokens_total"
    }


async def test_junk_pixels_and_clicks_are_answered_and_counted_never_stored(
    api: Api, any_engine: Engine, settings: Settings
) -> None:
    message = _message(any_engine, settings)
    for token in JUNK:
        for method in ("GET", "HEAD"):
            r = await api.http.request(method, f"/t/o/{token}.gif")
            assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        assert r.content == b"" and (await api.http.get(f"/t/o/{token}")).content == GIF
        r = await api.http.get(f"/t/c/{token}", follow_redirects=False)
        assert r.status_code == 404 and "location" not in r.headers
        assert "Link not found" in r.text
    # a real open and click beside them are stored as ever
    assert (await api.http.get(f"/t/o/{message.open_token}.gif")).status_code == 200
    r = await api.http.get(f"/t/c/{_tokens(settings, message)[1]}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == URLS[1]
    await api.flush()

    assert [(h.kind, h.message_id) for h in _hits(any_engine)] == [
        ("open", message.id),
        ("click", message.id),
    ]
    assert await _unknown_counted(api) == {"open": 3.0 * len(JUNK), "click": len(JUNK)}
    # the well-shaped pixel token reached the writer, which left it out; the others never did
    assert api.hits.unknown == {"open": 3}


async def test_a_stored_hit_whose_token_names_nothing_is_deleted_and_counted(
    api: Api, any_engine: Engine, settings: Settings
) -> None:
    """A hit stored before tokens were checked (or whose message went since) is junk too."""
    message = _message(any_engine, settings)
    with session_scope(any_engine) as s:
        s.add(Hit(kind="open", token="B" * 24, received_at=utcnow()))
        s.add(Hit(kind="click", token="C" * 24, received_at=utcnow()))
        insert_hits(s, [NewHit("open", message.open_token, utcnow(), user_agent=MAIL_CLIENT)])
    await api.flush()
    [kept] = _hits(any_engine)
    assert (kept.token, kept.message_id, kept.bot_reason) == (message.open_token, message.id, None)
    assert await _unknown_counted(api) == {"open": 1.0, "click": 1.0}


def test_the_migration_deletes_unknown_token_rows_and_no_figure_changes(
    any_engine: Engine,
) -> None:
    command.downgrade(alembic_config(any_engine), "0016")
    with any_engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO contacts (id, email, fields, tags, score, status, stage, created_at,"
            " updated_at, consent_source) VALUES (1, 'a@example.com', '{}', '[]', 0,"
            " 'subscribed', 'subscriber', '2026-01-01', '2026-01-01', 't')"
        )
        c.exec_driver_sql(
            "INSERT INTO messages (id, key, contact_id, campaign_id, campaign_version, step_id,"
            " workflow_id, template, subject, state, header_message_id, open_token, attempts,"
            " created_at) VALUES ('m1', 'k1', 1, 'welcome', '', 'hello', 'w', 't', '', 'sent',"
            " '', 'o1', 1, '2026-01-01')"
        )
        c.exec_driver_sql(
            "INSERT INTO hits (kind, token, method, user_agent, ip, received_at, consumed_at,"
            " message_id, bot_reason) VALUES"
            " ('open', 'o1', 'GET', 'x', '', '2026-01-02', '2026-01-02', 'm1', 'apple_mpp'),"
            " ('open', 'o1', 'GET', 'x', '', '2026-01-02', '2026-01-02', 'm1', NULL),"
            " ('open', 'junk', 'GET', 'x', '', '2026-01-02', '2026-01-02', NULL,"
            " 'unknown_token'),"
            " ('click', 'junk', 'GET', 'x', '', '2026-01-02', '2026-01-02', NULL,"
            " 'unknown_token')"
        )
    with session_scope(any_engine) as s:
        rollups.rebuild(s)
        before = rollups.recount(s)
    migrate(any_engine)
    assert [(h.token, h.bot_reason) for h in _hits(any_engine)] == [
        ("o1", "apple_mpp"),
        ("o1", None),
    ]
    with session_scope(any_engine) as s:
        assert rollups.compare(s).same and rollups.recount(s) == before
        assert rollups.bot_counts(s) == {("welcome", "open"): 1}
