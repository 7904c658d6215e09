"""The transactional API's body cap follows its attachments cap, not the general one.

``DRIP_MAX_BODY_BYTES`` (1 MB) caps every request in the outermost middleware; attachments
arrive as base64 in the JSON of ``POST /api/messages``, so under that cap nothing over about
750 KB could be attached, whatever ``DRIP_TX_ATTACHMENTS_MAX_BYTES`` (10 MB) says. The
transactional paths get ``transactional_body_limit`` instead; every other route keeps the
general cap. The real API in-process, a real worker on Temporal's time-skipping server, real
SMTP (aiosmtpd) and SQLite.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from campaigns.workspace import Workspace, load_workspace
from contacts.db import session_scope
from contacts.models import Message
from drip.settings import Settings
from tests.support import SmtpServer, api_client, copy_workspace, running_stack
from tests.webhooks._admin import make_key
from tests.webhooks.test_admin_tx import ANN, RECEIPT, _receipt
from webhooks.middleware import transactional_body_limit
from webhooks.problems import PROBLEM_JSON


@pytest.fixture
def tx_workspace(tmp_path: Path) -> Workspace:
    root = copy_workspace(tmp_path)
    (root / "emails" / "receipt.mjml").write_text(RECEIPT)
    return load_workspace(root)


async def _sent(engine: Engine, message_id: str, within: float = 60) -> Message:
    deadline = time.monotonic() + within
    while True:
        with session_scope(engine) as s:
            row = s.get(Message, message_id)
            if row is not None and row.state not in ("pending", "sending"):
                return row
        assert time.monotonic() < deadline, f"message {message_id} still not sent"
        await asyncio.sleep(0.1)  # polling the outbox row, not timing the test


def test_the_transactional_cap_holds_the_attachments_cap_in_base64_and_the_rest() -> None:
    limit = transactional_body_limit(1_000_000, 10_000_000)
    assert limit >= 1_000_000 + len(base64.b64encode(b"x" * 10_000_000))
    assert limit == 1_000_000 + 13_333_336


async def test_a_3_mb_attachment_is_sent_intact(
    time_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    tx_workspace: Workspace,
    smtp: SmtpServer,
) -> None:
    pdf = os.urandom(3_000_000)
    body = _receipt(
        attachments=[
            {
                "filename": "invoice.pdf",
                "content_type": "application/pdf",
                "content": base64.b64encode(pdf).decode(),
            }
        ],
        track=False,
    )
    async with running_stack(time_env.client, settings, engine, tx_workspace) as http:
        r = await http.post("/api/messages", json=body, headers=make_key(engine, "send"))
        assert r.status_code == 202, r.text[:500]
        row = await _sent(engine, r.json()["id"])
        assert (row.state, row.error) == ("sent", None)
    await smtp.mailbox.wait_for(lambda m: len(m.to(ANN)) == 1)
    [email] = smtp.mailbox.to(ANN)
    [part] = email.message.iter_attachments()
    got = part.get_content()
    assert part.get_filename() == "invoice.pdf"
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(pdf).hexdigest()


async def test_other_routes_keep_the_general_cap_and_the_tx_cap_is_a_413_too(
    settings: Settings,
    engine: Engine,
    tx_workspace: Workspace,
) -> None:
    async with api_client(settings, tx_workspace, engine) as http:
        big = {"email": "bo@example.com", "fields": {"note": "x" * 2_000_000}}
        r = await http.post("/api/contacts", json=big, headers=make_key(engine))
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON
        assert f"limited to {settings.max_body_bytes} bytes" in r.json()["detail"]

        # past the transactional cap itself: still a 413 problem, never a 500
        small = settings.model_copy(update={"tx_attachments_max_bytes": 300_000})
    async with api_client(small, tx_workspace, engine) as http:
        limit = transactional_body_limit(small.max_body_bytes, 300_000)
        content = base64.b64encode(b"x" * (limit // 4 * 3 + 3)).decode()
        files = [{"filename": "big.bin", "content": content}]
        r = await http.post(
            "/api/messages", json=_receipt(attachments=files), headers=make_key(engine, "send")
        )
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM_JSON
        assert f"limited to {limit} bytes" in r.json()["detail"]
