"""Helpers shared by the test suite: real SMTP capture, binaries from the venv, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine
from temporalio.client import Client

from campaigns.workspace import Workspace
from contacts import outbox, repository
from contacts.db import session_scope
from contacts.models import Event, Message, MessageState, utcnow
from drip.settings import Settings
from emails import open_token
from webhooks.main import create_app
from workflows.deploy import deploy_workspace
from workflows.router import EventRouter
from workflows.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "acme"
#: A desktop mail client's user agent, for requests that stand for a person reading an email.
MAIL_CLIENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"


def venv_binary(name: str) -> str:
    """A console script from this interpreter's venv, even when the venv is not on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed; run `make test`, which installs it")
    return found


@asynccontextmanager
async def api_client(
    settings: Settings, workspace: Workspace, engine: Engine, temporal: Client | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process (no socket), as ``http://testserver``, with the workspace deployed."""
    deploy_workspace(engine, workspace)
    app = create_app(settings, workspace, engine=engine, temporal=temporal)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        # a person's mail client: httpx's own agent is, rightly, a bot to the tracking filter
        headers={"user-agent": MAIL_CLIENT},
    ) as client:
        yield client


@asynccontextmanager
async def running_stack(
    temporal: Client, settings: Settings, engine: Engine, workspace: Workspace
) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a journey worker on the same Temporal, with the worker's event sweep (as
    ``drip worker`` runs it): what a contact's journey needs. The sweep routes what the API
    left unrouted, e.g. an event whose routing overran the request's budget on a busy machine."""
    router = EventRouter(
        client=temporal,
        engine=engine,
        settings=settings,
        default_timezone=workspace.config.timezone,
        sales=workspace.sales,
    )
    async with (
        build_worker(temporal, settings=settings, engine=engine, workspace=workspace),
        api_client(settings, workspace, engine, temporal) as http,
    ):
        sweep = asyncio.create_task(router.sweep_forever(interval=1.0))
        try:
            yield http
        finally:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep


async def tracked_and_routed(engine: Engine, kind: str = "open", within: float = 15.0) -> None:
    """Wait until a pixel or click hit has become a routed ``kind`` event: the API stores a hit
    and answers at once, and its consumer records and routes it a moment later (a flush
    interval). Tests that skip time must wait for this, as a person's open takes that moment."""
    deadline = time.monotonic() + within
    while True:
        with session_scope(engine) as s:
            events = s.exec(sa.select(Event.routed_at).where(Event.type == kind)).all()
        if events and all(routed is not None for (routed,) in events):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no routed {kind} event within {within} s")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None, "no HTML part"
        return str(part.get_content())  # type: ignore[attr-defined]

    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None, "no text part"
        return str(part.get_content())  # type: ignore[attr-defined]


def with_pipelining(responses: list[str]) -> list[str]:
    """aiosmtpd's EHLO reply lines (for a ``handle_EHLO`` hook) with ``250-PIPELINING`` added
    before the last one."""
    return [*responses[:-1], "250-PIPELINING", *responses[-1:]]


@dataclass
class Mailbox:
    """What a real aiosmtpd server received; tests count emails here, never in our tables."""

    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0
    data_started: int = 0
    #: recipient -> the SMTP reply refusing it at RCPT TO, e.g. "550 5.1.1 no such user"
    refuse: dict[str, str] = field(default_factory=dict)
    #: announce ESMTP PIPELINING (RFC 2920), as mainstream relays do; aiosmtpd does not by
    #: itself, though it answers pipelined commands in order
    pipelining: bool = False

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return with_pipelining(responses) if self.pipelining else responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # The server commits the message first and replies after ``delay``: a client that dies in
        # that gap has had its message delivered without learning so, the case where a naive
        # retry sends it twice.
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg, raw))  # type: ignore[arg-type]
            self.data_started += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [m.subject for m in self.messages]

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if address in m.recipients]

    async def wait_for(self, predicate: Callable[[Mailbox], bool], within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; mailbox has {self.subjects()}")
            await asyncio.sleep(0.05)


class SmtpServer:
    """An in-process aiosmtpd server on a free loopback port; stop and start it again (same
    port, same mailbox) to play a relay outage."""

    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        # a Controller cannot be restarted (its loop is closed), so each start gets a new one
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:  # a test may have stopped it already
            self.controller.stop()
            self.controller = None


def copy_workspace(
    dest: Path, replace: dict[str, str] | None = None, *, sales: bool = False
) -> Path:
    """A copy of the demo workspace, optionally with text replaced in the welcome campaign.
    Without its sales.yaml unless ``sales``: a test of journeys should not also be scoring
    leads and alerting sales people (tests/workflows/test_sales_e2e.py does that)."""
    target = dest / "acme"
    shutil.copytree(EXAMPLES, target)
    if not sales:
        (target / "sales.yaml").unlink()
    if replace:
        path = target / "campaigns" / "welcome.yaml"
        text = path.read_text()
        for old, new in replace.items():
            assert old in text, old
            text = text.replace(old, new)
        path.write_text(text)
    return target


def missing_system_tool(reason: str) -> NoReturn:
    """Skip a test whose Debian package is not installed, saying how to get it; in CI
    (``DRIP_REQUIRE_SYSTEM_TOOLS=1``, set by ``.ci/run``, which installs them) fail instead,
    because a skip there would hide a broken CI image."""
    if os.environ.get("DRIP_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(reason + ", and DRIP_REQUIRE_SYSTEM_TOOLS=1 (CI) forbids skipping")
    pytest.skip(reason)


def sent_message(engine: Engine, secret: bytes, email: str = "reader@example.com") -> str:
    """The open token of a welcome email sent to ``email`` five minutes ago: a pixel hit on it
    is stored (hits of unknown tokens are only counted) and is past the bot rule's gap."""
    message_id = str(uuid.uuid4())
    with session_scope(engine) as s:
        contact, _ = repository.upsert_contact(s, email=email, consent_source="test")
        assert contact.id is not None
        token = open_token(secret, message_id)
        outbox.reserve_message(
            s,
            Message(
                id=message_id,
                key=f"journey/welcome/{contact.id}/1/welcome",
                contact_id=contact.id,
                campaign_id="welcome",
                step_id="welcome",
                workflow_id=f"journey/welcome/{contact.id}/1",
                template="welcome",
                open_token=token,
                created_at=utcnow() - timedelta(minutes=5),
            ),
        )
        outbox.finish_send(s, message_id, MessageState.sent)
    return token


def run_drip(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``drip`` with ``args`` on the test's database and the example workspace,
    as an operator runs it (no other ``DRIP_*`` from the environment)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(settings.home),
        "DRIP_WORKSPACE": str(EXAMPLES),
        "DRIP_DATABASE_URL": settings.database_url,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [venv_binary("drip"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
