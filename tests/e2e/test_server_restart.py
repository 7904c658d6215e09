"""Restarting the Temporal dev server loses no journey, no timer, no signal and no email.

The dev server runs as ``drip dev`` runs it (``drip._temporal.TemporalDevServer``: a SQLite file,
WAL, SIGTERM to stop), and is started again on the same file and port. Nothing else is restarted:
the worker and the API keep their Temporal clients and must reconnect by themselves.

Five contacts subscribe; one opens before the restart and reaches a two-second ``wait`` whose
deadline passes while the server is down, the rest are parked on a ``wait_for`` whose timeout
falls after the restart. Afterwards the expired timer fires late, the parked timeouts fire on
time, an open sent after the restart takes its journey to the tips, and the SMTP server has
received each expected email exactly once. A second test hits the pixel while the server is
down: the open is kept, and the sweep of ``drip worker`` hands it to the journey once it is back.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio.client import Client

from campaigns.workspace import load_workspace
from contacts import repository
from contacts.db import session_scope
from contacts.models import Enrolment, EnrolmentState, Event, Message, MessageState
from drip._temporal import TemporalDevServer
from drip.settings import Settings
from tests.e2e.conftest import WorkerProcess
from tests.support import (
    SmtpServer,
    api_client,
    copy_workspace,
    free_port,
    running_stack,
    venv_binary,
)
from workflows.client import journey_state, journey_workflow_id

pytestmark = pytest.mark.e2e

#: Seconds the parked journeys wait for an open. It must outlast the outage plus the restart
#: (a few seconds), so that the open sent after the restart still finds its journey waiting.
OPEN_TIMEOUT = 15
#: Seconds the early opener lingers after its tips: shorter than the outage, so this timer's
#: deadline passes while the server is down and it must fire once the server is back.
LINGER = 2


def _drill(open_timeout: int) -> str:
    return f"""\
id: drill
name: Restart drill
trigger:
  form: newsletter
steps:
  - id: hello
    send_email: {{template: welcome, subject: "Hello {{{{ contact.first_name }}}}"}}
  - id: wait_for_open
    wait_for: {{open: hello, timeout: {open_timeout}s, on_event: tips, on_timeout: reminder}}
  - id: tips
    send_email: {{template: tips, subject: "Tips for {{{{ contact.first_name }}}}"}}
  - id: linger
    wait: {{duration: {LINGER}s}}
  - id: thanks
    send_email: {{template: tips, subject: "Thanks, {{{{ contact.first_name }}}}"}}
    next: done
  - id: reminder
    send_email: {{template: welcome-reminder, subject: "Reminder for {{{{ contact.first_name }}}}"}}
    next: done
  - id: done
    exit:
"""


EARLY = "bea"  # opens before the restart
LATE = "ann"  # opens after the restart
SILENT = ["cy", "dee", "eli"]  # never open
NAMES = [LATE, EARLY, *SILENT]


def _address(name: str) -> str:
    return f"{name}@example.com"


def _expected() -> Counter[tuple[str, str]]:
    """(recipient, subject) -> 1 for every email the journeys must send, and nothing else."""
    want: Counter[tuple[str, str]] = Counter()
    for name in NAMES:
        first = name.capitalize()
        want[(_address(name), f"Hello {first}")] += 1
        if name in (EARLY, LATE):
            want[(_address(name), f"Tips for {first}")] += 1
            want[(_address(name), f"Thanks, {first}")] += 1
        else:
            want[(_address(name), f"Reminder for {first}")] += 1
    return want


def _drill_workspace(tmp_path: Path, open_timeout: int = OPEN_TIMEOUT) -> Path:
    """The demo workspace with the drill as its only newsletter campaign."""
    root = copy_workspace(tmp_path)
    (root / "campaigns" / "welcome.yaml").unlink()
    (root / "campaigns" / "drill.yaml").write_text(_drill(open_timeout))
    return root


@pytest.fixture
async def server(settings: Settings, tmp_path: Path) -> AsyncIterator[TemporalDevServer]:
    """``temporal server start-dev`` exactly as ``drip dev`` starts it, on free ports and a
    SQLite file of this test's own."""
    settings.home.mkdir(parents=True, exist_ok=True)
    ours = settings.model_copy(
        update={
            "temporal_address": f"127.0.0.1:{free_port()}",
            "temporal_ui_port": free_port(),
        }
    )
    dev = TemporalDevServer(ours, venv_binary("temporal"))
    await dev.start()
    try:
        await dev.wait_ready()
        yield dev
    finally:
        await dev.stop()


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _open(http: httpx.AsyncClient, smtp: SmtpServer, name: str) -> None:
    """Open the hello email as a mail client would: GET the pixel found in its HTML."""
    [hello] = [m for m in smtp.mailbox.to(_address(name)) if m.subject.startswith("Hello")]
    pixel = re.search(r'src="http://testserver(/t/o/[A-Za-z0-9_-]+\.gif)"', hello.html())
    assert pixel is not None, "no open pixel in the hello email"
    hit = await http.get(pixel.group(1))
    assert hit.status_code == 200 and hit.headers["content-type"] == "image/gif"


