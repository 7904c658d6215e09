"""``drip webhooks`` as an operator runs it: the real ``drip`` executable against a real
SQLite file; what it registers is what the dispatcher reads."""

from __future__ import annotations

import subprocess

from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts.db import session_scope
from contacts.webhook_endpoints import WebhookDelivery, WebhookEndpoint
from drip.settings import Settings
from tests.support import run_drip


def _drip(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_drip(settings, "webhooks", *args)


def test_add_list_rotate_deliveries_and_remove(settings: Settings, engine: Engine) -> None:
    added = _drip(
        settings,
        "add",
        "crm",
        "https://hooks.example.com/drip",
        "--owner",
        "ops@example.com",
        "--event",
        "contact.created",
        "--event",
        "message.bounced",
    )
    assert added.returncode == 0, added.stderr
    first, second = added.stdout.splitlines()
    assert first == "added webhook endpoint 1 (crm)"
    secret = second.removeprefix("signing secret (shown only now): ")
    with session_scope(engine) as s:
        [row] = s.exec(select(WebhookEndpoint)).all()
        assert (row.secret, row.source, row.event_types) == (
            secret,
            "cli",
            ["contact.created", "message.bounced"],
        )
        s.add(WebhookDelivery(endpoint_id=1, event_seq=1, event_id="evt_1", event_type="x"))

    listed = _drip(settings, "list")
    assert "crm" in listed.stdout and "enabled" in listed.stdout and "cli" in listed.stdout
    assert secret not in listed.stdout
    shown = _drip(settings, "deliveries", "--endpoint", "1")
    assert "evt_1" in shown.stdout and "pending" in shown.stdout

    rotated = _drip(settings, "rotate", "1")
    assert rotated.returncode == 0, rotated.stderr
    with session_scope(engine) as s:
        row = s.exec(select(WebhookEndpoint)).one()
        assert row.previous_secret == secret and row.secret in rotated.stdout

    refused = _drip(
        settings, "add", "crm", "http://plain.example.com/", "--owner", "a@b.co", "--event", "*"
    )
    assert refused.returncode == 1 and "refused: url must be https://" in refused.stderr
    unknown = _drip(settings, "resend", "99")
    assert unknown.returncode == 1 and "no webhook delivery 99" in unknown.stderr

    removed = _drip(settings, "remove", "1")
    assert removed.stdout.strip() == "removed webhook endpoint 1"
    assert _drip(settings, "list").stdout.strip() == "no webhook endpoints"
    assert _drip(settings, "remove", "1").returncode == 1
