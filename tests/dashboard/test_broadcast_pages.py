"""The broadcast pages (``/dashboard/broadcasts``, ``/dashboard/broadcasts/{id}``) without a
worker: which roles see them, the figures they show against what the database holds, the live
progress fragment that polls only while the send moves, and the pause/resume/cancel forms:
refused without the session's CSRF token or for a role that may not act, and nothing changed
(503, said plainly) when Temporal cannot be reached. Pausing and resuming a real send from the
page is tests/e2e/test_broadcast_browser.py."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts import outbox, repository
from contacts.broadcast_models import BroadcastRecipient, BroadcastSend, SendState
from contacts.db import session_scope
from contacts.models import Message, MessageState, utcnow
from drip.settings import Settings
from tests.dashboard.support import form_csrf, make_user, sign_in
from tests.support import api_client, copy_workspace, free_port
from webhooks.dashboard.broadcasts import duration

LIST = "/dashboard/broadcasts"
PAGE = "/dashboard/broadcasts/black-friday"
SEND = "broadcast:black-friday:1"


def _world(engine: Engine, state: SendState = SendState.sending) -> None:
    """A send of the demo's black-friday broadcast: 4 recipients, an A/B sample of 2 (plain,
    personal); 3 sent, 1 pending; recipient 1 opened and clicked, recipient 3 opened."""
    now = utcnow()
    plan = {
        "variants": [{"id": "plain", "subject": "Plain"}, {"id": "personal", "subject": "Hi"}],
        "ab_metric": "opens",
    }
    with session_scope(engine) as s:
        s.add(
            BroadcastSend(
                id=SEND, broadcast_id="black-friday", name="Black Friday 2026", version="v1",
                plan=plan, state=state, audience=4, sample=2,
                created_at=now - timedelta(minutes=2), started_at=now - timedelta(minutes=1),
            )
        )  # fmt: skip
        for seq in range(1, 5):
            contact, _ = repository.upsert_contact(s, f"b{seq}@example.com", consent_source="t")
            assert contact.id is not None
            variant = {1: "plain", 2: "personal"}.get(seq, "")
            s.add(BroadcastRecipient(send_id=SEND, seq=seq, contact_id=contact.id, variant=variant))
            message_id = f"bf-{seq}"
            outbox.reserve_message(
                s,
                Message(
                    id=message_id, key=f"{SEND}:{contact.id}", contact_id=contact.id,
                    campaign_id="broadcast:black-friday", campaign_version="1",
                    step_id=variant or "plain", workflow_id=SEND, template="black-friday",
                    open_token=f"o-{message_id}",
                ),
            )  # fmt: skip
            if seq < 4:
                assert outbox.begin_send(s, message_id)
                outbox.finish_send(s, message_id, MessageState.sent)
            for kind in ("open", "click") if seq == 1 else ("open",) if seq == 3 else ():
                repository.record_event(
                    s, contact_id=contact.id, type=kind, dedupe_key=f"{kind}:{message_id}",
                    message_id=message_id,
                )  # fmt: skip


@pytest.fixture
def down(settings: Settings) -> Settings:
    """Temporal nowhere: a control must change nothing and say so."""
    return settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})


def _figure(html: str, name: str) -> str:
    found = re.search(rf'data-figure="{name}">([^<]*)<', html)
    assert found, f"no {name} on the page"
    return found.group(1)


async def test_marketers_and_admins_see_the_figures_sales_do_not(
    down: Settings, engine: Engine, tmp_path: Path
) -> None:
    _world(engine)
    make_user(engine, "mia@example.com", "marketer")
    make_user(engine, "ops@example.com", "admin")
    make_user(engine, "sam@example.com", "sales")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(down, workspace, engine) as http:
        for email in ("mia@example.com", "ops@example.com"):
            http.cookies.clear()
            await sign_in(http, email)
            listed = await http.get(LIST)
            assert listed.status_code == 200
            assert f'href="{LIST}" aria-current="page"' in listed.text  # in the navigation
            row = listed.text.split('data-broadcast="black-friday"')[1].split("</tr>")[0]
            assert (_figure(row, "state"), _figure(row, "audience")) == ("sending", "4")
            assert (_figure(row, "sent"), _figure(row, "opened")) == ("3", "2")
            assert _figure(row, "open_rate") == "66.7%"
            never = listed.text.split('data-broadcast="newsletter-december"')[1]
            assert _figure(never, "state") == "not sent yet"

            page = await http.get(PAGE)
            assert page.status_code == 200
            html = page.text
            assert (_figure(html, "state"), _figure(html, "sent")) == ("sending", "3")
            assert (_figure(html, "done"), _figure(html, "audience")) == ("3", "4")
            assert 'data-state="pending">1<' in html and 'data-state="sent">3<' in html
            assert (_figure(html, "delivered"), _figure(html, "opened")) == ("3", "2")
            assert (_figure(html, "clicked"), _figure(html, "click_rate")) == ("1", "33.3%")
            ab = html.split("data-ab")[1]
            plain = ab.split('data-variant="plain"')[1].split("</tr>")[0]
            personal = ab.split('data-variant="personal"')[1].split("</tr>")[0]
            assert (_figure(plain, "sent"), _figure(plain, "rate")) == ("1", "100.0%")
            assert (_figure(personal, "sent"), _figure(personal, "rate")) == ("1", "0.0%")
            assert _figure(personal, "uplift") == "\u2013"  # no uplift over a zero rate
            assert "two-sided two-proportion z-test" in html
            assert 'data-hour="0"' in html  # the hourly table under the chart
            # live: the progress section asks for itself again
            assert 'hx-get="/dashboard/broadcasts/black-friday/progress?send=1"' in html
            assert ">Pause</button>" in html and ">Cancel send</button>" in html
            fragment = await http.get(f"{PAGE}/progress?send=1")
            assert fragment.status_code == 200
            assert fragment.text.lstrip().startswith('<section id="progress"')
            assert "<html" not in fragment.text

        http.cookies.clear()
        await sign_in(http, "sam@example.com")
        for path in (LIST, PAGE, f"{PAGE}/progress"):
            refused = await http.get(path)
            assert refused.status_code == 403 and "Not for your role" in refused.text
        home = await http.get("/dashboard/leads")
        assert f'href="{LIST}"' not in home.text  # not in a sales user's navigation


async def test_a_finished_send_stops_polling_and_offers_no_control(
    down: Settings, engine: Engine, tmp_path: Path
) -> None:
    _world(engine, SendState.completed)
    make_user(engine, "mia@example.com", "marketer")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(down, workspace, engine) as http:
        await sign_in(http, "mia@example.com")
        page = await http.get(PAGE)
        assert page.status_code == 200 and _figure(page.text, "state") == "completed"
        assert "hx-trigger" not in page.text
        assert "/pause" not in page.text and "/cancel" not in page.text
        fragment = await http.get(f"{PAGE}/progress")
        assert "hx-trigger" not in fragment.text  # the last poll ends the polling


async def test_unknown_broadcasts_and_sends_are_404_pages_bad_numbers_4xx(
    down: Settings, engine: Engine, tmp_path: Path
) -> None:
    _world(engine)
    make_user(engine, "mia@example.com", "marketer")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(down, workspace, engine) as http:
        await sign_in(http, "mia@example.com")
        for path in ("/dashboard/broadcasts/nope", f"{PAGE}?send=2", f"{PAGE}/progress?send=7"):
            missing = await http.get(path)
            assert missing.status_code == 404 and "No such broadcast" in missing.text
        never = await http.get("/dashboard/broadcasts/newsletter-december")
        assert never.status_code == 200 and "Not sent yet" in never.text
        for bad in ("abc", "0", "-1", "99999999999"):
            answer = await http.get(f"{PAGE}?send={bad}")
            assert answer.status_code == 422, bad
        csrf = form_csrf((await http.get(PAGE)).text)
        odd = await http.post(f"{PAGE}/explode", data={"csrf_token": csrf})
        assert 400 <= odd.status_code < 500


async def test_controls_need_the_csrf_token_and_a_role_that_may_act(
    down: Settings, engine: Engine, tmp_path: Path
) -> None:
    _world(engine)
    make_user(engine, "mia@example.com", "marketer")
    make_user(engine, "sam@example.com", "sales")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(down, workspace, engine) as http:
        await sign_in(http, "sam@example.com")
        sales_csrf = form_csrf((await http.get("/dashboard/leads")).text)
        for action in ("pause", "resume", "cancel"):
            refused = await http.post(f"{PAGE}/{action}", data={"csrf_token": sales_csrf})
            assert refused.status_code == 403 and "Not for your role" in refused.text

        http.cookies.clear()
        await sign_in(http, "mia@example.com")
        csrf = form_csrf((await http.get(PAGE)).text)
        for action in ("pause", "resume", "cancel"):
            for data in ({}, {"csrf_token": "forged"}, {"csrf_token": sales_csrf}):
                refused = await http.post(f"{PAGE}/{action}", data=data)
                assert refused.status_code == 403 and "Form expired" in refused.text
        away = await http.post(f"{PAGE}/pause", data={"csrf_token": csrf})
        assert away.status_code == 503
        assert "cannot be reached" in away.text and "Nothing was changed" in away.text
        assert _figure(away.text, "state") == "sending"
    with session_scope(engine) as s:
        send = s.get(BroadcastSend, SEND)
        assert send is not None and send.state == SendState.sending


def test_time_to_go_reads_as_people_say_it() -> None:
    assert [duration(x) for x in (None, 0.4, 59, 61, 3599, 3600, 3 * 3600 + 5 * 60)] == [
        "", "0 s", "59 s", "1 min", "1 h 0 min", "1 h 0 min", "3 h 5 min",
    ]  # fmt: skip


async def test_not_signed_in_goes_to_the_sign_in_page(
    down: Settings, engine: Engine, tmp_path: Path
) -> None:
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(down, workspace, engine) as http:
        answer = await http.get(PAGE)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/dashboard/login?next={PAGE}"
        polled = await http.get(f"{PAGE}/progress", headers={"HX-Request": "true"})
        assert polled.headers.get("HX-Redirect", "").startswith("/dashboard/login")


async def test_a_refused_control_says_why_with_a_409(
    settings: Settings, engine: Engine, tmp_path: Path, time_env: WorkflowEnvironment
) -> None:
    """Temporal is there (no worker needed): the client API refuses, the page says why."""
    _world(engine)  # "sending" in the database, but no workflow of it runs
    make_user(engine, "mia@example.com", "marketer")
    workspace = load_workspace(copy_workspace(tmp_path))
    async with api_client(settings, workspace, engine, temporal=time_env.client) as http:
        await sign_in(http, "mia@example.com")
        csrf = form_csrf((await http.get(PAGE)).text)
        not_paused = await http.post(f"{PAGE}/resume", data={"csrf_token": csrf})
        assert not_paused.status_code == 409
        assert "is not paused" in not_paused.text and 'role="alert"' in not_paused.text
        gone = await http.post(f"{PAGE}/cancel", data={"csrf_token": csrf})
        assert gone.status_code == 409 and f"send {SEND} is not running" in gone.text
        with session_scope(engine) as s:
            send = s.get(BroadcastSend, SEND)
            assert send is not None
            send.state = SendState.completed
            s.add(send)
        over = await http.post(f"{PAGE}/pause", data={"csrf_token": csrf})
        assert over.status_code == 409 and "is not being sent (completed)" in over.text
