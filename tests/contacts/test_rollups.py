"""The campaign rollups kept by the hit consumer equal a full recount from events and hits, on
SQLite and PostgreSQL: after a mix of human and machine opens and clicks, repeated opens, a
second email to the same contact, unknown tokens, a contact merge, a rebuild, and the
migration that fills them from data recorded before they existed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from contacts import outbox, repository, rollups
from contacts._merge import merge_contacts
from contacts.db import create_db_engine, migrate, session_scope
from contacts.hits import NewHit, consume, insert_hits
from contacts.models import CampaignCounter, CampaignReach, Message, MessageState, utcnow
from contacts.rollup_models import CAMPAIGN_WIDE
from drip import cli
from drip.settings import get_settings
from tests.support import copy_workspace

NOW = utcnow()
BOT_AGENT = "GoogleImageProxy"


def _verdict(agent: str) -> str | None:
    return "user_agent:proxy" if agent == BOT_AGENT else None


def _message(s: Session, email: str, campaign: str, step: str, n: int = 1) -> Message:
    contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
    assert contact.id is not None
    message_id = f"{campaign}-{step}-{contact.id}-{n}"
    message = outbox.reserve_message(
        s,
        Message(
            id=message_id,
            key=message_id,
            contact_id=contact.id,
            campaign_id=campaign,
            step_id=step,
            workflow_id=f"journey/{campaign}/{contact.id}/1",
            template=step,
            open_token=f"o-{message_id}",
            created_at=NOW - timedelta(hours=1),
        ),
    )
    outbox.finish_send(s, message_id, MessageState.sent)
    s.execute(
        sa.update(Message)
        .where(col(Message.id) == message_id)
        .values(sent_at=NOW - timedelta(hours=1))
    )
    outbox.store_links(s, message_id, [(f"c-{message_id}", 0, "https://example.com/")])
    return message


def _hit(kind: str, message: Message | str, agent: str = "Mozilla/5.0") -> NewHit:
    token = message if isinstance(message, str) else message.id
    prefix = "o-" if kind == "open" else "c-"
    return NewHit(kind, prefix + token, NOW - timedelta(minutes=5), user_agent=agent)


def _consume_all(engine: Engine, hits: list[NewHit]) -> None:
    with session_scope(engine) as s:
        insert_hits(s, hits)
    with session_scope(engine) as s:
        consume(s, now=NOW, classify_user_agent=_verdict, min_seconds_after_send=10)


def _traffic(engine: Engine) -> dict[str, Message]:
    """Two campaigns; ada gets two welcome emails (two steps) and a newsletter; bob one."""
    with session_scope(engine) as s:
        m = {
            "ada1": _message(s, "ada@example.com", "welcome", "hello"),
            "ada2": _message(s, "ada@example.com", "welcome", "tips"),
            "adaN": _message(s, "ada@example.com", "news", "issue-1"),
            "bob1": _message(s, "bob@example.com", "welcome", "hello"),
            "eve1": _message(s, "eve@example.com", "welcome", "hello"),
        }
    _consume_all(
        engine,
        [
            _hit("open", m["ada1"]),
            _hit("open", m["ada1"]),  # the same email opened again
            _hit("open", m["ada2"]),  # a second email of the campaign, same contact
            _hit("click", m["ada2"]),
            _hit("open", m["adaN"]),
            _hit("open", m["bob1"], BOT_AGENT),  # a machine: counted apart
            _hit("open", m["bob1"], BOT_AGENT),
            _hit("click", m["bob1"], BOT_AGENT),
            _hit("open", m["eve1"]),
            _hit("open", "no-such-message"),  # unknown token: no campaign to count against
        ],
    )
    return m


def test_consuming_hits_keeps_the_rollups_equal_to_a_recount(any_engine: Engine) -> None:
    _traffic(any_engine)
    with session_scope(any_engine) as s:
        assert rollups.compare(s).same
        reach = rollups.reach_counts(s)
        bots = rollups.bot_counts(s)
    # ada and eve opened welcome (ada twice, in two emails): two unique openers, one clicker
    assert reach[("welcome", CAMPAIGN_WIDE, "open")] == 2
    assert reach[("welcome", "hello", "open")] == 2
    assert reach[("welcome", "tips", "open")] == 1
    assert reach[("welcome", CAMPAIGN_WIDE, "click")] == 1
    assert reach[("news", CAMPAIGN_WIDE, "open")] == 1
    assert bots == {("welcome", "open"): 2, ("welcome", "click"): 1}


def test_a_second_batch_adds_only_what_is_new(any_engine: Engine) -> None:
    m = _traffic(any_engine)
    _consume_all(any_engine, [_hit("open", m["ada1"]), _hit("open", m["bob1"], BOT_AGENT)])
    with session_scope(any_engine) as s:
        assert rollups.compare(s).same
        assert rollups.reach_counts(s)[("welcome", CAMPAIGN_WIDE, "open")] == 2
        assert rollups.bot_counts(s)[("welcome", "open")] == 3


def test_a_merge_moves_the_reach_and_counts_the_person_once(any_engine: Engine) -> None:
    m = _traffic(any_engine)
    with session_scope(any_engine) as s:
        merge_contacts(s, m["ada1"].contact_id, m["eve1"].contact_id, actor="test")
    with session_scope(any_engine) as s:
        assert rollups.compare(s).same
        assert rollups.reach_counts(s)[("welcome", CAMPAIGN_WIDE, "open")] == 1
        left = s.exec(
            select(sa.func.count()).where(CampaignReach.contact_id == m["eve1"].contact_id)
        ).one()
        assert left == 0


def test_rebuild_repairs_rollups_that_drifted(any_engine: Engine) -> None:
    _traffic(any_engine)
    with session_scope(any_engine) as s:
        s.execute(sa.delete(CampaignReach).where(col(CampaignReach.step_id) == "tips"))
        s.execute(sa.update(CampaignCounter).values(n=CampaignCounter.n + 5))
    with session_scope(any_engine) as s:
        drift = rollups.compare(s)
        assert drift.reach == {
            ("welcome", "tips", "open"): (0, 1),
            ("welcome", "tips", "click"): (0, 1),
        }
        assert drift.bots == {("welcome", "open"): (7, 2), ("welcome", "click"): (6, 1)}
        rollups.rebuild(s)
    with session_scope(any_engine) as s:
        assert rollups.compare(s).same


def test_the_migration_fills_the_rollups_from_what_was_recorded(tmp_path: Path) -> None:
    """Data recorded at revision 0009 (before the rollups) is counted once upgraded."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0009")
    with engine.begin() as c:
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
            "INSERT INTO events (contact_id, type, name, properties, source, message_id,"
            " dedupe_key, occurred_at, received_at) VALUES (1, 'open', 'hello', '{}', 'pixel',"
            " 'm1', 'open:hit:1', '2026-01-02', '2026-01-02')"
        )
        c.exec_driver_sql(
            "INSERT INTO hits (kind, token, method, user_agent, ip, received_at, message_id,"
            " bot_reason) VALUES ('open', 'o1', 'GET', 'x', '', '2026-01-02', 'm1', 'apple_mpp')"
        )
    migrate(engine)
    with session_scope(engine) as s:
        assert rollups.compare(s).same
        assert rollups.reach_counts(s) == {
            ("welcome", "hello", "open"): 1,
            ("welcome", CAMPAIGN_WIDE, "open"): 1,
        }
        assert rollups.bot_counts(s) == {("welcome", "open"): 1}
    engine.dispose()