def _open_recorded(engine: Engine, name: str) -> bool:
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, _address(name))
        assert contact is not None
        opens = select(Event).where(Event.contact_id == contact.id, Event.type == "open")
        return s.exec(opens).first() is not None


def _open_routed(engine: Engine, name: str) -> bool:
    """The contact's one open has been handed to its journey (``routed_at`` is set)."""
    with session_scope(engine) as s:
        contact = repository.get_contact_by_email(s, _address(name))
        assert contact is not None
        opens = s.exec(
            select(Event).where(Event.contact_id == contact.id, Event.type == "open")
        ).all()
    return len(opens) == 1 and opens[0].routed_at is not None


async def test_journeys_survive_a_temporal_server_restart(
    server: TemporalDevServer,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"temporal_address": server.settings.temporal_address})
    workspace = load_workspace(_drill_workspace(tmp_path))
    client = await Client.connect(settings.temporal_address)
    async with running_stack(client, settings, engine, workspace) as http:
        for name in NAMES:
            r = await http.post(
                "/forms/newsletter",
                json={"email": _address(name), "first_name": name.capitalize(), "consent": True},
            )
            assert r.status_code == 202, r.text
        ids: dict[str, str] = {}
        with session_scope(engine) as s:
            for name in NAMES:
                contact = repository.get_contact_by_email(s, _address(name))
                assert contact is not None and contact.id is not None
                ids[name] = journey_workflow_id("drill", contact.id)
        await smtp.mailbox.wait_for(lambda m: len(m.messages) == len(NAMES), within=30)

        # Before the restart: the early opener reaches its short timer, the others their wait.
        await _open(http, smtp, EARLY)
        # the API stores the hit; its consumer routes the open a flush interval later
        await _eventually(
            lambda: asyncio.to_thread(_open_routed, engine, EARLY), "the open routed", within=10
        )

        async def parked() -> bool:
            steps = {n: (await journey_state(client, ids[n])).current_step for n in NAMES}
            want = {n: "linger" if n == EARLY else "wait_for_open" for n in NAMES}
            return steps == want

        await _eventually(parked, "every journey to park on its timer", within=30)
        parked_at = time.monotonic()
        assert len(smtp.mailbox.messages) == len(NAMES) + 1  # the hellos and the early tips

        # The outage: SIGTERM, then keep the server down until the linger timer has expired.
        await server.stop()
        assert server.returncode is not None
        await asyncio.sleep(max(0.0, LINGER + 1 - (time.monotonic() - parked_at)))
        mail_during_outage = len(smtp.mailbox.messages)
        await server.start()  # same SQLite file, same port
        await server.wait_ready()
        restarted_after = time.monotonic() - parked_at
        assert restarted_after < OPEN_TIMEOUT - 5, f"the restart took {restarted_after:.1f} s"

        # After the restart: the late opener's signal goes through the API's old client.
        async def late_opener_still_waits() -> bool:
            return (await journey_state(client, ids[LATE])).current_step == "wait_for_open"

        await _eventually(late_opener_still_waits, "the worker to answer again", within=10)
        await _open(http, smtp, LATE)
        await _eventually(
            lambda: asyncio.to_thread(_open_routed, engine, LATE), "the open routed", within=10
        )

        for name in NAMES:
            result = await asyncio.wait_for(
                client.get_workflow_handle(ids[name]).result(), timeout=OPEN_TIMEOUT + 15
            )
            opened = name in (EARLY, LATE)
            path = ["tips", "linger", "thanks"] if opened else ["reminder"]
            assert result["visited"] == ["hello", "wait_for_open", *path, "done"], name

    assert mail_during_outage == len(NAMES) + 1
    received = Counter((r, m.subject) for m in smtp.mailbox.messages for r in m.recipients)
    assert received == _expected()
    with session_scope(engine) as s:
        messages = s.exec(select(Message)).all()
        enrolments = s.exec(select(Enrolment)).all()
    assert len(messages) == sum(_expected().values())
    assert all(m.state == MessageState.sent and m.attempts == 1 for m in messages)
    assert sorted(e.workflow_id for e in enrolments) == sorted(ids.values())
    assert all(e.state == EnrolmentState.completed for e in enrolments)


