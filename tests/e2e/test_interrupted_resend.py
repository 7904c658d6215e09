"""An email cut off mid-SMTP by a killed worker is marked ``interrupted``, listed
(``drip messages interrupted``), counted (``/metrics``), shown on the dashboard, and resent on an
admin's confirmed decision exactly once more; a second resend is refused, and a resend that is
itself cut off mid-SMTP ends ``failed`` and is never sent a third time.

Real pieces only: the Temporal dev server, ``drip worker`` as a process killed with SIGKILL
while the aiosmtpd relay holds its reply to DATA (the relay has the message, the worker never
hears so), the API in-process, and the ``drip`` executable.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.interrupted import RESEND_INTERRUPTED
from contacts.models import Event, Message, MessageState
from drip.settings import Settings
from tests.dashboard.support import form_csrf, make_user, sign_in
from tests.e2e.conftest import WorkerProcess, temporal_target
from tests.support import SmtpServer, api_client, copy_workspace, venv_binary
from workflows.client import journey_workflow_id

pytestmark = pytest.mark.e2e

WELCOME = "Welcome to Acme Outdoor, Kim"
KIM = "kim@example.com"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


async def _drip(settings: Settings, env: WorkflowEnvironment, *args: str) -> Run:
    """The ``drip`` command, without blocking the loop the API shares with this test."""
    process = await asyncio.create_subprocess_exec(
        venv_binary("drip"),
        *args,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
            "DRIP_HOME": str(settings.home),
            "DRIP_WORKSPACE": str(settings.workspace),
            "DRIP_DATABASE_URL": settings.database_url,
            "DRIP_TEMPORAL_ADDRESS": temporal_target(env),
            "DRIP_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
            "COLUMNS": "250",
        },
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def _settings(settings: Settings, tmp_path: Path) -> Settings:
    root = copy_workspace(tmp_path, {"timeout: 2d": "timeout: 4s"})
    return settings.model_copy(update={"workspace": root})


def _welcome(engine: Engine) -> Message:
    with session_scope(engine) as s:
        return s.exec(select(Message).where(Message.step_id == "welcome")).one()


async def _until(check: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def _interrupt_the_welcome(
    settings: Settings,
    engine: Engine,
    env: WorkflowEnvironment,
    smtp: SmtpServer,
    worker: WorkerProcess,
) -> Message:
    """Kim signs up; the worker is killed while the relay holds its reply to the welcome's
    DATA (the relay keeps the message); a new worker finishes the journey without resending."""
    smtp.mailbox.delay = 3.0
    worker.start()
    async with api_client(settings, load_workspace(settings.workspace), engine, env.client) as http:
        r = await http.post(
            "/forms/newsletter", json={"email": KIM, "first_name": "Kim", "consent": True}
        )
        assert r.status_code == 202
    with session_scope(engine) as s:
        kim = repository.get_contact_by_email(s, KIM)
        assert kim is not None and kim.id is not None
    await smtp.mailbox.wait_for(lambda m: m.data_started == 1, within=60)
    worker.kill()
    smtp.mailbox.delay = 0.0
    worker.start()
    await env.client.get_workflow_handle(journey_workflow_id("welcome", kim.id)).result()
    welcome = _welcome(engine)
    assert welcome.state == MessageState.interrupted
    assert smtp.mailbox.subjects().count(WELCOME) == 1
    return welcome


async def _gauge(http: httpx.AsyncClient) -> str:
    r = await http.get("/metrics")
    assert r.status_code == 200
    [line] = [x for x in r.text.splitlines() if x.startswith("drip_messages_interrupted ")]
    return line.split()[1]


async def test_an_interrupted_email_is_listed_counted_shown_and_resent_once(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = _settings(settings, tmp_path)
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    try:
        welcome = await _interrupt_the_welcome(settings, engine, dev_env, smtp, worker)

        listed = await _drip(settings, dev_env, "messages", "interrupted")
        assert listed.returncode == 0, listed.stderr
        assert welcome.id in listed.stdout
        assert KIM in listed.stdout
        assert "welcome / welcome" in listed.stdout
        assert "1 interrupted email:" in listed.stdout
        other = await _drip(settings, dev_env, "messages", "interrupted", "--campaign", "nope")
        assert "No interrupted emails" in other.stdout

        workspace = load_workspace(settings.workspace)
        async with api_client(settings, workspace, engine, dev_env.client) as http:
            assert await _gauge(http) == "1.0"
            make_user(engine, "ops@example.com", "admin")
            make_user(engine, "mia@example.com", "marketer")
            assert (await sign_in(http, "ops@example.com")).status_code == 303
            page = await http.get("/dashboard/admin/delivery")
            assert page.status_code == 200
            assert 'data-figure="interrupted">1<' in page.text
            assert f'data-message="{welcome.id}"' in page.text
            # the first POST only asks, stating the risk; nothing is sent yet
            ask = await http.post(
                "/dashboard/admin/delivery/resend",
                data={"csrf_token": form_csrf(page.text), "message_id": welcome.id},
            )
            assert ask.status_code == 200
            assert "may receive this email twice" in ask.text
            assert smtp.mailbox.subjects().count(WELCOME) == 1
            # without the session's CSRF token: refused, nothing sent
            forged = await http.post(
                "/dashboard/admin/delivery/resend",
                data={"csrf_token": "forged", "message_id": welcome.id, "confirmed": "yes"},
            )
            assert forged.status_code == 403
            done = await http.post(
                "/dashboard/admin/delivery/resend",
                data={
                    "csrf_token": form_csrf(ask.text),
                    "message_id": welcome.id,
                    "confirmed": "yes",
                },
            )
            assert done.status_code == 200
            assert f'data-resent="{welcome.id}" data-state="sent"' in done.text
            assert 'data-figure="interrupted">0<' in done.text
            assert await _gauge(http) == "0.0"
            # a marketer may not see the page, let alone resend
            http.cookies.clear()
            assert (await sign_in(http, "mia@example.com")).status_code == 303
            assert (await http.get("/dashboard/admin/delivery")).status_code == 403

        again = await _drip(settings, dev_env, "messages", "resend", welcome.id, "--yes")
        assert again.returncode == 1
        assert "already resent by dashboard (ops@example.com)" in again.stderr
    finally:
        worker.stop()
    copies = smtp.mailbox.to(KIM)
    welcomes = [m for m in copies if m.subject == WELCOME]
    assert len(welcomes) == 2  # the one the relay kept when the worker died, and the resend
    assert welcomes[0].message["Message-ID"] == welcomes[1].message["Message-ID"]
    row = _welcome(engine)
    assert (row.state, row.error, row.resent_by) == (
        MessageState.sent,
        None,
        "dashboard (ops@example.com)",
    )
    assert row.resent_at is not None and row.sent_at is not None
    with session_scope(engine) as s:
        [event] = s.exec(select(Event).where(Event.type == "resent")).all()
    assert (event.message_id, event.source) == (welcome.id, "dashboard (ops@example.com)")
    assert event.routed_at is not None  # an audit record, not something journeys react to


async def test_a_resend_cut_off_mid_smtp_is_not_sent_a_third_time(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = _settings(settings, tmp_path)
    worker = WorkerProcess(settings, temporal_target(dev_env), tmp_path / "worker.log")
    try:
        welcome = await _interrupt_the_welcome(settings, engine, dev_env, smtp, worker)
        sent_before = smtp.mailbox.data_started
        refused = await _drip(settings, dev_env, "messages", "resend", welcome.id)
        assert refused.returncode == 1  # no --yes and no one to answer: aborted
        assert "may receive this email twice" in refused.stderr
        assert _welcome(engine).resent_at is None
        smtp.mailbox.delay = 3.0
        # the command waits 0 s: it leaves the resend queued with the worker and says so
        queued = await _drip(
            settings, dev_env, "messages", "resend", welcome.id, "--yes", "--wait", "0"
        )
        assert queued.returncode == 1
        assert f"{welcome.id} ({KIM}): queued" in queued.stdout
        await smtp.mailbox.wait_for(lambda m: m.data_started == sent_before + 1, within=60)
        worker.kill()  # mid-DATA of the resend: the relay has it, the worker never hears
        smtp.mailbox.delay = 0.0
        worker.start()
        await _until(
            lambda: _welcome(engine).state == MessageState.failed, "the resend's retry ended it"
        )
        once_more = await _drip(
            settings, dev_env, "messages", "resend", "--all-interrupted", "--yes"
        )
        assert once_more.returncode == 0
        assert "No interrupted emails to resend." in once_more.stdout
    finally:
        worker.stop()
    row = _welcome(engine)
    assert (row.state, row.error) == (MessageState.failed, RESEND_INTERRUPTED)
    assert row.resent_by is not None and row.resent_by.startswith("cli (")
    assert smtp.mailbox.subjects().count(WELCOME) == 2  # the first attempt and the one resend
