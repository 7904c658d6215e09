"""Broadcast emails on the campaign pages: the campaign list shows campaigns only, and the
Delivery page links an interrupted broadcast email to its broadcast's page, not to a campaign
page that does not exist."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from campaigns.workspace import load_workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import MessageState
from drip.settings import Settings
from tests.broadcast_support import sent_email
from tests.dashboard.support import make_user, sign_in
from tests.support import api_client, copy_workspace
from workflows.activities import INTERRUPTED


async def test_broadcast_rows_link_to_the_broadcast_and_stay_off_the_campaign_list(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email="kim@example.com", consent_source="test")
        assert contact.id is not None
    sent = sent_email(engine, settings.secret(), contact.id)
    cut = sent_email(engine, settings.secret(), contact.id, workflow_id="broadcast:black-friday:2")
    with session_scope(engine) as s:  # caught inside SMTP DATA by a crash
        outbox.finish_send(s, cut.id, MessageState.interrupted, INTERRUPTED)
    make_user(engine, "ops@example.com", "admin")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(settings, workspace, engine) as http:
        await sign_in(http, "ops@example.com")
        campaigns = await http.get("/dashboard/campaigns")
        assert campaigns.status_code == 200
        assert "/dashboard/campaigns/welcome" in campaigns.text
        assert "broadcast:" not in campaigns.text
        page = await http.get("/dashboard/admin/delivery")
        assert page.status_code == 200
        assert f'data-message="{cut.id}"' in page.text and sent.id not in page.text
        assert 'href="/dashboard/broadcasts/black-friday"' in page.text
        assert "/dashboard/campaigns/broadcast" not in page.text
