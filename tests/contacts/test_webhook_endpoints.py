"""Outgoing webhook endpoints in the database: the workspace's ``webhooks:`` synced at each
deploy (its own endpoints only), secrets rotated with an overlap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from campaigns.workspace import load_workspace
from contacts import webhook_endpoints as we
from contacts.db import session_scope
from contacts.errors import InvalidValue
from tests.support import copy_workspace
from workflows.deploy import deploy_workspace

HOOKS = """
webhooks:
  - name: crm
    url: https://crm.example.com/drip
    events: [contact.created, contact.updated]
    owner: ops@example.com
    filter: 'properties.plan == "pro"'
    secret_env: DRIP_TEST_CRM_SECRET
  - name: warehouse
    url: https://dw.example.com/in
    events: ["*"]
    owner: data@example.com
"""


def _names(engine: Engine) -> list[tuple[str, str]]:
    with session_scope(engine) as s:
        rows = s.exec(select(we.WebhookEndpoint).order_by(col(we.WebhookEndpoint.name))).all()
        return [(r.name, r.source) for r in rows]


def test_a_deploy_makes_the_workspace_endpoints_what_the_yaml_says(
    any_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = we.new_secret()
    monkeypatch.setenv("DRIP_TEST_CRM_SECRET", secret)
    root = copy_workspace(tmp_path)
    (root / "workspace.yaml").write_text((root / "workspace.yaml").read_text() + HOOKS)
    with session_scope(any_engine) as s:  # registered by hand: a deploy leaves it alone
        we.create_endpoint(
            s,
            name="manual",
            url="https://m.example.com/",
            event_types=["*"],
            owner_email="a@example.com",
            source="cli",
        )

    deploy_workspace(any_engine, load_workspace(root))
    assert _names(any_engine) == [
        ("crm", "workspace"),
        ("manual", "cli"),
        ("warehouse", "workspace"),
    ]
    with session_scope(any_engine) as s:
        crm = s.exec(select(we.WebhookEndpoint).where(we.WebhookEndpoint.name == "crm")).one()
        assert (crm.secret, crm.filter) == (secret, 'properties.plan == "pro"')
        warehouse = s.exec(
            select(we.WebhookEndpoint).where(we.WebhookEndpoint.name == "warehouse")
        ).one()
        generated = warehouse.secret

    text = (root / "workspace.yaml").read_text().replace("dw.example.com", "dw2.example.com")
    (root / "workspace.yaml").write_text(
        text.split("  - name: crm")[0] + text.split("    secret_env: DRIP_TEST_CRM_SECRET\n")[1]
    )
    deploy_workspace(any_engine, load_workspace(root))
    assert _names(any_engine) == [("manual", "cli"), ("warehouse", "workspace")]
    with session_scope(any_engine) as s:
        warehouse = s.exec(
            select(we.WebhookEndpoint).where(we.WebhookEndpoint.name == "warehouse")
        ).one()
        # updated in place: the secret the receiver knows survives the deploy
        assert (warehouse.url, warehouse.secret) == ("https://dw2.example.com/in", generated)


def test_a_missing_secret_variable_or_unknown_event_type_fails_the_deploy(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DRIP_TEST_CRM_SECRET", raising=False)
    root = copy_workspace(tmp_path)
    (root / "workspace.yaml").write_text((root / "workspace.yaml").read_text() + HOOKS)
    with pytest.raises(InvalidValue, match="DRIP_TEST_CRM_SECRET is not set"):
        deploy_workspace(engine, load_workspace(root))
    monkeypatch.setenv("DRIP_TEST_CRM_SECRET", we.new_secret())
    bad = (root / "workspace.yaml").read_text().replace("contact.updated", "contact.teleported")
    (root / "workspace.yaml").write_text(bad)
    with pytest.raises(InvalidValue, match=r"unknown event type 'contact\.teleported'"):
        deploy_workspace(engine, load_workspace(root))
    assert _names(engine) == []


def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(any_engine: Engine) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    with session_scope(any_engine) as s:
        row = we.create_endpoint(
            s,
            name="crm",
            url="https://crm.example.com/",
            event_types=["*"],
            owner_email="a@example.com",
        )
        old = row.secret
        new = we.rotate_secret(s, row, now=now)
        assert we.active_secrets(row, now + timedelta(hours=23)) == [new, old]
        assert we.active_secrets(row, now + timedelta(hours=24)) == [new]