async def test_an_open_while_the_server_is_down_is_routed_by_the_worker_sweep(
    server: TemporalDevServer,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """The pixel is hit while Temporal is down: the GIF is served, the open is kept, and once the
    server is back the sweep of ``drip worker`` (its own process, which lives through the
    restart) hands it to the journey, which then takes the tips branch."""
    settings = settings.model_copy(
        update={
            "temporal_address": server.settings.temporal_address,
            # outlasts the outage, the signal's failing retries (up to 10 s) and a sweep round
            "workspace": _drill_workspace(tmp_path, open_timeout=60),
        }
    )
    client = await Client.connect(settings.temporal_address)
    worker = WorkerProcess(settings, settings.temporal_address, tmp_path / "worker.log")
    worker.start()
    try:
        async with api_client(settings, load_workspace(settings.workspace), engine, client) as http:
            r = await http.post(
                "/forms/newsletter",
                json={"email": _address(LATE), "first_name": "Ann", "consent": True},
            )
            assert r.status_code == 202, r.text
            with session_scope(engine) as s:
                contact = repository.get_contact_by_email(s, _address(LATE))
                assert contact is not None and contact.id is not None
                workflow_id = journey_workflow_id("drill", contact.id)
            await smtp.mailbox.wait_for(lambda m: len(m.messages) == 1, within=60)

            async def parked() -> bool:
                state = await journey_state(client, workflow_id)
                return state.current_step == "wait_for_open"

            await _eventually(parked, "the journey to wait for the open", within=30)

            await server.stop()
            await _open(http, smtp, LATE)  # answers with the GIF although it cannot route
            # the hit is stored and becomes an open event a flush later, still unrouted
            await _eventually(
                lambda: asyncio.to_thread(_open_recorded, engine, LATE), "the open", within=10
            )
            assert not _open_routed(engine, LATE)
            await server.start()
            await server.wait_ready()

            result = await asyncio.wait_for(
                client.get_workflow_handle(workflow_id).result(), timeout=45
            )
        assert result["visited"] == ["hello", "wait_for_open", "tips", "linger", "thanks", "done"]
        assert _open_routed(engine, LATE)
    finally:
        worker.stop()
    received = Counter((r, m.subject) for m in smtp.mailbox.messages for r in m.recipients)
    assert received == Counter(
        {(_address(LATE), subject): 1 for subject in ["Hello Ann", "Tips for Ann", "Thanks, Ann"]}
    )
