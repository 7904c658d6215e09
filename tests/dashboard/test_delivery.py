"""The Delivery page (``/dashboard/admin/delivery``) without a worker: admins only, the count and
the list, a confirmation stating the duplicate risk before anything is resent, CSRF on every
POST, and nothing resent (503, said plainly) when Temporal cannot be reached. The resend itself,
through a real worker after a real crash, is tests/e2e/test_interrupted_resend.py."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from campaigns.workspace import load_workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import Message, MessageState
from drip.settings import Settings
from tests.dashboard.support import form_csrf, make_user, sign_in
from tests.support import api_client, copy_workspace, free_port
from workflows.activities import INTERRUPTED

PAGE = "/dashboard/admin/delivery"
RESEND = "/dashboard/admin/delivery/resend"


def _row(s: Session, email: str, state: MessageState) -> str:
    contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
    assert contact.id is not None
    message_id = f"m-{contact.id}"
    outbox.reserve_message(
        s,
        Message(
            id=message_id,
            key=message_id,
            contact_id=contact.id,
            campaign_id="welcome",
            step_id="welcome",
            workflow_id=f"journey/welcome/{contact.id}/1",
            template="welcome",
            subject=f"Welcome, {email}",
            open_token=f"o-{message_id}",
        ),
    )
    assert outbox.begin_send(s, message_id)
    reason = INTERRUPTED if state == MessageState.interrupted else None
    outbox.finish_send(s, message_id, state, reason)
    return message_id


def _states(engine: Engine, *ids: str) -> list[tuple[MessageState, object]]:
    with session_scope(engine) as s:
        rows = [s.get(Message, i) for i in ids]
        return [(r.state, r.resent_at) for r in rows if r is not None]


async def test_admins_see_the_interrupted_emails_and_confirm_before_a_resend(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    away = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    with session_scope(engine) as s:
        kim = _row(s, "kim@example.com", MessageState.interrupted)
        lee = _row(s, "lee@example.com", MessageState.interrupted)
        sent = _row(s, "sam@example.com", MessageState.sent)
    make_user(engine, "ops@example.com", "admin")
    make_user(engine, "mia@example.com", "marketer")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(away, workspace, engine) as http:
        await sign_in(http, "mia@example.com")
        assert (await http.get(PAGE)).status_code == 403
        campaigns = await http.get("/dashboard/campaigns")
        assert PAGE not in campaigns.text  # no Delivery entry in a marketer's navigation
        posted = await http.post(RESEND, data={"csrf_token": "x", "all": "yes", "confirmed": "yes"})
        assert posted.status_code == 403 and "Not for your role" in posted.text

        http.cookies.clear()
        await sign_in(http, "ops@example.com")
        page = await http.get(PAGE)
        assert page.status_code == 200
        assert f'href="{PAGE}"' in page.text  # in the admin's navigation
        assert 'data-figure="interrupted">2<' in page.text
        assert re.findall(r'<tr data-message="([^"]+)"', page.text) == [kim, lee]
        assert sent not in page.text
        assert "Welcome, kim@example.com" in page.text
        csrf = form_csrf(page.text)

        assert (await http.post(RESEND, data={"all": "yes"})).status_code == 403  # no CSRF
        ask = await http.post(RESEND, data={"csrf_token": csrf, "all": "yes"})
        assert ask.status_code == 200
        assert "may receive this email twice" in ask.text
        # the confirmation names what it resends, not "all" as it will be then
        assert re.findall(r'name="message_id" value="([^"]+)"', ask.text) == [kim, lee]
        assert 'name="confirmed" value="yes"' in ask.text

        nothing = await http.post(RESEND, data={"csrf_token": csrf, "message_id": sent})
        assert nothing.status_code == 409
        assert "Nothing to resend" in nothing.text

        down = await http.post(
            RESEND,
            data={"csrf_token": csrf, "message_id": [kim, lee], "confirmed": "yes"},
        )
        assert down.status_code == 503
        assert "Nothing was resent" in down.text
        assert 'data-figure="interrupted">2<' in down.text
    assert _states(engine, kim, lee) == [
        (MessageState.interrupted, None),
        (MessageState.interrupted, None),
    ]