def test_drip_db_rollups_checks_and_repairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``drip db rollups --check`` exits 1 naming what drifted; ``drip db rollups`` repairs."""
    monkeypatch.setenv("DRIP_HOME", str(tmp_path / ".drip"))
    monkeypatch.setenv("DRIP_WORKSPACE", str(copy_workspace(tmp_path)))
    monkeypatch.setenv("DRIP_DATABASE_URL", f"sqlite:///{tmp_path / 'drip.db'}")
    monkeypatch.setattr(cli.console, "width", 200)
    get_settings.cache_clear()
    engine = create_db_engine(get_settings().database_url)
    try:
        migrate(engine)
        _traffic(engine)

        def drip(*args: str) -> Result:
            return CliRunner().invoke(cli.app, ["db", "rollups", *args])

        assert drip("--check").exit_code == 0
        with session_scope(engine) as s:
            s.execute(sa.delete(CampaignReach).where(col(CampaignReach.step_id) == "tips"))
        check = drip("--check")
        assert check.exit_code == 1
        assert "welcome / tips / open: stored 0, recounted 1" in check.output
        repair = drip()
        assert repair.exit_code == 0, repair.output
        assert "2 figure(s) changed" in repair.output
        assert drip("--check").exit_code == 0
    finally:
        engine.dispose()
        get_settings.cache_clear()
