"""``drip broadcasts send|status|pause|resume|cancel`` as an operator runs them, against the
Temporal dev server, a broadcast worker in this process, and every email counted at a real
SMTP server. ``send`` with its progress bar and Ctrl-C run as the real ``drip`` executable;
the quick commands run in-process (in a thread, beside the worker's loop), which saves the
seconds each start of the executable costs on a loaded machine.

Pause and cancel are asked while no worker runs, so they take effect before the first batch
whatever the machine's speed: the test proves the commands' effect, not a race."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from campaigns.workspace import Workspace
from contacts.broadcast_models import SendState
from drip import cli, cli_broadcasts
from drip.settings import Settings, get_settings
from tests.drip._broadcasts import (
    AB,
    HELLO,
    SLOW,
    add_audience,
    broadcast_workspace,
    held_by_its_pause,
    wait_for_send,
)
from tests.support import SmtpServer, venv_binary
from workflows.worker import build_worker


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _env(settings: Settings, root: Path, env: WorkflowEnvironment) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DRIP_")},
        "DRIP_HOME": str(settings.home),
        "DRIP_WORKSPACE": str(root),
        "DRIP_DATABASE_URL": settings.database_url,
        "DRIP_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "DRIP_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }


async def _spawn(
    env: WorkflowEnvironment, settings: Settings, ws: Workspace, *args: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        venv_binary("drip"),
        "broadcasts",
        *args,
        env=_env(settings, ws.root, env),
        cwd=settings.home.parent,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _drip(env: WorkflowEnvironment, settings: Settings, ws: Workspace, *args: str) -> Run:
    """The executable, run without blocking the loop the worker shares with this test."""
    process = await _spawn(env, settings, ws, *args)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@pytest.fixture
def in_process(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    """The environment ``_cli`` runs the commands in: the executable's, for this process."""
    ws_root = tmp_path / "acme"
    for key in [k for k in os.environ if k.startswith("DRIP_")]:
        monkeypatch.delenv(key)
    for key, value in _env(settings, ws_root, dev_env).items():
        if key.startswith("DRIP_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(cli_broadcasts.console, "width", 200)
    monkeypatch.setattr(cli_broadcasts.err, "width", 200)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def _cli(*args: str) -> Run:
    """``drip broadcasts ARGS`` in this process, in a thread: the worker's loop keeps going."""
    result = await asyncio.to_thread(CliRunner().invoke, cli.app, ["broadcasts", *args])
    return Run(result.exit_code, result.stdout, result.stderr)


@asynccontextmanager
async def _worker(
    env: WorkflowEnvironment, settings: Settings, engine: Engine, ws: Workspace
) -> AsyncIterator[None]:
    async with build_worker(env.client, settings=settings, engine=engine, workspace=ws):
        yield


def _received(smtp: SmtpServer, subject_start: str) -> Counter[str]:
    return Counter(
        r
        for m in smtp.mailbox.messages
        if m.subject.startswith(subject_start)
        for r in m.recipients
    )


@pytest.mark.usefixtures("in_process")
async def test_send_to_completion_then_refused_and_status(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = broadcast_workspace(tmp_path, hello=HELLO, ab=AB)
    emails = add_audience(engine, 12)
    async with _worker(dev_env, settings, engine, ws):
        sent = await _drip(dev_env, settings, ws, "send", "hello", "--yes")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "started send #1 of hello broadcast:hello:1" in sent.stdout
        assert "completed: 12 sent, 1 suppressed, 0 failed" in sent.stdout, sent.stdout
        assert "  suppressed 1: contact is unsubscribed" in sent.stdout

        again = await _cli("send", "hello", "--yes")
        assert again.returncode == 1
        assert "broadcast 'hello' was sent already (send 1, 13 recipients)" in again.stderr
        assert "--again" in again.stderr

        status = await _cli("status", "hello")

        # an A/B test: the command follows the sample, then leaves the wait to Temporal
        tested = await _cli("send", "ab", "--yes")
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "the A/B test's sample is out; the winner is picked in 1h and sent to the rest" in (
            tested.stdout
        )
        ab_status = await _cli("status", "ab")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "Hello everyone (hello) send #1: completed  broadcast:hello:1"
    assert lines[1:4] == [
        "  audience 13, done 13, sent 12",
        "  emails by state: sent 12, suppressed 1",
        "  suppressed 1: contact is unsubscribed",
    ]
    assert lines[4].startswith("  rate ") and lines[4].endswith(" emails/s on average")
    assert lines[5].startswith("  started 20") and ", finished 20" in lines[5]
    assert lines[6].startswith("  opened 0 (0.0%), clicked 0 (0.0%)")
    ab_lines = ab_status.stdout.splitlines()
    assert ab_lines[0] == "Two subjects (ab) send #1: testing  broadcast:ab:1"
    sample = [line for line in ab_lines if line.startswith("  A/B test on opens, sample ")]
    assert sample and sample[0].endswith(": no winner yet"), ab_status.stdout
    variants = {
        line.split(":")[0].strip(): int(line.split("sent ")[1].split(",")[0])
        for line in ab_lines
        if line.startswith(("    plain: ", "    named: "))
    }
    assert set(variants) == {"plain", "named"}
    # the sample only, so far: every email that is not hello's is the test's
    tested = [m for m in smtp.mailbox.messages if not m.subject.startswith("Hello")]
    assert 0 < len(tested) == sum(variants.values()) < 14
    # exactly the audience, once each, each with their own subject
    assert _received(smtp, "Hello") == Counter(emails)
    subjects = {m.recipients[0]: m.subject for m in smtp.mailbox.messages}
    assert subjects["reader07@example.com"] == "Hello Reader07"


@pytest.mark.usefixtures("in_process")
async def test_ctrl_c_leaves_it_running_then_pause_resume_and_cancel(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    engine: Engine,
    smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    ws = broadcast_workspace(tmp_path, slow=SLOW)
    emails = add_audience(engine, 12)

    # no worker yet: the send waits in Temporal while the command follows it; Ctrl-C leaves it
    following = await _spawn(dev_env, settings, ws, "send", "slow", "--yes")
    assert following.stdout is not None
    head = b""
    while b"Ctrl-C leaves it running" not in head:
        line = await asyncio.wait_for(following.stdout.readline(), timeout=60)
        assert line, head.decode() + (await following.stderr.read()).decode()  # type: ignore[union-attr]
        head += line
    following.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(following.communicate(), timeout=30)
    out = (head + rest).decode()
    assert following.returncode == 0, out + err.decode()
    assert "left running: the send goes on in Temporal" in out
    assert "follow it with `drip broadcasts status slow`" in out

    paused = await _cli("pause", "slow")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("paused send #1 of slow: the batches in flight finish")
    twice = await _cli("pause", "slow")
    assert twice.returncode == 1
    assert "broadcast 'slow' is paused already" in twice.stderr

    async with _worker(dev_env, settings, engine, ws):
        # the worker takes the send, snapshots the audience and holds before the first batch
        await held_by_its_pause(dev_env.client, engine, "broadcast:slow:1")
        assert not smtp.mailbox.messages
        resumed = await _cli("resume", "slow")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout == "resumed send #1 of slow\n"
        await wait_for_send(engine, "broadcast:slow:1")
        assert _received(smtp, "Slowly") == Counter(emails)
        late = await _cli("resume", "slow")
        assert late.returncode == 1
        assert "broadcast 'slow' is not being sent (completed)" in late.stderr

    # a second send, on purpose, cancelled before any worker takes it: nobody gets it
    second = await _cli("send", "slow", "--again", "--detach", "--yes")
    assert second.returncode == 0, second.stderr
    assert "started send #2 of slow" in second.stdout
    cancelled = await _cli("cancel", "slow", "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("cancelled send #2 of slow")
    async with _worker(dev_env, settings, engine, ws):
        row = await wait_for_send(engine, "broadcast:slow:2")
        status = await _cli("status", "slow")
    assert row.state == SendState.cancelled
    assert status.stdout.startswith("Slow hello (slow) send #2: cancelled")
    assert "  note: cancelled by cli (" in status.stdout
    assert _received(smtp, "Slowly") == Counter(emails)  # still one each

    # its file removed, a sent broadcast is still listed (and its sends still controllable)
    (ws.root / "broadcasts" / "slow.yaml").unlink()
    listed = await _cli("list")
    assert listed.returncode == 0, listed.stderr
    [row_text] = [line for line in listed.stdout.splitlines() if "│ slow " in line]
    cells = [c.strip() for c in row_text.strip("│ ").split("│")]
    assert cells[1:3] == ["Slow hello (file removed)", "-"]
    assert cells[3].startswith("#2 20")
    assert cells[4:] == ["cancelled", "0", "13"]
